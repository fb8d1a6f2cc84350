"""Snapshot files: streamed in chunks, checksummed whole, replaced atomically.

A snapshot file is ``{term:016x}-{index:016x}.snap``::

    | magic "LRSNAP" | version u16 | index u64 | term u64 | meta length u32 | meta (JSON) |
    | data ... |
    | data length u64 | crc32 u32 |       <- trailer; the CRC covers everything before it

Writing goes to ``.tmp``, is fsynced, renamed into place and the directory
fsynced (hashicorp/raft's FileSnapshotStore does the same), so a crash never
leaves a half snapshot under a real name.  Data arrives and leaves in chunks:
neither taking nor installing a snapshot holds it twice in memory.  The last
``keep`` snapshots are kept.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from liferaft.core import ConfState, SnapshotMeta

from .errors import CorruptionError, StorageError
from .wal import fsync_dir

MAGIC = b"LRSNAP"
VERSION = 1
_HEAD = struct.Struct("<6sHQQI")
_TRAILER = struct.Struct("<QI")
CHUNK = 1 << 20


def _conf_to_json(cs: ConfState) -> bytes:
    return json.dumps(
        {
            "voters": sorted(cs.voters),
            "learners": sorted(cs.learners),
            "voters_outgoing": sorted(cs.voters_outgoing),
            "learners_next": sorted(cs.learners_next),
            "auto_leave": cs.auto_leave,
        },
        sort_keys=True,
    ).encode()


def _conf_from_json(raw: bytes) -> ConfState:
    d = json.loads(raw)
    return ConfState(
        voters=frozenset(d["voters"]),
        learners=frozenset(d["learners"]),
        voters_outgoing=frozenset(d["voters_outgoing"]),
        learners_next=frozenset(d["learners_next"]),
        auto_leave=bool(d["auto_leave"]),
    )


def _name(meta: SnapshotMeta) -> str:
    return f"{meta.term:016x}-{meta.index:016x}.snap"


class SnapshotWriter:
    """Write a snapshot as a stream; ``commit()`` makes it durable and visible."""

    def __init__(self, store: SnapshotStore, meta: SnapshotMeta) -> None:
        self.store = store
        self.meta = meta
        self.final = store.dir / _name(meta)
        self.tmp = self.final.with_suffix(".tmp")
        self._f: BinaryIO = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort
        conf = _conf_to_json(meta.conf_state)
        head = _HEAD.pack(MAGIC, VERSION, meta.index, meta.term, len(conf)) + conf
        self._crc = zlib.crc32(head)
        self._len = 0
        self._f.write(head)
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._crc = zlib.crc32(chunk, self._crc)
        self._len += len(chunk)
        try:
            self._f.write(chunk)
        except OSError as exc:
            self.abort()
            raise StorageError(f"snapshot write failed: {exc.strerror or exc}") from exc

    def commit(self) -> SnapshotMeta:
        trailer = _TRAILER.pack(self._len, 0)
        crc = zlib.crc32(trailer[:8], self._crc)
        try:
            self._f.write(_TRAILER.pack(self._len, crc))
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self.tmp, self.final)
            fsync_dir(self.store.dir)
        except OSError as exc:
            self.abort()
            raise StorageError(f"snapshot commit failed: {exc.strerror or exc}") from exc
        self._done = True
        self.store.prune()
        return self.meta

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        if self.tmp.exists():
            self.tmp.unlink()
        self._done = True

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done:
            self.abort()


class SnapshotStore:
    """A directory of snapshot files; the newest ``keep`` are kept."""

    def __init__(
        self, directory: str | os.PathLike[str], keep: int = 2, cleanup: bool = True
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        if cleanup:
            for tmp in self.dir.glob("*.tmp"):
                tmp.unlink()  # a snapshot that was never committed

    def create(self, meta: SnapshotMeta) -> SnapshotWriter:
        return SnapshotWriter(self, meta)

    def _files(self) -> list[Path]:
        return sorted(self.dir.glob("*.snap"), key=lambda p: p.name.split("-")[::-1])

    def list(self) -> list[SnapshotMeta]:
        """Metadata of every snapshot, oldest first (headers only, no CRC check)."""
        return [self._read_meta(p)[0] for p in self._files()]

    def latest(self) -> SnapshotMeta | None:
        files = self._files()
        return self._read_meta(files[-1])[0] if files else None

    def prune(self) -> None:
        for p in self._files()[: -self.keep]:
            p.unlink()
        fsync_dir(self.dir)

    def _read_meta(self, path: Path) -> tuple[SnapshotMeta, int]:
        with open(path, "rb") as f:
            head = f.read(_HEAD.size)
            if len(head) < _HEAD.size:
                raise CorruptionError(path, 0, "snapshot header is truncated")
            magic, version, index, term, mlen = _HEAD.unpack(head)
            if magic != MAGIC or version != VERSION:
                raise CorruptionError(path, 0, "not a liferaft snapshot (or another version)")
            raw = f.read(mlen)
        try:
            conf = _conf_from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptionError(path, _HEAD.size, f"bad snapshot metadata: {exc}") from exc
        return SnapshotMeta(index, term, conf), _HEAD.size + mlen

    def path_of(self, meta: SnapshotMeta) -> Path:
        return self.dir / _name(meta)

    def open(self, meta: SnapshotMeta, chunk: int = CHUNK) -> Iterator[bytes]:
        """Stream the data of a snapshot; the CRC is checked when the stream ends,
        and a mismatch raises CorruptionError (so callers must finish reading
        before trusting what they built)."""
        path = self.path_of(meta)
        _, start = self._read_meta(path)
        size = path.stat().st_size
        if size < start + _TRAILER.size:
            raise CorruptionError(path, size, "snapshot trailer is missing")
        with open(path, "rb") as f:
            head = f.read(start)
            crc = zlib.crc32(head)
            remaining = size - start - _TRAILER.size
            while remaining:
                buf = f.read(min(chunk, remaining))
                if not buf:
                    raise CorruptionError(path, size - remaining, "snapshot ends early")
                crc = zlib.crc32(buf, crc)
                remaining -= len(buf)
                yield buf
            length, want = _TRAILER.unpack(f.read(_TRAILER.size))
            crc = zlib.crc32(_TRAILER.pack(length, 0)[:8], crc)
            if length != size - start - _TRAILER.size or crc != want:
                raise CorruptionError(path, size - _TRAILER.size, "snapshot checksum mismatch")

    def load(self, meta: SnapshotMeta) -> bytes:
        """The whole data of a (small) snapshot, verified."""
        return b"".join(self.open(meta))

    def verify(self, meta: SnapshotMeta) -> None:
        for _ in self.open(meta):
            pass
