"""The node's storage, behind one small interface for the runtime.

:class:`DiskStore` wraps :class:`~liferaft.storage.DiskStorage` (the real
thing: everything fsynced, snapshots streamed from and to files).
:class:`MemStore` wraps the core's MemoryStorage for tests, with the same
streaming contract, and persists without threads so a test that steps a
manual clock stays deterministic.

Snapshot payload (what the state machine's snapshot is wrapped in)::

    | magic "LRRT" | version u8 | header length u32 | header (JSON) | state machine chunks ... |

The header holds what the runtime itself must restore with the state: the
member address book (node id -> peer address and any extra info) and, from
version 2 on, the cluster's entry format (liferaft/runtime/entry_format.py):

* version 1: ``{"members": ...}``; the entry format is 1 (raw entries).
  Every data dir and cluster made before format 2 has these, and a cluster of
  format 1 keeps writing them, so an older build in that cluster still reads
  its snapshots.
* version 2: ``{"members": ..., "entry_format": 2}``.

Either may also say ``"checkpoint": true``: the state part is a durable
state machine's ``checkpoint_chunks()`` (a copy of its store at an index at
or past the snapshot's, liferaft/runtime/checkpoint.py), which a node
restores and then resumes after the copy's own applied index.  The key is
written only then, so every other header keeps its bytes; a build that
predates it ignores the key (it never runs such a state machine).

A header of another version, or an entry format this build does not know,
is refused with a one-line error naming both.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from liferaft.core import (
    ConfState,
    Entry,
    HardState,
    LogReader,
    MemoryStorage,
    Snapshot,
    SnapshotMeta,
)
from liferaft.storage import DiskStorage

from .entry_format import ENTRY_FORMAT_RAW, ENTRY_FORMATS, check_format

_MAGIC = b"LRRT"
_HEAD = struct.Struct("<4sBI")


#: Header versions this build reads (see the module doc).
PAYLOAD_VERSIONS = (1, 2)


def wrap_snapshot(
    members: dict[str, dict[str, Any]],
    chunks: Iterable[bytes],
    entry_format: int = 2,
    *,
    checkpoint: bool = False,
) -> Iterator[bytes]:
    """The runtime header, then the state machine's chunks.  A cluster of
    entry format 1 gets a version-1 header (its older members read it).
    ``checkpoint``: the chunks are a ``checkpoint_chunks()`` stream."""
    check_format(entry_format)
    doc: dict[str, Any]
    if entry_format == ENTRY_FORMAT_RAW:
        version, doc = 1, {"members": members}
    else:
        version, doc = 2, {"members": members, "entry_format": entry_format}
    if checkpoint:
        doc["checkpoint"] = True
    head = json.dumps(doc, sort_keys=True).encode()
    yield _HEAD.pack(_MAGIC, version, len(head)) + head
    yield from chunks


class SnapshotPayloadError(ValueError):
    pass


@dataclass(frozen=True)
class SnapshotHeader:
    """What the runtime restores from a snapshot besides the state machine's state."""

    members: dict[str, dict[str, Any]]
    entry_format: int
    #: The state is a ``checkpoint_chunks()`` copy (see the module doc).
    checkpoint: bool = False


def _check_version(magic: bytes, version: int) -> None:
    if magic != _MAGIC:
        raise SnapshotPayloadError("not a liferaft runtime snapshot")
    if version not in PAYLOAD_VERSIONS:
        known = " and ".join(map(str, PAYLOAD_VERSIONS))
        raise SnapshotPayloadError(
            f"runtime snapshot header version {version}; this build reads versions {known}"
        )


def unwrap_snapshot(chunks: Iterable[bytes]) -> tuple[SnapshotHeader, Iterator[bytes]]:
    """Split a runtime snapshot into its header and the state chunks."""
    it = iter(chunks)
    buf = b""
    for c in it:
        buf += c
        if len(buf) >= _HEAD.size:
            _check_version(*_HEAD.unpack_from(buf, 0)[:2])
            if len(buf) >= _HEAD.size + _HEAD.unpack_from(buf, 0)[2]:
                break
    if len(buf) < _HEAD.size:
        raise SnapshotPayloadError("snapshot payload is truncated")
    magic, version, hlen = _HEAD.unpack_from(buf, 0)
    _check_version(magic, version)
    if len(buf) < _HEAD.size + hlen:
        raise SnapshotPayloadError("snapshot payload is truncated")
    try:
        head = json.loads(buf[_HEAD.size : _HEAD.size + hlen])
        members = {str(k): dict(v) for k, v in head["members"].items()}
        fmt = ENTRY_FORMAT_RAW if version == 1 else head["entry_format"]
        checkpoint = head.get("checkpoint", False) is True
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotPayloadError(f"bad snapshot header: {exc}") from exc
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt not in ENTRY_FORMATS:
        known = ", ".join(map(str, ENTRY_FORMATS))
        raise SnapshotPayloadError(
            f"snapshot of entry format {fmt!r}; this build reads formats {known}"
        )
    rest = buf[_HEAD.size + hlen :]

    def state() -> Iterator[bytes]:
        if rest:
            yield rest
        yield from it

    return SnapshotHeader(members, fmt, checkpoint), state()


