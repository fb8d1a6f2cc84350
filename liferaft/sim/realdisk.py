"""RealDisk: a simulated node's disk backed by liferaft.storage on real files.

The simulator decides what a crash loses: writes queue up as *unsynced*
until ``sync()`` hands them to :class:`~liferaft.storage.DiskStorage`.  On a
crash a random prefix of the queue reaches the files (the kernel flushed
that much), the next append may be torn part-way, and garbage bytes of a
half-written record may follow; then the store is reopened from the
directory, exactly as after a real restart.  The core reads the same
DiskStorage a real node would.
"""

from __future__ import annotations

import random
from pathlib import Path

from liferaft.core import ConfState, Entry, HardState, MemoryStorage, Snapshot
from liferaft.storage import DiskStorage

SEGMENT = 4096


class RealDisk:
    def __init__(self, initial: MemoryStorage, directory: Path) -> None:
        self.dir = directory
        st = DiskStorage(directory, segment_size=SEGMENT)
        snap = initial.snapshot()
        if snap.index and st.snap_meta.index < snap.index:
            st.apply_snapshot(snap)
        if initial.hard_state != HardState() and st.hard_state == HardState():
            st.hard.save(initial.hard_state)
        self.live = st
        self.unsynced: list[tuple[str, object]] = []
        self.syncs = 0
        self.persist_vote = True

    def set_hard_state(self, hs: HardState) -> None:
        if not self.persist_vote:
            hs = HardState(hs.term, None, hs.commit)
        self.unsynced.append(("hs", hs))

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.unsynced.append(("snap", snap))

    def append(self, entries: list[Entry]) -> None:
        if entries:
            self.unsynced.append(("append", list(entries)))

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        self.sync()
        meta = self.live.create_snapshot(index, conf, data)
        return Snapshot(meta, data)

    def compact(self, index: int) -> None:
        self.live.compact(index)

    def _apply(self, kind: str, arg: object) -> None:
        st = self.live
        if kind == "hs":
            assert isinstance(arg, HardState)
            st.hard.save(arg)
        elif kind == "snap":
            assert isinstance(arg, Snapshot)
            st.apply_snapshot(arg)
        else:
            assert isinstance(arg, list)
            st.wal.append(arg, sync=True)

    def sync(self) -> None:
        for kind, arg in self.unsynced:
            self._apply(kind, arg)
        self.unsynced.clear()
        self.syncs += 1

    def crash(self, rng: random.Random) -> int:
        n = rng.randint(0, len(self.unsynced)) if self.unsynced else 0
        for kind, arg in self.unsynced[:n]:
            self._apply(kind, arg)
        if n < len(self.unsynced) and self.unsynced[n][0] == "append":
            ents = self.unsynced[n][1]
            assert isinstance(ents, list)
            k = rng.randint(0, len(ents))
            if k:
                self.live.wal.append(ents[:k], sync=True)
            segs = sorted((self.dir / "wal").glob("*.wal"))
            if segs and rng.random() < 0.5:
                with open(segs[-1], "ab") as f:  # half a record reached the disk
                    f.write(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40))))
        self.unsynced.clear()
        self.live.close()
        return n

    def recover(self) -> DiskStorage:
        self.live.close()
        self.live = DiskStorage(self.dir, segment_size=SEGMENT)
        return self.live
