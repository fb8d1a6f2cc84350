"""Hypothesis properties: quorum, membership changes and the in-flight window,
each checked against a naive reference written the obvious way."""

from __future__ import annotations

from itertools import combinations

from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.core import (
    ChangeType,
    ConfChange,
    ConfChangeError,
    ConfChangeSingle,
    ConfState,
    Transition,
    apply_conf_change,
)
from liferaft.core.confchange import check_invariants, is_joint
from liferaft.core.progress import Inflights
from liferaft.core.quorum import (
    UNBOUNDED,
    VoteResult,
    joint_committed,
    joint_vote,
    majority_committed,
    majority_vote,
)

IDS = ["a", "b", "c", "d", "e", "f", "g"]
voters_st = st.frozensets(st.sampled_from(IDS), max_size=7)
match_st = st.dictionaries(st.sampled_from(IDS), st.integers(0, 20), max_size=7)
votes_st = st.dictionaries(st.sampled_from(IDS), st.booleans(), max_size=7)


def naive_committed(voters: frozenset[str], match: dict[str, int]) -> int:
    """The largest index i such that a strict majority of voters has >= i."""
    if not voters:
        return UNBOUNDED
    best = 0
    for i in range(0, 21):
        if sum(1 for v in voters if match.get(v, 0) >= i) * 2 > len(voters):
            best = i
    return best


def naive_vote(voters: frozenset[str], votes: dict[str, bool]) -> VoteResult:
    """Won if some majority granted; lost if no majority can still grant."""
    if not voters:
        return VoteResult.WON
    q = len(voters) // 2 + 1
    yes = {v for v in voters if votes.get(v) is True}
    maybe = {v for v in voters if votes.get(v) is not False}
    if any(set(c) <= yes for c in combinations(sorted(voters), q)):
        return VoteResult.WON
    if any(set(c) <= maybe for c in combinations(sorted(voters), q)):
        return VoteResult.PENDING
    return VoteResult.LOST


@given(voters_st, match_st)
def test_majority_committed_matches_reference(voters, match) -> None:
    assert majority_committed(voters, match) == naive_committed(voters, match)


@given(voters_st, voters_st, match_st)
def test_joint_committed_is_the_min_of_both_halves(incoming, outgoing, match) -> None:
    got = joint_committed(incoming, outgoing, match)
    want = min(naive_committed(incoming, match), naive_committed(outgoing, match))
    assert got == want


@given(voters_st, votes_st)
def test_majority_vote_matches_reference(voters, votes) -> None:
    assert majority_vote(voters, votes) is naive_vote(voters, votes)


@given(voters_st, voters_st, votes_st)
def test_joint_vote_needs_both_halves(incoming, outgoing, votes) -> None:
    a, b = naive_vote(incoming, votes), naive_vote(outgoing, votes)
    if a is VoteResult.WON and b is VoteResult.WON:
        want = VoteResult.WON
    elif VoteResult.LOST in (a, b):
        want = VoteResult.LOST
    else:
        want = VoteResult.PENDING
    assert joint_vote(incoming, outgoing, votes) is want


change_st = st.builds(ConfChangeSingle, st.sampled_from(list(ChangeType)), st.sampled_from(IDS))
cc_st = st.builds(
    ConfChange,
    st.lists(change_st, max_size=3).map(tuple),
    st.sampled_from(list(Transition)),
)


@settings(max_examples=200)
@given(st.lists(cc_st, max_size=12))
def test_conf_changes_keep_invariants_and_never_mutate(ccs) -> None:
    """Whatever sequence is proposed, accepted changes yield well-formed
    configurations, refusals leave the old one in force, the input object is
    never modified, and a simple change moves at most one voter."""
    cs = ConfState(voters=frozenset({"a", "b", "c"}))
    for cc in ccs:
        before = cs
        snapshot = (cs.voters, cs.learners, cs.voters_outgoing, cs.learners_next)
        try:
            nxt = apply_conf_change(cs, cc)
        except ConfChangeError:
            nxt = cs
        assert (cs.voters, cs.learners, cs.voters_outgoing, cs.learners_next) == snapshot
        check_invariants(nxt)
        assert nxt.voters, "a configuration never loses every voter"
        if nxt is not before and not is_joint(nxt) and not is_joint(before):
            assert len(nxt.voters ^ before.voters) <= 1
        if is_joint(nxt) and not is_joint(before):
            assert nxt.voters_outgoing == before.voters
        cs = nxt


@given(
    st.integers(1, 8),
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(1, 50)),
            st.tuples(st.just("free"), st.integers(0, 60)),
            st.tuples(st.just("free1"), st.just(0)),
        ),
        max_size=40,
    ),
)
def test_inflights_match_a_plain_list(cap, ops) -> None:
    inf = Inflights(cap)
    model: list[int] = []
    last = 0
    for op, n in ops:
        if op == "add":
            if inf.full():
                assert len(model) >= cap
                continue
            last += n
            inf.add(last, n)
            model.append(last)
        elif op == "free":
            inf.free_le(n)
            model = [i for i in model if i > n]
        else:
            inf.free_first_one()
            model = model[1:]
        assert len(inf) == len(model)
        assert inf.full() == (len(model) >= cap)
