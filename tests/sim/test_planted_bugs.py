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

# bug -> (profile, nodes, what catches it).  ``None`` is the default mix of
# profiles that `python -m liferaft.sim` runs.  Every bug must be caught
# within SEED_BUDGET seeds counted from seed 0, as
# `python -m liferaft.sim --seeds 300 --bug NAME [--nodes N --profile P]`
# would run them; the test runs that whole range (stopping at the first
# catch), never a seed known to be bad.
CASES: dict[str, tuple[str | None, int, str]] = {
    "commit-prior-term": ("figure8", 3, "violation"),
    "forget-vote": (None, 5, "violation"),
    "truncate-on-overlap": (None, 5, "violation"),
    "goraft-vote": ("stale", 5, "liveness"),
    "ack-before-persist": (None, 5, "violation"),
    # Crashes and vote races: a grant sent before its vote is on disk, then
    # a crash that forgets it.
    "vote-not-synced": ("crashy", 5, "violation"),
    "stale-snapshot": (None, 5, "violation"),
    "learner-in-quorum": ("grow", 5, "violation"),  # grows through learners
    # The grow profile (one voter, changes one at a time, crashes right after
    # them) is made for the lazily persisted commit index both of these need.
    "majority-replace-stale-conf": ("grow", 5, "violation"),
    "sole-voter-early-read": ("crashy", 1, "violation"),
    "count-unsynced-self": ("grow", 5, "violation"),
    "lease-survives-transfer": ("stale", 5, "violation"),
    "ctx-names-reads": (None, 5, "violation"),
    # The Figure 8 shape (leaders knocked out while others come back) leaves
    # followers holding another leader's entries: where this bug bites.
    "flush-commit-past-match": ("figure8", 5, "violation"),
}
SEED_BUDGET = 300
STEPS = 6000  # the command line's default


def first_caught(bug: str, profile: str | None, nodes: int, kind: str) -> tuple[int, str] | None:
    """The first seed in [0, SEED_BUDGET) whose run with ``bug`` planted ends
    in a failure of ``kind`` ("violation" or "liveness")."""
    with planted(bug) as configure:
        for seed in range(SEED_BUDGET):
            r = run_seed(seed, nodes=nodes, steps=STEPS, profile=profile, configure=configure)
            what = r.violation if kind == "violation" else r.liveness_failure
            if what:
                return seed, what
    return None


@pytest.mark.parametrize("bug", sorted(CASES))
def test_planted_bug_is_caught(bug: str) -> None:
    profile, nodes, kind = CASES[bug]
    found = first_caught(bug, profile, nodes, kind)
    assert found is not None, (
        f"{bug} went unnoticed (no {kind}) for {SEED_BUDGET} seeds "
        f"({profile or 'default mix'}, {nodes} nodes)"
    )


def test_every_bug_has_a_test() -> None:
    # Each of these has a targeted scenario below instead of a seed budget.
    assert set(BUGS) == set(CASES) | {"two-conf-changes", "lazy-conf-commit"}


def test_unknown_bug_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown bug"), planted("no-such-bug"):
        pass


def test_control_same_seeds_without_bugs_are_clean() -> None:
    # A seed's run is a function of (seed, nodes, profile): each distinct
    # run once (the cases share a few).
    for profile, nodes in sorted({(p, n) for p, n, _ in CASES.values()}, key=str):
        for seed in range(3):
            r = run_seed(seed, nodes=nodes, steps=STEPS, profile=profile)
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


def _removed_member_hears(seed: int) -> tuple[Cluster, str]:
    """A leader removes a follower while its host never flushes a pending
    commit (only ticks do).  The commit of the removal must still reach the
    removed member: the leader stops talking to it as soon as it applies the
    change, so a commit left pending would never get there, and the member
    would not know it is out (it would campaign forever, its operator would
    not know it may stop it).  Not a safety matter, which is why the seeds
    cannot catch ``lazy-conf-commit``: rule 4 of storage.durability, not
    the broadcast, keeps configurations safe."""
    ids = ["n1", "n2", "n3"]
    c = Cluster(ids, seed)
    c.commit_flush = "tick"
    assert c.run_until(lambda: c.leader() is not None, 5000)
    ld = c.leader()
    assert ld is not None
    gone = max(n for n in ids if n != ld)
    for i in range(3):
        c.propose(ld, f"w{i}".encode())
    c.run_for(200)
    assert c.propose_conf_change(ld, ConfChange((remove_node(gone),))) is not None
    c.run_for(500)
    assert gone not in c.rn(ld).conf_state().voters
    return c, gone


@pytest.mark.parametrize("seed", [1, 2])
def test_removed_member_hears_its_removal(seed: int) -> None:
    c, gone = _removed_member_hears(seed)
    assert gone not in c.rn(gone).conf_state().voters


@pytest.mark.parametrize("seed", [1, 2])
def test_lazy_conf_commit_leaves_the_removed_member_in_the_dark(seed: int) -> None:
    with planted("lazy-conf-commit"):
        c, gone = _removed_member_hears(seed)
    assert gone in c.rn(gone).conf_state().voters
