"""The simulator's crash schedules on real files: the core over DiskStorage.

Each node's disk is a RealDisk: the WAL and hard state on real files under
the FaultFS fault layer.  A crash (between Readies, or between a Ready's
writes and its sync) keeps a random prefix of each file's unsynced bytes,
tearing the last write, and may undo a rename whose directory was not
fsynced; then the node restarts from its data directory.  Every safety
checker runs after every step, as in the in-memory simulator.  (fsync itself
is stubbed out: the fault layer, not the kernel, decides what survives, and
the run stays fast.)
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from liferaft.sim.realdisk import RealDisk
from liferaft.sim.runner import run_seed


@pytest.mark.parametrize("seed", range(8))
def test_crash_schedules_on_real_storage(
    seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)
    profile = ["crashy", "mixed"][seed % 2]

    def on_files(c) -> None:  # type: ignore[no-untyped-def]
        c.disk_factory = lambda nid, initial: RealDisk(
            initial, tmp_path / nid, random.Random(f"{seed}:{nid}")
        )
        for nid, node in list(c.nodes.items()):
            node.disk = c.disk_factory(nid, node.disk.durable)
            node.alive = False
            c.start(nid)

    r = run_seed(seed, nodes=3, steps=2500, profile=profile, configure=on_files)
    assert r.violation is None, r.violation
    assert r.liveness_failure is None, r.liveness_failure
    assert r.commits > 0 and sum(r.faults.values()) > 0
