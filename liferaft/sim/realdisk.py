"""RealDisk: a simulated node's disk backed by liferaft.storage on real files.

Writes go to the files as a real node makes them: entries are appended to
the WAL unsynced, and ``sync()`` fdatasyncs them and then replaces the hard
state (tmp, fsync, rename, directory fsync).  The files sit under
:class:`~liferaft.storage.fs.FaultFS`, the same fault layer the storage tests
use, so a crash loses what the page cache had not flushed: each file keeps a
random prefix of its unsynced bytes (a torn write), and a rename whose
directory was not fsynced may be undone.  The node then restarts by
reopening its data directory, and the core reads the same DiskStorage a real
node would.
"""

from __future__ import annotations

import random
from pathlib import Path

from liferaft.core import ConfState, Entry, HardState, MemoryStorage, Snapshot
from liferaft.storage import DiskStorage
from liferaft.storage.fs import FaultFS

SEGMENT = 4096


class RealDisk:
    def __init__(self, initial: MemoryStorage, directory: Path, rng: random.Random) -> None:
        self.dir = directory
        self.fs = FaultFS(rng)
        st = DiskStorage(directory, segment_size=SEGMENT, fs=self.fs)
        snap = initial.snapshot()
        if snap.index and st.snap_meta.index < snap.index:
            st.apply_snapshot(snap)
        if initial.hard_state != HardState() and st.hard_state == HardState():
            st.hard.save(initial.hard_state)
        self.live = st
        self._hard: HardState | None = None
        self.syncs = 0
        self.persist_vote = True

    def set_hard_state(self, hs: HardState) -> None:
        if not self.persist_vote:
            hs = HardState(hs.term, None, hs.commit)
        self._hard = hs  # written at sync, after the entries are durable

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.live.apply_snapshot(snap)  # atomic: tmp, fsync, rename, dir fsync

    def append(self, entries: list[Entry]) -> None:
        if entries:
            self.live.wal.append(entries, sync=False)

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        meta = self.live.create_snapshot(index, conf, data)
        return Snapshot(meta, data)

    def compact(self, index: int) -> None:
        self.live.compact(index)

    def sync(self) -> None:
        self.live.wal.sync()
        if self._hard is not None:
            self.live.hard.save(self._hard)
            self._hard = None
        self.syncs += 1

    def crash(self, rng: random.Random) -> int:
        self._hard = None
        self.live.close()
        return self.fs.crash()

    def recover(self) -> DiskStorage:
        self.live.close()
        self.live = DiskStorage(self.dir, segment_size=SEGMENT, fs=self.fs)
        return self.live
