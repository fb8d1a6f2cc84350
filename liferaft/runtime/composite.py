"""Several state machines on one node, each in its own section (PySyncObj's ``consumers``).

``Node(..., state_machine=[counter, locks, config])`` (or a mapping of
names to objects, or ``Composite(...)`` itself) runs every object on the
one Raft log.  Each object is a *section* with a name: a command entry
carries the name of the section that proposed it and is applied to that
object only, and a snapshot holds one named section per object.

Theory of operation
-------------------
:meth:`Composite.attach` gives each object a :class:`SectionProposer`: the
node, seen through a frame that wraps everything the object proposes with
its section name.  :meth:`Composite.apply` reads the frame and hands the
object's own bytes to that object alone; an entry naming a section this
node does not have raises :class:`UnknownSectionError` (the proposal fails,
nothing changes), never reaches another object.

An entry (frame version 1)::

    offset 0    8 bytes  time slot: the object's data[0:8] when it proposed with
                         stamp_time=True (the leader overwrites it in entry
                         format 1, docs/statemachine.md), else zeros
    offset 8    "LRCE"   magic
    offset 12   u8       frame version (1)
    offset 13   u8       flags: bit 0 set when the slot is the object's data[0:8]
    offset 14   u8       n, the length of the section name (1..255 bytes of UTF-8)
    offset 15   n bytes  the section name
    offset 15+n          the rest of the object's data

A snapshot (all lengths u64 little-endian)::

    "LRCS" | u8 version (1) | u64 length | msgpack {"sections": [name, ...]}
    then per section, in that order: (u64 length | bytes)* | u64 0

Restoring checks the section names against this node's first: a snapshot
with a section this node lacks, or lacking one it has, is refused with a
:class:`SnapshotFormatError` naming it, never restored into the wrong
object.  Each object then restores its own stream (a ``Replicated`` checks
its type name as well); if one fails, the objects already restored are put
back from a capture taken just before, so a bad snapshot never leaves a mix
of old and new sections.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from .errors import BadConfigError, BadEnvelopeError, UnknownSectionError
from .statemachine import (
    DEFAULT_CHUNK_SIZE,
    ChunkReader,
    Proposer,
    SnapshotFormatError,
    StateMachine,
    StateSnapshot,
    rechunk,
    takes_leader_time,
)

__all__ = [
    "FRAME_VERSION",
    "SECTIONS_VERSION",
    "Composite",
    "SectionProposer",
    "decode_frame",
    "encode_frame",
]

log = logging.getLogger("liferaft.runtime")
T = TypeVar("T")

#: Version byte of a command frame (offset 12).
FRAME_VERSION = 1
#: Version byte of a sectioned snapshot stream (after ``"LRCS"``).
SECTIONS_VERSION = 1
FRAME_MAGIC = b"LRCE"
SNAPSHOT_MAGIC = b"LRCS"
_SLOT = 8
_HEAD = _SLOT + len(FRAME_MAGIC) + 3  # slot, magic, version, flags, name length
_STAMPED = 1
_LEN = struct.Struct("<Q")


class _Header(msgspec.Struct):
    sections: list[str]


def _check_name(name: object) -> str:
    try:
        size = len(name.encode()) if isinstance(name, str) else 0
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for the frame
        size = 0
    if not 1 <= size <= 255:
        raise BadConfigError(f"a section name must be 1 to 255 bytes of UTF-8, not {name!r}")
    return str(name)


def encode_frame(section: str, data: bytes, *, stamp_time: bool) -> bytes:
    """``data`` of ``section`` wrapped in a frame (see the module docstring)."""
    name = section.encode()
    if stamp_time:
        if len(data) < _SLOT:
            raise BadConfigError("stamp_time needs at least 8 bytes of data to overwrite")
        slot, rest, flags = bytes(data[:_SLOT]), bytes(data[_SLOT:]), _STAMPED
    else:
        slot, rest, flags = bytes(_SLOT), bytes(data), 0
    return slot + FRAME_MAGIC + bytes((FRAME_VERSION, flags, len(name))) + name + rest


def decode_frame(data: bytes) -> tuple[str, bytes]:
    """``(section, the object's data)`` of a frame; :class:`BadEnvelopeError` if it is not one."""
    if len(data) < _HEAD or data[_SLOT : _SLOT + len(FRAME_MAGIC)] != FRAME_MAGIC:
        raise BadEnvelopeError("not an entry of a Composite state machine (no section frame)")
    version, flags, n = data[_SLOT + 4], data[_SLOT + 5], data[_SLOT + 6]
    if version != FRAME_VERSION:
        raise BadEnvelopeError(
            f"unsupported section frame version {version} (this replica reads {FRAME_VERSION})"
        )
    if n == 0 or len(data) < _HEAD + n:
        raise BadEnvelopeError("section frame cut short")
    try:
        name = bytes(data[_HEAD : _HEAD + n]).decode()
    except UnicodeDecodeError:
        raise BadEnvelopeError("section name is not UTF-8") from None
    rest = bytes(data[_HEAD + n :])
    return name, (bytes(data[:_SLOT]) + rest if flags & _STAMPED else rest)


class SectionProposer:
    """The node as one section's object sees it: what it proposes is framed
    with the section's name.  Reads, the node's ``id`` and ``clock`` pass through."""

    def __init__(self, node: Proposer, section: str) -> None:
        self._node = node
        self.section = section

    @property
    def id(self) -> str | None:
        """The node's id (None if the proposer has none)."""
        return getattr(self._node, "id", None)

    @property
    def clock(self) -> Any:
        """The node's clock (None if the proposer has none)."""
        return getattr(self._node, "clock", None)

    async def propose(
        self, data: bytes, *, stamp_time: bool = False, timeout: float | None = None
    ) -> Any:
        """Propose ``data`` for this section; what the object's ``apply`` returned."""
        framed = encode_frame(self.section, data, stamp_time=stamp_time)
        return await self._node.propose(framed, stamp_time=stamp_time, timeout=timeout)

    async def read(self, fn: Callable[[], T], *, consistency: str = "linearizable") -> T:
        """The node's read: sections share one applied state."""
        return await self._node.read(fn, consistency=consistency)


def _section_name(obj: object) -> str:
    return str(getattr(type(obj), "type_name", None) or type(obj).__qualname__)


class Composite:
    """A state machine made of named sections, each one a state machine.

    ``sections`` is a mapping of names to objects, or a sequence of objects
    named by their ``type_name`` (a ``Replicated``'s, by default its class
    name); two objects of one class need a mapping.  Names are part of the
    log and the snapshots: keep them stable, as you keep command names.
    Each object is usually a :class:`~liferaft.runtime.Replicated`; a
    durable state machine (``applied_index``, ``apply_batch``) keeps its own
    store and runs as a node's only state machine, so it is refused here.
    """

    def __init__(self, sections: Mapping[str, StateMachine] | Sequence[StateMachine]) -> None:
        if isinstance(sections, Mapping):
            named = [(_check_name(k), v) for k, v in sections.items()]
        elif isinstance(sections, Sequence) and not isinstance(sections, str | bytes):
            named = [(_check_name(_section_name(v)), v) for v in sections]
        else:
            raise BadConfigError("sections must be a mapping of names to objects, or a list")
        if not named:
            raise BadConfigError("a Composite needs at least one section")
        self._sections: dict[str, StateMachine] = {}
        for name, obj in named:
            if name in self._sections:
                raise BadConfigError(
                    f"two sections are named {name!r}: name them, as "
                    f"state_machine={{'a': obj1, 'b': obj2}}"
                )
            for attr in ("apply", "snapshot", "restore"):
                if not callable(getattr(obj, attr, None)):
                    raise BadConfigError(f"section {name!r} has no {attr}() method")
            if any(callable(getattr(obj, a, None)) for a in ("applied_index", "apply_batch")):
                raise BadConfigError(
                    f"section {name!r} is a durable state machine (it keeps its own store): "
                    "run it as the node's only state machine"
                )
            self._sections[name] = obj
        self._with_time = {n: takes_leader_time(o.apply) for n, o in self._sections.items()}
        self._unknown_seen: set[str] = set()  # section names already warned about

    @property
    def sections(self) -> Mapping[str, StateMachine]:
        """The objects by section name."""
        return dict(self._sections)

    def __getitem__(self, name: str) -> StateMachine:
        return self._sections[name]

    def attach(self, proposer: Proposer) -> None:
        """Give each object that takes one a :class:`SectionProposer` (called by the node)."""
        for name, obj in self._sections.items():
            attach = getattr(obj, "attach", None)
            if callable(attach):
                attach(SectionProposer(proposer, name))

    # --- StateMachine ---

    def apply(self, index: int, data: bytes, *, leader_time: float = 0.0) -> Any:
        """Apply the entry to the one section it names; return that object's result.

        Raises :class:`BadEnvelopeError` (not a frame) or
        :class:`UnknownSectionError` before any object is touched.
        """
        name, inner = decode_frame(data)
        obj = self._sections.get(name)
        if obj is None:
            if name not in self._unknown_seen:
                # Once per name: a node configured without an object that
                # another node proposes for skips all of its entries, and
                # would otherwise say so only when a snapshot is refused.
                self._unknown_seen.add(name)
                log.warning(
                    "entry %d is for section %r, which this node's state machine lacks "
                    "(it has %s): its entries are skipped here; give every node the "
                    "same objects",
                    index,
                    name,
                    ", ".join(sorted(self._sections)),
                )
            raise UnknownSectionError(
                f"entry {index} is for section {name!r}; this node has "
                f"{', '.join(sorted(self._sections))}",
                name,
            )
        if self._with_time[name]:
            return obj.apply(index, inner, leader_time=leader_time)
        return obj.apply(index, inner)  # type: ignore[call-arg]

    def snapshot(self) -> StateSnapshot:
        """Capture every section now (each object's cheap capture); stream them later."""
        return _SectionsSnapshot([(n, o.snapshot()) for n, o in self._sections.items()])

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Replace every section's state from a stream made by :meth:`snapshot`.

        Raises :class:`SnapshotFormatError` for a malformed stream or a set of
        sections other than this node's, before anything changes; if an
        object refuses its own section, the ones already restored go back.
        """
        streams = _read_sections(chunks, list(self._sections))
        done: list[tuple[str, StateSnapshot]] = []  # (name, its state before), the failed one too
        try:
            for name, pieces in streams:
                obj = self._sections[name]
                done.append((name, obj.snapshot()))
                obj.restore(iter(pieces))
        except Exception as exc:
            for name, backup in reversed(done):
                self._sections[name].restore(backup.chunks())
            raise SnapshotFormatError(f"snapshot section {done[-1][0]!r}: {exc}") from exc
        finally:
            for _, backup in done:
                backup.release()


class _SectionsSnapshot:
    """The sections' captures, streamed one after another."""

    def __init__(self, parts: list[tuple[str, StateSnapshot]]) -> None:
        self._parts: list[tuple[str, StateSnapshot]] | None = parts

    def chunks(self) -> Iterator[bytes]:
        parts = self._parts
        if parts is None:
            raise RuntimeError("snapshot already released")
        return rechunk(self._pieces(parts), DEFAULT_CHUNK_SIZE)

    @staticmethod
    def _pieces(parts: list[tuple[str, StateSnapshot]]) -> Iterator[bytes]:
        yield SNAPSHOT_MAGIC + bytes((SECTIONS_VERSION,))
        header = msgspec.msgpack.encode(_Header([name for name, _ in parts]))
        yield _LEN.pack(len(header)) + header
        for _, snap in parts:
            for chunk in snap.chunks():
                if chunk:  # a zero length ends the section
                    yield _LEN.pack(len(chunk))
                    yield bytes(chunk)
            yield _LEN.pack(0)

    def release(self) -> None:
        parts, self._parts = self._parts, None
        for _, snap in parts or ():
            snap.release()


def _read_sections(chunks: Iterable[bytes], ours: list[str]) -> list[tuple[str, list[bytes]]]:
    """Every section's stream of a whole snapshot, checked against ``ours``."""
    reader = ChunkReader(chunks)
    magic = reader.read_exact(len(SNAPSHOT_MAGIC) + 1)
    if magic[:-1] != SNAPSHOT_MAGIC:
        raise SnapshotFormatError("not a snapshot of a Composite state machine (bad magic)")
    if magic[-1] != SECTIONS_VERSION:
        raise SnapshotFormatError(
            f"unsupported sections snapshot version {magic[-1]} (this replica reads "
            f"{SECTIONS_VERSION})"
        )
    (length,) = _LEN.unpack(reader.read_exact(_LEN.size))
    try:
        names = msgspec.msgpack.decode(reader.read_exact(length), type=_Header).sections
    except msgspec.DecodeError as e:
        raise SnapshotFormatError(f"bad sections header: {e}") from None
    if len(set(names)) != len(names):
        raise SnapshotFormatError(f"snapshot names a section twice: {names}")
    unknown = [n for n in names if n not in ours]
    if unknown:
        raise SnapshotFormatError(
            f"snapshot has section {unknown[0]!r}, which this node's state machine does not "
            f"(it has {', '.join(ours)})"
        )
    missing = [n for n in ours if n not in names]
    if missing:
        raise SnapshotFormatError(f"snapshot lacks section {missing[0]!r}")
    streams: list[tuple[str, list[bytes]]] = []
    for name in names:
        pieces: list[bytes] = []
        while (n := _LEN.unpack(reader.read_exact(_LEN.size))[0]) != 0:
            pieces.append(reader.read_exact(n))
        streams.append((name, pieces))
    if not reader.at_eof():
        raise SnapshotFormatError(f"trailing bytes after the snapshot at byte {reader.offset}")
    return streams
