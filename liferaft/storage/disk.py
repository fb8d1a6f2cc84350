"""DiskStorage: the core's LogReader contract on top of the WAL, the hard
state file and the snapshot store, all under one data directory::

    DATA_DIR/hardstate      term, vote, commit (atomic, checksummed)
    DATA_DIR/wal/*.wal      entries after the newest snapshot (and perhaps a few before)
    DATA_DIR/snap/*.snap    the newest snapshots

:meth:`DiskStorage.save` persists a Ready in the order the Ready contract
needs: snapshot, then entries, one fdatasync, then the hard state (so a
durable commit index never points past durable entries).  The plan comes
from :mod:`liferaft.storage.durability`, which the simulator shares.

A hard state that changes only the commit index is not written at once: it
would cost two fsyncs (file and directory) per commit, and a commit index
lost in a crash is learned again from the leader (etcd does not sync it
either).  It goes to disk with the next term or vote change, before the next
membership-change entry (see durability.py for why that one matters), and on
:meth:`DiskStorage.close`.

Threads
-------
The WAL is not thread-safe; DiskStorage is, for what changes the disk.  The
runtime saves Readies in a worker thread while, on the event loop, it starts
a snapshot, adopts it and compacts the log: without one owner, a compaction
deleted segments in the middle of an append.  So every call that writes or
moves the log's base (:meth:`save` and its steps :meth:`plan`/:meth:`do`/
:meth:`done`, :meth:`apply_snapshot`, :meth:`begin_snapshot`,
:meth:`finish_snapshot`, :meth:`adopt_snapshot`, :meth:`compact`,
:meth:`close`) holds one lock for its whole length: they run one at a time,
whatever thread calls them.  A call on the event loop may wait for a save's
fsync to finish (a compaction already did its own directory fsync there).

The LogReader methods (``term``, ``entries``, ``last_index``, ...) take no
lock: they belong to the one task that drives the core, which never reads
the log while a save it started is under way (the Ready contract: persist,
then step again).  Taking the lock there would block the event loop on
every fsync.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

from liferaft.core import (
    ConfState,
    Entry,
    HardState,
    LogCompactedError,
    LogUnavailableError,
    Snapshot,
    SnapshotMeta,
)
from liferaft.core.log import limit_size

from . import durability
from .durability import PutEntries, PutSnapshot, SavePlan, Step
from .errors import CorruptionError, StorageError
from .fs import REAL, FileSystem
from .hardstate import HardStateStore
from .snapshots import SnapshotStore, SnapshotWriter
from .wal import WAL

_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Run ``method`` holding the store's lock (one writer at a time)."""

    @functools.wraps(method)
    def wrapper(self: DiskStorage, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


class DiskStorage:
    """Durable storage of one node.  Implements liferaft.core.LogReader."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        segment_size: int = 64 << 20,
        keep_snapshots: int = 2,
        fs: FileSystem = REAL,
        snapshot_data_in_memory: bool = True,
    ) -> None:
        """``snapshot_data_in_memory=False`` makes :meth:`snapshot` return the
        metadata only (``data == b""``): a runtime that streams snapshots with
        :meth:`snapshot_chunks` never needs the whole image in memory."""
        self.dir = Path(data_dir)
        self.fs = fs
        # Held by every call that changes the disk (see "Threads" above).
        # Reentrant: save() holds it across do(), which takes it too.
        self._lock = threading.RLock()
        fs.makedirs(self.dir)  # a fresh directory is durable in its parent
        self.hard = HardStateStore(self.dir, fs=fs)
        self._lazy_commit = 0  # a commit index not yet written; see the module doc
        self.snaps = SnapshotStore(self.dir / "snap", keep=keep_snapshots, fs=fs)
        self._data_in_memory = snapshot_data_in_memory
        self.wal = WAL(self.dir / "wal", segment_size=segment_size, fs=fs)
        self.snap_meta = self.snaps.latest() or SnapshotMeta()
        if self.snap_meta.index:
            # The snapshot is the base of the log: check every byte of it
            # before trusting it (its metadata alone could carry a flipped bit).
            self.snaps.verify(self.snap_meta)
        self._snap_cache: Snapshot | None = None
        self._recover()

    def _recover(self) -> None:
        s = self.snap_meta
        w = self.wal
        if w.last_index < s.index or (
            w.first_index <= s.index <= w.last_index and w.term(s.index) != s.term
        ):
            # The snapshot replaced the log but the crash came before the WAL
            # was reset: finish the job.
            w.reset(s.index + 1)
        elif w.last_index >= w.first_index and w.first_index > s.index + 1:
            raise CorruptionError(
                w.dir, 0, f"WAL starts at {w.first_index} but the snapshot ends at {s.index}"
            )
        hs = self.hard.current
        if hs.commit > self.last_index():
            raise CorruptionError(
                self.hard.path, 0, f"commit {hs.commit} is past the last entry {self.last_index()}"
            )

    # -- LogReader -------------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard.current, self.snap_meta.conf_state

    def first_index(self) -> int:
        return self.snap_meta.index + 1

    def last_index(self) -> int:
        return max(self.wal.last_index, self.snap_meta.index)

    def term(self, index: int) -> int:
        s = self.snap_meta
        if index == s.index:
            return s.term
        if index < s.index:
            raise LogCompactedError(f"index {index} is in the snapshot at {s.index}")
        if index > self.last_index():
            raise LogUnavailableError(f"index {index} is past the last {self.last_index()}")
        return self.wal.term(index)

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        if lo <= self.snap_meta.index:
            raise LogCompactedError(f"index {lo} is in the snapshot at {self.snap_meta.index}")
        return limit_size(self.wal.entries(lo, hi), max_size)

    def snapshot(self) -> Snapshot:
        if self.snap_meta.index == 0:
            return Snapshot()
        if not self._data_in_memory:
            return Snapshot(self.snap_meta)
        c = self._snap_cache
        if c is None or c.meta != self.snap_meta:
            c = self._snap_cache = Snapshot(self.snap_meta, self.snaps.load(self.snap_meta))
        return c

    # -- streaming snapshots ---------------------------------------------------------

    def snapshot_chunks(self, meta: SnapshotMeta | None = None) -> Iterator[bytes]:
        """Stream the data of a snapshot (the newest by default) for sending to
        a follower.  The CRC is checked when the stream ends: a mismatch raises
        CorruptionError, so a receiver must not trust a stream that did not end."""
        return self.snaps.open(meta or self.snap_meta)

    def receive_snapshot(self, meta: SnapshotMeta) -> SnapshotWriter:
        """A writer for a snapshot arriving from the leader in chunks.  Its
        ``commit()`` makes the file durable but does not yet replace the log:
        that happens when the core hands the snapshot back in a Ready and
        :meth:`save` (or :meth:`apply_snapshot`) installs it."""
        return self.snaps.create(meta)

    def has_snapshot_file(self, meta: SnapshotMeta) -> bool:
        return self.fs.exists(self.snaps.path_of(meta))
    @property
    def hard_state(self) -> HardState:
        """The hard state as last saved (its commit index perhaps not yet durable)."""
        cur = self.hard.current
        if self._lazy_commit > cur.commit:
            return HardState(cur.term, cur.vote, self._lazy_commit)
        return cur

    # -- writing -------------------------------------------------------------------

    @_locked
    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: Snapshot | None = None,
        sync_commit: bool = False,
    ) -> None:
        """Persist one Ready's worth of state durably, in the safe order
        (:func:`~liferaft.storage.durability.plan_save` says which).
        ``sync_commit``: the Ready's flag of that name."""
        plan = self.plan(hard_state, entries, snapshot, sync_commit)
        for step in plan.steps:
            self.do(step)
        self.done(plan)

    @_locked
    def plan(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: Snapshot | None,
        sync_commit: bool = False,
    ) -> SavePlan:
        """The steps :meth:`save` takes: carry them out with :meth:`do`, then
        call :meth:`done`."""
        if entries:
            first = entries[0].index
            base, last = (snapshot.index, snapshot.index) if snapshot else (
                self.snap_meta.index, self.last_index())
            if first > last + 1 or first <= base:
                # Refused before any step runs (a new term written first would
                # stay); the WAL alone cannot tell, as an empty one takes any
                # index, and a reopen would then refuse the directory.
                raise StorageError(
                    f"entries from {first} do not follow the log "
                    f"(snapshot {base}, last index {last})"
                )
        cur = self.hard.current
        durable = HardState(cur.term, cur.vote, max(cur.commit, self.snap_meta.index))
        return durability.plan_save(
            durable, self._lazy_commit, self.last_index(), hard_state, entries, snapshot,
            sync_commit,
        )

    @_locked
    def done(self, plan: SavePlan) -> None:
        """Every step of ``plan`` is durable: remember its lazy commit index."""
        if plan.lazy_commit > self._lazy_commit:
            self._lazy_commit = plan.lazy_commit

    @_locked
    def do(self, step: Step) -> None:
        """Carry out one step of a plan; it is durable when this returns."""
        if isinstance(step, PutSnapshot):
            self.apply_snapshot(step.snapshot)
        elif isinstance(step, PutEntries):
            self.wal.append(step.entries, sync=True)
        else:
            self.hard.save(step.hard_state)

    def _write_hard(self, hs: HardState) -> None:
        # Everything up to last_index() is durable here (entries are synced
        # before the hard state), so capping there keeps the file's commit
        # index from pointing past the log after a crash.
        commit = min(max(hs.commit, self._lazy_commit), self.last_index())
        self.hard.save(HardState(hs.term, hs.vote, commit))
        self._lazy_commit = 0

    @_locked
    def apply_snapshot(self, snap: Snapshot) -> None:
        """A snapshot from the leader replaces the whole log.

        If the snapshot was already streamed in with :meth:`receive_snapshot`
        (its data here is then empty), the file on disk is used as it is: two
        snapshots with the same index and term hold the same state (the
        State Machine Safety property, Raft §5.4.3).
        """
        if not (snap.data == b"" and self.has_snapshot_file(snap.meta)):
            with self.snaps.create(snap.meta) as w:
                w.write(snap.data)
                w.commit()
        self.snap_meta = snap.meta
        self.wal.reset(snap.index + 1)

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> SnapshotMeta:
        """Record the state machine image as of applied ``index``."""
        with self.begin_snapshot(index, conf) as w:
            w.write(data)
            return self.finish_snapshot(w)

    @_locked
    def begin_snapshot(self, index: int, conf: ConfState) -> SnapshotWriter:
        """Start a snapshot of the state as of applied ``index``, to be written
        in chunks (possibly from a worker thread), then given to
        :meth:`finish_snapshot`."""
        return self.snaps.create(SnapshotMeta(index, self.term(index), conf))

    @_locked
    def finish_snapshot(self, w: SnapshotWriter) -> SnapshotMeta:
        """Commit a snapshot from :meth:`begin_snapshot` and make it the newest
        (unless a newer one was installed meanwhile)."""
        meta = w.commit()
        if meta.index > self.snap_meta.index:
            self.snap_meta = meta
        return meta

    @_locked
    def adopt_snapshot(self, meta: SnapshotMeta) -> None:
        """Make a snapshot taken with :meth:`begin_snapshot` the base of the
        log, unless a newer one was installed meanwhile (the runtime commits
        the writer in a worker thread, then adopts it on its own thread)."""
        if meta.index > self.snap_meta.index:
            self.snap_meta = meta

    @_locked
    def compact(self, index: int) -> int:
        """Drop WAL segments wholly covered by the snapshot (index <= its index)."""
        return self.wal.compact(min(index, self.snap_meta.index + 1))

    @_locked
    def close(self) -> None:
        """Write a pending commit index (best effort) and close the WAL."""
        try:
            if self._lazy_commit > self.hard.current.commit:
                self.wal.sync()
                self._write_hard(self.hard.current)
        except (StorageError, OSError):
            pass  # the commit index is only a hint; it is learned again
        finally:
            self.wal.close()
