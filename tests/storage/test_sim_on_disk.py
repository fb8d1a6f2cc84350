"""The simulator's crash schedules on real files: the core over DiskStorage.

``run_seed(disk="real")`` (``python -m liferaft.sim --disk real``) gives each
node a RealDisk: DiskStorage itself, saving every Ready step by step on real
files under the FaultFS fault layer.  A crash (between Readies, or inside a
save) keeps a random prefix of each file's unsynced bytes, tearing the last
write, may undo a rename whose directory was not fsynced, and loses the lazy
commit index DiskStorage holds in memory; then the node restarts from its
data directory.  Every safety checker runs after every step, as on the
in-memory model disk, which keeps exactly the same things.
"""

from __future__ import annotations

import pytest

from liferaft.sim.bugs import planted
from liferaft.sim.runner import run_seed


@pytest.mark.parametrize("seed", range(8))
def test_crash_schedules_on_real_storage(seed: int) -> None:
    profile = ["crashy", "mixed", "grow", "churn"][seed % 4]
    r = run_seed(seed, nodes=3 + 2 * (seed % 2), steps=3000, profile=profile, disk="real")
    assert r.violation is None, r.violation
    assert r.liveness_failure is None, r.liveness_failure
    assert r.commits > 0 and sum(r.faults.values()) > 0


def test_the_lazy_commit_bug_is_caught_on_real_files_too() -> None:
    """The lazy commit index around membership changes (issue 11, defect 1)
    splits a cluster on files as it does on the model disk, and the seed
    that shows it runs clean with the commit made durable.  On the grow
    profile (docs/simulator.md), whose one-at-a-time changes with crashes
    right after them are where a lazily persisted commit index bites."""
    with planted("majority-replace-stale-conf") as configure:
        for seed in range(300):
            r = run_seed(
                seed, nodes=5, steps=6000, profile="grow", configure=configure, disk="real"
            )
            if r.violation:
                break
        else:
            pytest.fail("the planted lazy commit went unnoticed on real files")
    assert "safety" in r.violation, r.violation
    clean = run_seed(seed, nodes=5, steps=6000, profile="grow", disk="real")
    assert clean.violation is None and clean.liveness_failure is None, clean
