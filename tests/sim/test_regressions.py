"""Seeds that once failed, replayed forever.

Each entry says what went wrong.  A seed here must run clean; if one fails
again, ``python -m liferaft.sim --seed S`` replays it.  The issue-11 seeds
failed on the core as it was at c5e4eb9, run by the simulator as it was at
b540b97 (default 5-node mix, 6000 steps); the simulator's schedules have
grown since, so they now guard less than the planted bugs of
tests/sim/test_planted_bugs.py, which are searched for afresh.  The tests of
each fix are named in the comments.
"""

from __future__ import annotations

import pytest

from liferaft.sim import run_seed
from liferaft.sim.bugs import planted

REGRESSIONS = {
    # A checker false alarm found by `make sim`: an election for term 11 ended
    # late, after an entry had been committed in term 12, and the checker
    # demanded that entry of the term-11 leader.  Leader Completeness only
    # binds leaders of later terms; the checker now tracks the commit term.
    4315: "late election of an older term",
    # Issue 11, defect 2: a sole voter (the cluster grew from one) counted its
    # own unsynced entry, committed it and told its learner; a crash erased
    # it and the learner had applied an entry that no longer existed.  Also
    # tests/core/testdata/single_node.txt.
    238: "single-voter commit reached a learner before the leader's fsync",
    # Issue 11, defect 3: leases through transfers (tests/core/test_lease.py,
    # lease_transfer_cancel.txt, transfer_keeps_leader_clock.txt).
    10: "lease read on a leader whose cancelled transfer's target had won",
    277: "lease read after transfers started and cancelled on a cut-off leader",
    242: "lease read built on acknowledgements the leader never received",
    # Issue 11, defect 4: read contexts reused (read_index_contexts.txt,
    # tests/core/test_read_index.py).
    4: "a duplicated ReadIndexResponse answered a later read with the same ctx",
}


@pytest.mark.parametrize("seed", sorted(REGRESSIONS))
def test_regression_seed_runs_clean(seed: int) -> None:
    r = run_seed(seed, nodes=5, steps=6000)
    assert r.violation is None, f"{REGRESSIONS[seed]}: {r.violation}"
    assert r.liveness_failure is None, f"{REGRESSIONS[seed]}: {r.liveness_failure}"


# Issue 11, defect 1: with the commit index lazy around membership changes
# (the planted bug restores the old DiskStorage behaviour), a node that
# crashed came back two configurations behind, after joint changes that
# replaced a majority or while a cluster grew from one voter, and two leaders
# were elected in a term or two entries committed at one index.  Fixed by
# rules 4 and 5 of liferaft.storage.durability (docs/core.md).  Which seed
# shows it moves whenever the simulator's schedules change, so the test
# finds the first one, then runs that seed without the bug.
def test_a_seed_the_lazy_commit_breaks_runs_clean_with_the_fix() -> None:
    with planted("majority-replace-stale-conf") as configure:
        for seed in range(300):
            r = run_seed(seed, nodes=5, steps=6000, configure=configure)
            if r.violation:
                break
        else:
            pytest.fail("the planted lazy commit went unnoticed for 300 seeds")
    assert "safety" in r.violation, r.violation
    clean = run_seed(seed, nodes=5, steps=6000)
    assert clean.violation is None and clean.liveness_failure is None, clean
