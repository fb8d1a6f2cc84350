"""Quorum arithmetic checked against brute-force references.

Complements test_quorum_props.py: match and vote maps here also name
non-members, joint commit indexes are found directly (not as a min of the
halves), and vote outcomes come from enumerating every completion.  The
references do not share any of the implementation's tricks (sorting,
counting the missing votes): a commit index is found by trying every
candidate index, and a vote outcome by enumerating every way the missing
voters could still answer.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.core.quorum import (
    UNBOUNDED,
    VoteResult,
    joint_committed,
    joint_vote,
    majority_committed,
    majority_vote,
)

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None)

IDS = ["a", "b", "c", "d", "e", "f", "g"]
voters_st = st.frozensets(st.sampled_from(IDS), max_size=7)
# Match indices may mention non-voters and omit voters (who then count as 0).
match_st = st.dictionaries(st.sampled_from([*IDS, "x", "y"]), st.integers(0, 12), max_size=9)
votes_st = st.dictionaries(st.sampled_from([*IDS, "x", "y"]), st.booleans(), max_size=9)


def brute_committed(voters, match) -> int:
    if not voters:
        return UNBOUNDED
    best = 0
    for i in range(0, max([0, *match.values()]) + 1):
        holders = [v for v in voters if match.get(v, 0) >= i]
        if 2 * len(holders) > len(voters):
            best = i
    return best


def brute_joint_committed(incoming, outgoing, match) -> int:
    if not incoming and not outgoing:
        return UNBOUNDED
    best = 0
    for i in range(0, max([0, *match.values()]) + 1):
        ok = all(
            not half or 2 * sum(match.get(v, 0) >= i for v in half) > len(half)
            for half in (incoming, outgoing)
        )
        if ok:
            best = i
    return best


def wins(voters, votes) -> bool:
    return 2 * sum(1 for v in voters if votes.get(v)) > len(voters) or not voters


def brute_vote(halves, votes) -> VoteResult:
    """Enumerate every completion of the missing votes of all halves."""
    everyone = sorted(set().union(*halves))
    missing = [v for v in everyone if v not in votes]
    outcomes = set()
    for answers in itertools.product([True, False], repeat=len(missing)):
        full = {**votes, **dict(zip(missing, answers, strict=True))}
        outcomes.add(all(wins(h, full) for h in halves))
    if outcomes == {True}:
        return VoteResult.WON
    if outcomes == {False}:
        return VoteResult.LOST
    return VoteResult.PENDING


@SETTINGS
@given(voters_st, match_st)
def test_majority_committed_matches_brute_force(voters, match):
    assert majority_committed(voters, match) == brute_committed(voters, match)


@SETTINGS
@given(voters_st, voters_st, match_st)
def test_joint_committed_matches_brute_force(incoming, outgoing, match):
    assert joint_committed(incoming, outgoing, match) == brute_joint_committed(
        incoming, outgoing, match
    )


@SETTINGS
@given(voters_st, match_st, st.sampled_from(IDS), st.integers(0, 20))
def test_committed_is_monotonic_in_match(voters, match, who, bump):
    """Acknowledging more never lowers the commit index."""
    before = majority_committed(voters, match)
    after = majority_committed(voters, {**match, who: match.get(who, 0) + bump})
    assert after >= before


@SETTINGS
@given(voters_st, votes_st)
def test_majority_vote_matches_brute_force(voters, votes):
    assert majority_vote(voters, votes) is brute_vote([voters], votes)


@SETTINGS
@given(voters_st, voters_st, votes_st)
def test_joint_vote_matches_brute_force(incoming, outgoing, votes):
    assert joint_vote(incoming, outgoing, votes) is brute_vote([incoming, outgoing], votes)


@SETTINGS
@given(voters_st, votes_st)
def test_plain_config_is_joint_with_empty_outgoing(voters, votes):
    assert joint_vote(voters, frozenset(), votes) is majority_vote(voters, votes)
    assert joint_vote(frozenset(), voters, votes) is majority_vote(voters, votes)


def test_quorum_examples():
    """Hand-checked cases, including the single-voter and empty shortcuts."""
    assert majority_committed(set(), {}) == UNBOUNDED
    assert majority_committed({"a"}, {"a": 7}) == 7
    assert majority_committed({"a"}, {}) == 0
    assert majority_committed({"a", "b"}, {"a": 5, "b": 3}) == 3
    assert majority_committed({"a", "b", "c"}, {"a": 5, "b": 3, "c": 1}) == 3
    assert majority_committed({"a", "b", "c", "d"}, {"a": 5, "b": 3, "c": 1}) == 1
    assert joint_committed({"a", "b", "c"}, set(), {"a": 5, "b": 3}) == 3
    assert joint_committed({"a", "b", "c"}, {"c", "d"}, {"a": 5, "b": 3, "c": 2, "d": 4}) == 2
    assert majority_vote(set(), {}) is VoteResult.WON
    assert majority_vote({"a", "b", "c"}, {"a": True}) is VoteResult.PENDING
    assert majority_vote({"a", "b", "c"}, {"a": True, "b": True}) is VoteResult.WON
    assert majority_vote({"a", "b", "c"}, {"a": False, "b": False}) is VoteResult.LOST
    assert majority_vote({"a", "b"}, {"a": True, "b": False}) is VoteResult.LOST
    assert joint_vote({"a"}, {"b", "c"}, {"a": True, "b": False}) is VoteResult.LOST
    assert joint_vote({"a"}, {"b", "c", "d"}, {"a": True, "b": False}) is VoteResult.PENDING
    assert joint_vote({"a"}, {"b", "c"}, {"a": False, "b": True}) is VoteResult.LOST
    assert joint_vote({"a"}, {"b", "c"}, {"a": True, "b": True}) is VoteResult.PENDING
    assert joint_vote({"a"}, {"b", "c"}, {"a": True, "b": True, "c": True}) is VoteResult.WON
