"""The snapshot stream of a :class:`~liferaft.runtime.commands.Replicated` object.

This module owns the bytes: writing a captured state lazily
(:class:`CapturedSnapshot`) and reading one back (:func:`read_snapshot`).
What the fields are, and which a class accepts, is ``Replicated``'s
business; it passes that in.  Version 1 (all lengths u64 little-endian)::

    "LRSM" | u8 version (1) | record* | u64 0
    record = u64 length | msgpack payload
    record 1:    {"type": type_name, "index": int, "leader_time": float, "fields": n}
    records 2..: [field_name, value]     (n of them)

A stream never holds more than one encoded field at a time.  A reader
validates everything (magic, version, type, every field, the end marker, no
trailing bytes) before anything is installed, and raises
:class:`~liferaft.runtime.statemachine.SnapshotFormatError` otherwise.

Versions.  ``_READERS`` maps the version byte to its reader; a new version
adds one there and keeps the old, whose bytes
``tests/runtime/golden/snapshot_v1.bin`` pins.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec

from .errors import ENCODE_ERRORS
from .statemachine import ChunkReader, SnapshotFormatError, rechunk

__all__ = [
    "SNAPSHOT_MAGIC",
    "SNAPSHOT_VERSION",
    "CapturedSnapshot",
    "FieldDecoder",
    "SnapshotHeader",
    "read_snapshot",
]

#: Version byte of the snapshot stream (after the ``"LRSM"`` magic).
SNAPSHOT_VERSION = 1
SNAPSHOT_MAGIC = b"LRSM"
_LEN = struct.Struct("<Q")
_RECORD_DECODER = msgspec.msgpack.Decoder(tuple[str, msgspec.Raw])

#: Given a field name, the decoder of its value; raises SnapshotFormatError
#: for a field the class does not accept.
FieldDecoder = Callable[[str], msgspec.msgpack.Decoder[Any]]


class SnapshotHeader(msgspec.Struct):
    """The first record: whose state, at which entry, and how many fields follow."""

    type: str
    index: int
    leader_time: float
    fields: int


class CapturedSnapshot:
    """A state captured on the loop, encoded lazily by :meth:`chunks`.

    ``captured`` shares its values with the live state, which therefore never
    mutates them in place (docs/statemachine.md, "Capture rules").
    """

    def __init__(self, header: SnapshotHeader, captured: dict[str, Any], chunk_size: int) -> None:
        self._header = header
        self._captured: dict[str, Any] | None = captured
        self._chunk_size = chunk_size

    def chunks(self) -> Iterator[bytes]:
        """Encode the capture one field at a time, regrouped into fixed-size chunks."""
        captured = self._captured
        if captured is None:
            raise RuntimeError("snapshot already released")
        return rechunk(self._pieces(captured), self._chunk_size)

    def _pieces(self, captured: dict[str, Any]) -> Iterator[bytes]:
        yield SNAPSHOT_MAGIC + bytes((SNAPSHOT_VERSION,))
        header = msgspec.msgpack.encode(self._header)
        yield _LEN.pack(len(header))
        yield header
        for name, value in captured.items():
            try:
                payload = msgspec.msgpack.encode((name, value))
            except ENCODE_ERRORS as e:
                raise TypeError(
                    f"{self._header.type}: state field {name!r} cannot be encoded ({e}); "
                    "declare __state__ or override snapshot_state()"
                ) from None
            yield _LEN.pack(len(payload))
            yield payload
        yield _LEN.pack(0)

    def release(self) -> None:
        """Drop the captured state."""
        self._captured = None


def read_snapshot(
    chunks: Iterable[bytes], *, type_name: str, field_decoder: FieldDecoder
) -> tuple[SnapshotHeader, dict[str, Any]]:
    """Read and validate a whole stream; return its header and decoded fields.

    ``type_name`` must match the header's (a ``Counter`` snapshot never
    restores into a ``ReplicatedDict``).  Raises SnapshotFormatError for
    anything wrong, before the caller has changed anything.
    """
    reader = ChunkReader(chunks)
    magic = reader.read_exact(len(SNAPSHOT_MAGIC) + 1)
    if magic[:-1] != SNAPSHOT_MAGIC:
        raise SnapshotFormatError("not a liferaft Replicated snapshot (bad magic)")
    read = _READERS.get(magic[-1])
    if read is None:
        raise SnapshotFormatError(
            f"unsupported snapshot version {magic[-1]} (this replica reads version "
            f"{SNAPSHOT_VERSION})"
        )
    return read(reader, type_name, field_decoder)


def _read_v1(
    reader: ChunkReader, type_name: str, field_decoder: FieldDecoder
) -> tuple[SnapshotHeader, dict[str, Any]]:
    try:
        header = msgspec.msgpack.decode(_read_record(reader), type=SnapshotHeader)
    except msgspec.DecodeError as e:
        raise SnapshotFormatError(f"bad snapshot header: {e}") from None
    if header.type != type_name:
        raise SnapshotFormatError(
            f"snapshot is of {header.type!r}, cannot restore it into {type_name!r}"
        )
    values: dict[str, Any] = {}
    for _ in range(header.fields):
        record = _read_record(reader)
        try:
            name, raw = _RECORD_DECODER.decode(record)
        except msgspec.DecodeError as e:
            raise SnapshotFormatError(f"bad snapshot record: {e}") from None
        if name in values:
            raise SnapshotFormatError(f"snapshot holds field {name!r} twice")
        decoder = field_decoder(name)
        try:
            values[name] = decoder.decode(raw)
        except msgspec.DecodeError as e:
            raise SnapshotFormatError(f"snapshot field {name!r}: {e}") from None
    if _LEN.unpack(reader.read_exact(_LEN.size))[0] != 0:
        raise SnapshotFormatError(f"snapshot has more records than its {header.fields} fields")
    if not reader.at_eof():
        raise SnapshotFormatError(f"trailing bytes after the snapshot at byte {reader.offset}")
    return header, values


def _read_record(reader: ChunkReader) -> bytes:
    (length,) = _LEN.unpack(reader.read_exact(_LEN.size))
    if length == 0:
        raise SnapshotFormatError(f"snapshot ends early, at byte {reader.offset}")
    return reader.read_exact(length)


# Readers by version byte.  A new version adds its reader here; an old one is
# never removed while snapshots that hold it may exist.
_READERS: dict[
    int, Callable[[ChunkReader, str, FieldDecoder], tuple[SnapshotHeader, dict[str, Any]]]
] = {1: _read_v1}
