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


def test_real_and_model_disks_lose_the_same_things() -> None:
    """The lazy commit index around membership changes (issue 11, defect 1):
    the seed that splits the cluster on the model disk splits it on files
    too, and runs clean on both with the commit made durable."""
    for disk in ("memory", "real"):
        with planted("majority-replace-stale-conf") as configure:
            r = run_seed(60, nodes=5, steps=6000, configure=configure, disk=disk)
        assert r.violation is not None and "safety" in r.violation, (disk, r.violation)
        clean = run_seed(60, nodes=5, steps=6000, disk=disk)
        assert clean.violation is None and clean.liveness_failure is None, (disk, clean)
