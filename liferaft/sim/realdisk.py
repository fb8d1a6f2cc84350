"""RealDisk: a simulated node's disk that is liferaft.storage.DiskStorage on real files.

The node's Readies are saved by DiskStorage itself, step by step (the plan
of liferaft.storage.durability), on files under
:class:`~liferaft.storage.fs.FaultFS`, the fault layer the storage tests
use.  A crash loses what the page cache had not flushed: each file keeps a
random prefix of its unsynced bytes (a torn write), a rename whose directory
was not fsynced may be undone, and the lazy commit index, which DiskStorage
only holds in memory, is gone (a crash never runs ``close()``).  The node
then restarts by reopening its data directory, as a real node does.

A crash inside a save (:meth:`arm_crash`) stops at a random step; if that
step is an entry append, its bytes are written unsynced first, so FaultFS
tears them.
"""

from __future__ import annotations

import random
from pathlib import Path

from liferaft.core import ConfState, Entry, HardState, MemoryStorage, Snapshot
from liferaft.storage import DiskStorage
from liferaft.storage.durability import PutEntries, PutHardState, Step
from liferaft.storage.fs import FaultFS

from .disk import run_plan

SEGMENT = 4096


class RealDisk:
    def __init__(self, initial: MemoryStorage, directory: Path, rng: random.Random) -> None:
        self.dir = directory
        self.fs = FaultFS(rng, os_sync=False)
        st = DiskStorage(directory, segment_size=SEGMENT, fs=self.fs)
        snap = initial.snapshot()
        if snap.index and st.snap_meta.index < snap.index:
            st.apply_snapshot(snap)
        if initial.hard_state != HardState() and st.hard_state == HardState():
            st.hard.save(initial.hard_state)
        self.live = st
        self.syncs = 0
        self.persist_vote = True
        self._crash_rng: random.Random | None = None

    def durable_commit(self) -> int:
        return max(self.live.hard.current.commit, self.live.snap_meta.index)

    def arm_crash(self, rng: random.Random) -> None:
        self._crash_rng = rng

    def save(
        self,
        hs: HardState | None,
        entries: list[Entry],
        snap: Snapshot | None,
        sync_commit: bool = False,
    ) -> None:
        st = self.live
        plan = st.plan(hs, entries, snap, sync_commit)
        def do(step: Step) -> None:
            if isinstance(step, PutHardState) and not self.persist_vote:
                h = step.hard_state
                step = PutHardState(HardState(h.term, None, h.commit))
            st.do(step)
            self.syncs += 1

        def tear(step: PutEntries, rng: random.Random) -> None:
            st.wal.append(step.entries, sync=False)  # FaultFS keeps a prefix of the bytes

        rng, self._crash_rng = self._crash_rng, None
        run_plan(plan.steps, do, tear, lambda: st.done(plan), rng)

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        meta = self.live.create_snapshot(index, conf, data)
        return Snapshot(meta, data)

    def compact(self, index: int) -> None:
        self.live.compact(index)

    def crash(self, rng: random.Random) -> int:
        self._crash_rng = None
        self.live.wal.close()  # no close() of the store: it would write the lazy commit
        return self.fs.crash()

    def recover(self) -> DiskStorage:
        self.live.wal.close()
        self.live = DiskStorage(self.dir, segment_size=SEGMENT, fs=self.fs)
        return self.live
