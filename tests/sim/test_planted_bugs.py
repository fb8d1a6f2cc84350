"""The checkers can fail: every planted bug is caught within a bounded number of seeds.

A checker that never fires proves nothing.  Each test plants one classic Raft
mistake (liferaft/sim/bugs.py) and runs random seeds of the simulator until
a safety violation or a liveness failure shows up.  The budget is several
times the seed count at which the bug is first caught today, so a harmless
change to the random streams does not break the test, but a checker that
went blind does.

A control test runs the same seeds without the bug, so a catch is the bug's
doing and not a false alarm.
"""

from __future__ import annotations

import pytest

from liferaft.core import ConfChange, remove_node
from liferaft.sim import Cluster, SafetyViolation, run_seed
from liferaft.sim.bugs import BUGS, planted

# bug -> (profile, nodes, seed budget, what catches it)
CASES = {
    "commit-prior-term": ("figure8", 3, 300, "violation"),
    "forget-vote": ("crashy", 3, 300, "violation"),
    "truncate-on-overlap": ("mixed", 5, 20, "violation"),
    "goraft-vote": ("stale", 5, 300, "liveness"),
    "ack-before-persist": ("crashy", 3, 100, "violation"),
}


def first_caught(bug: str, profile: str, nodes: int, budget: int) -> tuple[int, str] | None:
    with planted(bug) as configure:
        for seed in range(budget):
            r = run_seed(seed, nodes=nodes, steps=4000, profile=profile, configure=configure)
            if r.violation:
                return seed, "violation: " + r.violation
            if r.liveness_failure:
                return seed, "liveness: " + r.liveness_failure
    return None


@pytest.mark.parametrize("bug", sorted(CASES))
def test_planted_bug_is_caught(bug: str) -> None:
    profile, nodes, budget, kind = CASES[bug]
    found = first_caught(bug, profile, nodes, budget)
    assert found is not None, f"{bug} went unnoticed for {budget} seeds ({profile}, {nodes} nodes)"
    seed, what = found
    assert what.startswith(kind), f"{bug} caught at seed {seed}, but as {what}"


def test_every_bug_has_a_test() -> None:
    assert set(BUGS) == set(CASES) | {"two-conf-changes"}


def test_unknown_bug_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown bug"), planted("no-such-bug"):
        pass


def test_control_same_seeds_without_bugs_are_clean() -> None:
    for profile, nodes, _, _ in CASES.values():
        for seed in range(3):
            r = run_seed(seed, nodes=nodes, steps=4000, profile=profile)
            assert r.violation is None and r.liveness_failure is None, (profile, seed, r)


def _two_changes_in_flight(seed: int) -> Cluster:
    """Two removals in flight, then a partition at the worst moment.

    Five voters, leader n1.  n1 proposes "remove n5" and then "remove n4".
    Both entries reach n2 and n4, which acknowledge them; n1 commits and
    applies both, so n1 now runs with {n1, n2, n3} and commits with n2 alone.
    n4 never hears that the entries committed (its link from n1 is cut right
    after it stores them), so it still uses {n1..n5}, and with n3 and n5 it
    forms a majority of that configuration on the other side of a partition.
    Only the one-change-at-a-time rule keeps these two majorities from
    committing different entries at the same index.
    """
    ids = [f"n{i}" for i in range(1, 6)]
    c = Cluster(ids, seed)
    assert c.run_until(lambda: c.leader() is not None, 5000)
    ld = c.leader()
    assert ld is not None
    others = [n for n in ids if n != ld]
    a, b, x, y = others  # a, b acknowledge; x stays behind; y and b are removed
    c.partition([ld, a, b], [x, y])
    for i in range(3):
        c.propose(ld, f"warm{i}".encode())
    c.run_for(200)
    first = c.propose_conf_change(ld, ConfChange((remove_node(y),)))
    assert first is not None
    second = c.propose_conf_change(ld, ConfChange((remove_node(b),)))
    # The correct core refuses the second change; the scenario goes on alike.
    last = second if second is not None else first
    want = {ld, a, x} if second is not None else {ld, a, b, x}
    assert c.run_until(lambda: c.rn(b).raft.log.last_index() >= last, 1000)
    c.cut.add((ld, b))  # b stores the entries but never learns they committed
    assert c.run_until(lambda: c.rn(ld).conf_state().voters == want, 1000)
    c.partition([ld, a], [b, x, y])
    for i in range(40):
        c.propose(ld, f"after{i}".encode())
        c.run_for(50)
    c.run_for(3000)
    return c


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_conf_changes_in_flight_split_brain(seed: int) -> None:
    with pytest.raises(SafetyViolation), planted("two-conf-changes"):
        _two_changes_in_flight(seed)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_conf_changes_scenario_is_safe_with_the_rule(seed: int) -> None:
    c = _two_changes_in_flight(seed)  # raises SafetyViolation if the core were wrong
    assert c.checker is not None and c.checker.violations == []
    # The dangerous election did happen: someone on the far side led a term.
    first_leader = c.checker.leaders[min(c.checker.leaders)]
    assert any(n != first_leader for n in c.checker.leaders.values())