class Writer(Protocol):
    def write(self, chunk: bytes) -> None: ...
    def commit(self) -> Any: ...
    def abort(self) -> None: ...


class Store(Protocol):
    reader: LogReader
    threaded: bool

    def is_empty(self) -> bool: ...
    def save(
        self,
        hs: HardState | None,
        entries: list[Entry],
        snap: Snapshot | None,
        sync_commit: bool = False,
    ) -> None: ...
    def snapshot_meta(self) -> SnapshotMeta: ...
    def snapshot_chunks(self, meta: SnapshotMeta) -> Iterator[bytes]: ...
    def receive(self, meta: SnapshotMeta) -> Writer: ...
    def begin_snapshot(self, index: int, conf: ConfState) -> Writer: ...
    def adopt_snapshot(self, meta: SnapshotMeta) -> None: ...
    def compact(self, index: int) -> None: ...
    def close(self) -> None: ...


class DiskStore:
    threaded = True

    def __init__(self, disk: DiskStorage) -> None:
        self.disk = disk
        self.reader: LogReader = disk

    def is_empty(self) -> bool:
        d = self.disk
        return d.snap_meta.index == 0 and d.last_index() == 0 and d.hard_state == HardState()

    def save(
        self,
        hs: HardState | None,
        entries: list[Entry],
        snap: Snapshot | None,
        sync_commit: bool = False,
    ) -> None:
        self.disk.save(hs, entries, snap, sync_commit)

    def snapshot_meta(self) -> SnapshotMeta:
        return self.disk.snap_meta

    def snapshot_chunks(self, meta: SnapshotMeta) -> Iterator[bytes]:
        return self.disk.snapshot_chunks(meta)

    def receive(self, meta: SnapshotMeta) -> Writer:
        return self.disk.receive_snapshot(meta)

    def begin_snapshot(self, index: int, conf: ConfState) -> Writer:
        return self.disk.begin_snapshot(index, conf)

    def adopt_snapshot(self, meta: SnapshotMeta) -> None:
        self.disk.adopt_snapshot(meta)  # under DiskStorage's lock, like compact()

    def compact(self, index: int) -> None:
        self.disk.compact(index)

    def close(self) -> None:
        self.disk.close()


class _MemWriter:
    def __init__(self, done: Any) -> None:
        self.buf = io.BytesIO()
        self._done = done

    def write(self, chunk: bytes) -> None:
        self.buf.write(chunk)

    def commit(self) -> Any:
        return self._done(self.buf.getvalue())

    def abort(self) -> None:
        self.buf = io.BytesIO()


class MemStore:
    """In-memory storage with the DiskStore contract (tests only: nothing survives
    the process, though a test may keep the MemStore and restart a node on it)."""

    threaded = False

    def __init__(self, mem: MemoryStorage | None = None) -> None:
        self.mem = mem or MemoryStorage()
        self.reader: LogReader = self.mem
        self._received: dict[SnapshotMeta, bytes] = {}
        self._taken: dict[SnapshotMeta, bytes] = {}

    def is_empty(self) -> bool:
        m = self.mem
        return m.snapshot().index == 0 and m.last_index() == 0 and m.hard_state == HardState()

    def save(
        self,
        hs: HardState | None,
        entries: list[Entry],
        snap: Snapshot | None,
        sync_commit: bool = False,
    ) -> None:
        if snap is not None and not snap.data and snap.meta in self._received:
            snap = Snapshot(snap.meta, self._received.pop(snap.meta))
        self.mem.save(hs, entries, snap)

    def snapshot_meta(self) -> SnapshotMeta:
        return self.mem.snapshot().meta

    def snapshot_chunks(self, meta: SnapshotMeta) -> Iterator[bytes]:
        s = self.mem.snapshot()
        data = s.data if s.meta == meta else self._taken.get(meta, s.data)
        for i in range(0, max(len(data), 1), 1 << 16):
            yield data[i : i + (1 << 16)]

    def receive(self, meta: SnapshotMeta) -> Writer:
        def done(data: bytes) -> SnapshotMeta:
            self._received[meta] = data
            return meta

        return _MemWriter(done)

    def begin_snapshot(self, index: int, conf: ConfState) -> Writer:
        meta = SnapshotMeta(index, self.mem.term(index), conf)

        def done(data: bytes) -> SnapshotMeta:
            self._taken[meta] = data
            return meta

        return _MemWriter(done)

    def adopt_snapshot(self, meta: SnapshotMeta) -> None:
        data = self._taken.pop(meta, None)
        if data is not None and meta.index > self.mem.snapshot().index:
            self.mem.create_snapshot(meta.index, meta.conf_state, data)

    def compact(self, index: int) -> None:
        if index > self.mem.first_index():
            self.mem.compact(min(index, self.mem.snapshot().index))

    def close(self) -> None:
        pass
