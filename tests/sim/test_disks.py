"""The simulator's two disks lose the same things in a crash.

SimDisk (a model, fast) and RealDisk (DiskStorage itself on files under
FaultFS) both run liferaft.storage.durability's plan; a crash inside a save
must leave the same *set* of possible logs on both.  The case here is the
subtle one: a Ready whose entries replace a conflicting suffix.  The WAL cuts
that suffix off durably before it writes, so a crash during the append can
leave the suffix gone and none of its replacement.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

from liferaft.core import Entry, HardState, MemoryStorage
from liferaft.sim.disk import DiskCrashed, NodeDisk, SimDisk
from liferaft.sim.realdisk import RealDisk

# Each longer than a sector: a preallocated segment is torn on sector
# boundaries (a disk writes a sector whole), so two small records in one
# sector land together or not at all; these can land one without the other.
NEW = [Entry(3, 2, b"new3" * 150), Entry(4, 2, b"new4" * 150)]


def _base() -> MemoryStorage:
    m = MemoryStorage.bootstrap(["n1", "n2", "n3"])
    m.append([Entry(i, 1, b"old%d" % i) for i in range(2, 7)])
    m.hard_state = HardState(1, None, 1)
    return m


def _after_crash(disk: NodeDisk, seed: int) -> tuple[tuple[int, int], ...]:
    disk.arm_crash(random.Random(seed))
    with contextlib.suppress(DiskCrashed):  # a crash at the very end is no crash at all
        disk.save(HardState(2, None, 1), NEW, None)
    disk.crash(random.Random(seed))
    st = disk.recover()
    return tuple((i, st.term(i)) for i in range(2, st.last_index() + 1))


def test_a_torn_append_over_a_conflicting_suffix(tmp_path: Path) -> None:
    model, real = set(), set()
    for seed in range(80):
        model.add(_after_crash(SimDisk(_base()), seed))
        b = _base()
        disk = RealDisk(b, tmp_path / str(seed), random.Random(seed))
        disk.live.save(None, b.entries(2, 7), None)  # the same durable log
        real.add(_after_crash(disk, seed))
    old = tuple((i, 1) for i in range(2, 7))
    expected = {
        old,  # the crash came before the step
        ((2, 1),),  # the suffix was cut off, nothing new landed
        ((2, 1), (3, 2)),  # one new entry landed
        ((2, 1), (3, 2), (4, 2)),  # the whole append (crash right after it)
    }
    assert model == expected
    assert real == expected
