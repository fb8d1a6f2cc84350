"""Snapshot files: streamed in chunks, checksummed whole, replaced atomically.

A snapshot file is ``{term:016x}-{index:016x}.snap``::

    | magic "LRSNAP" | version u16 | index u64 | term u64 | meta length u32 | meta (JSON) |
    | data ... |
    | data length u64 | crc32 u32 |       <- trailer; the CRC covers everything before it

Writing goes to a ``.tmp`` file of the writer's own (two streams of one
snapshot may run at once), is fsynced, renamed into place and the directory
fsynced (hashicorp/raft's FileSnapshotStore does the same), so a crash never
leaves a half snapshot under a real name.  Data arrives and leaves in chunks:
neither taking nor installing a snapshot holds it twice in memory.  The last
``keep`` snapshots are kept.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from liferaft.core import ConfState, SnapshotMeta

from .errors import CorruptionError, StorageError
from .fs import REAL, FileSystem

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
    """Write a snapshot as a stream; ``commit()`` makes it durable and visible.

    Only the current chunk is ever in memory.  Until ``commit()`` returns,
    the snapshot lives under a ``.tmp`` name that a restart deletes.
    """

    def __init__(self, store: SnapshotStore, meta: SnapshotMeta) -> None:
        self.store = store
        self.meta = meta
        self.fs = store.fs
        self.final = store.dir / _name(meta)
        # A name of its own: two streams of the same snapshot (two leaders, or
        # a reconnect) may be written at once, and must not share a file.
        self.tmp = store.dir / f"{self.final.stem}.{next(store._tmp_seq)}.tmp"
        self._done = False
        self._fd: int | None = None
        try:
            self._fd = self.fs.open_new(self.tmp)
        except OSError as exc:
            raise StorageError(f"cannot create {self.tmp}: {exc.strerror or exc}") from exc
        conf = _conf_to_json(meta.conf_state)
        head = _HEAD.pack(MAGIC, VERSION, meta.index, meta.term, len(conf)) + conf
        self._crc = zlib.crc32(head)
        self._len = 0
        self._write(head)

    def _write(self, data: bytes) -> None:
        assert self._fd is not None, "snapshot writer already finished"
        try:
            self.fs.write_all(self._fd, data)
        except OSError as exc:
            self.abort()
            raise StorageError(f"snapshot write failed: {exc.strerror or exc}") from exc

    def write(self, chunk: bytes) -> None:
        """Append one chunk of state machine data."""
        if self._done:
            raise StorageError("snapshot writer already finished")
        self._crc = zlib.crc32(chunk, self._crc)
        self._len += len(chunk)
        self._write(chunk)

    @property
    def size(self) -> int:
        """Bytes of data written so far."""
        return self._len

    def commit(self) -> SnapshotMeta:
        """Trailer, fsync, rename into place, fsync of the directory."""
        if self._done:
            raise StorageError("snapshot writer already finished")
        trailer = _TRAILER.pack(self._len, 0)
        crc = zlib.crc32(trailer[:8], self._crc)
        self._write(_TRAILER.pack(self._len, crc))
        fd = self._fd
        assert fd is not None
        try:
            self.fs.fdatasync(fd)
            self.fs.close(fd)
            self._fd = None
            self.fs.replace(self.tmp, self.final)
            self.fs.fsync_dir(self.store.dir)
        except OSError as exc:
            self.abort()
            raise StorageError(f"snapshot commit failed: {exc.strerror or exc}") from exc
        self._done = True
        self.store.prune()
        return self.meta

    def abort(self) -> None:
        """Forget this snapshot: close and delete the temporary file."""
        if self._fd is not None:
            try:
                self.fs.close(self._fd)
            finally:
                self._fd = None
        try:
            if self.fs.exists(self.tmp):
                self.fs.unlink(self.tmp)
        except OSError:
            pass  # removed at the next start (SnapshotStore cleans *.tmp)
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
        self,
        directory: str | os.PathLike[str],
        keep: int = 2,
        cleanup: bool = True,
        fs: FileSystem = REAL,
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.dir = Path(directory)
        self.keep = keep
        self.fs = fs
        self._prune_lock = threading.Lock()
        self._tmp_seq = itertools.count(1)  # next() is atomic: writers on any thread
        fs.makedirs(self.dir)
        if cleanup:
            for name in self.fs.listdir(self.dir):
                if name.endswith(".tmp"):
                    self.fs.unlink(self.dir / name)  # a snapshot that was never committed

    def create(self, meta: SnapshotMeta) -> SnapshotWriter:
        return SnapshotWriter(self, meta)

    def _files(self) -> list[Path]:
        names = [n for n in self.fs.listdir(self.dir) if n.endswith(".snap")]
        return [self.dir / n for n in sorted(names, key=lambda n: n.split("-")[::-1])]

    def list(self) -> list[SnapshotMeta]:
        """Metadata of every snapshot, oldest first (headers only, no CRC check)."""
        return [self._read_meta(p)[0] for p in self._files()]

    def latest(self) -> SnapshotMeta | None:
        files = self._files()
        return self._read_meta(files[-1])[0] if files else None

    def prune(self) -> None:
        # Writers commit from several threads (a snapshot taken locally, one
        # streamed in from the leader): one prune at a time, and a file a
        # concurrent prune already removed is not an error.
        with self._prune_lock:
            for p in self._files()[: -self.keep]:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.unlink(p)
            self.fs.fsync_dir(self.dir)

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
        meta = SnapshotMeta(index, term, conf)
        if path.name != _name(meta):
            raise CorruptionError(
                path, 0, f"header says term {term} index {index}, unlike the file name"
            )
        return meta, _HEAD.size + mlen

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
