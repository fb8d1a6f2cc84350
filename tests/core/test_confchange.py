"""Membership changes (thesis §4.1 and §4.3): unit tables, a naive reference for
the next configuration, and invariants after random change sequences."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.core import (
    ChangeType,
    ConfChange,
    ConfChangeError,
    ConfChangeSingle,
    ConfState,
    Transition,
    add_learner,
    add_voter,
    apply_conf_change,
    remove_node,
)
from liferaft.core.confchange import check_invariants, is_joint

SETTINGS = settings(max_examples=250, deadline=None, derandomize=True, database=None)
IDS = ["a", "b", "c", "d", "e"]


def cs(voters=(), learners=(), outgoing=(), learners_next=(), auto_leave=False) -> ConfState:
    return ConfState(
        frozenset(voters),
        frozenset(learners),
        frozenset(outgoing),
        frozenset(learners_next),
        auto_leave,
    )


# -- unit tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "changes", "after"),
    [
        (cs("abc"), [add_voter("d")], cs("abcd")),
        (cs("abc"), [remove_node("c")], cs("ab")),
        (cs("abc"), [add_learner("d")], cs("abc", "d")),
        (cs("abc", "d"), [add_voter("d")], cs("abcd")),  # promotion
        (cs("abc"), [add_learner("c")], cs("ab", "c")),  # simple demotion
        (cs("abc", "d"), [remove_node("d")], cs("abc")),
        (cs("abc"), [remove_node("z")], cs("abc")),  # absent: no-op
        (cs("abc"), [add_voter("d"), remove_node("d")], cs("abc")),
        (cs("abc"), [add_voter("a")], cs("abc")),
    ],
)
def test_simple_changes(before, changes, after):
    """Thesis §4.1: "only one server can be added or removed from the cluster
    at a time" - such changes apply directly."""
    got = apply_conf_change(before, ConfChange(tuple(changes)))
    assert got == after and not is_joint(got)


def test_auto_enters_joint_when_more_than_one_voter_changes():
    """Thesis §4.3: arbitrary changes go through joint consensus."""
    got = apply_conf_change(cs("abc"), ConfChange((add_voter("d"), remove_node("a"))))
    assert got == cs("bcd", outgoing="abc", auto_leave=True)
    left = apply_conf_change(got, ConfChange())
    assert left == cs("bcd")


@pytest.mark.parametrize(
    ("transition", "auto_leave"), [(Transition.JOINT, True), (Transition.JOINT_EXPLICIT, False)]
)
def test_explicit_joint_even_for_one_change(transition, auto_leave):
    got = apply_conf_change(cs("abc"), ConfChange((add_voter("d"),), transition))
    assert got == cs("abcd", outgoing="abc", auto_leave=auto_leave)


def test_demotion_in_joint_goes_through_learners_next():
    """Thesis §4.3: a demoted voter keeps voting in C_old until C_new is in
    force, then becomes a learner."""
    got = apply_conf_change(
        cs("abc", "e"), ConfChange((add_learner("c"), add_voter("d")), Transition.JOINT)
    )
    assert got == cs("abd", "e", outgoing="abc", learners_next="c", auto_leave=True)
    assert apply_conf_change(got, ConfChange()) == cs("abd", "ce")


@pytest.mark.parametrize(
    ("before", "cc", "match"),
    [
        (cs("abc"), ConfChange(), "not in one"),
        (cs("ab", outgoing="abc"), ConfChange((add_voter("d"),)), "must be left"),
        (cs("a"), ConfChange((remove_node("a"),)), "every voter"),
        (cs("ab"), ConfChange((add_learner("a"), add_learner("b"))), "every voter"),
        (cs("abc"), ConfChange((add_voter(""),)), "empty node id"),
        (cs(learners="x"), ConfChange((add_voter("a"), add_voter("b"))), "zero voters"),
    ],
)
def test_invalid_changes_are_refused(before, cc, match):
    """Thesis §4.3: a configuration change may begin only outside the joint
    state, and must leave at least one voter."""
    with pytest.raises(ConfChangeError, match=match):
        apply_conf_change(before, cc)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (cs("ab", "a"), "also voters"),
        (cs("ab", outgoing="c", learners="c"), "also voters"),
        (cs("ab", outgoing="ab", learners_next="c"), "outgoing"),
        (cs("ab", auto_leave=True), "auto_leave"),
    ],
)
def test_check_invariants_rejects_malformed_states(bad, match):
    with pytest.raises(ConfChangeError, match=match):
        check_invariants(bad)


def test_check_invariants_accepts_well_formed_states():
    check_invariants(cs("abc", "d"))
    check_invariants(cs("ab", "d", outgoing="abc", learners_next="c", auto_leave=True))


# -- encoding ------------------------------------------------------------------------------

change_st = st.builds(
    ConfChangeSingle, st.sampled_from(list(ChangeType)), st.sampled_from([*IDS, "n/7", "ü"])
)
cc_st = st.builds(
    ConfChange,
    st.lists(change_st, max_size=4).map(tuple),
    st.sampled_from(list(Transition)),
    st.binary(max_size=8),
)


@SETTINGS
@given(cc_st)
def test_encode_decode_round_trip(cc):
    data = cc.encode()
    assert ConfChange.decode(data) == cc
    assert cc.encode() == data  # stable


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b"{}",
        b'{"c": [[0]], "t": 0, "x": ""}',
        b'{"c": [[9, "a"]], "t": 0, "x": ""}',
        b'{"c": [], "t": 7, "x": ""}',
        b'{"c": [], "t": 0, "x": "zz"}',
        b'{"c": [], "t": 0, "x": 5}',
        b'{"c": [[null, "a"]], "t": 0, "x": ""}',
    ],
)
def test_decode_rejects_malformed_input(data):
    with pytest.raises(ConfChangeError, match="malformed"):
        ConfChange.decode(data)


# -- reference model and invariants over random sequences ----------------------------------


def reference_next(before: ConfState, cc: ConfChange) -> ConfState | None:
    """The next configuration computed per node from its last change; None
    where the change must be refused."""
    if cc.leave_joint:
        if not before.voters_outgoing:
            return None
        return cs(before.voters, before.learners | before.learners_next)
    if before.voters_outgoing or any(not c.node_id for c in cc.changes):
        return None
    last = {c.node_id: c.type for c in cc.changes}
    voters = {n for n in before.voters if n not in last} | {
        n for n, t in last.items() if t is ChangeType.ADD_VOTER
    }
    learnerish = {n for n in before.learners if n not in last} | {
        n for n, t in last.items() if t is ChangeType.ADD_LEARNER
    }
    if not voters:
        return None
    if cc.transition is Transition.AUTO and len(voters ^ before.voters) <= 1:
        return cs(voters, learnerish)
    if not before.voters:
        return None
    demoted = learnerish & before.voters
    return cs(
        voters,
        learnerish - demoted,
        before.voters,
        demoted,
        auto_leave=cc.transition is not Transition.JOINT_EXPLICIT,
    )


base_st = st.builds(
    lambda v, ls: cs(v, ls - v),
    st.frozensets(st.sampled_from(IDS), min_size=1, max_size=4),
    st.frozensets(st.sampled_from(IDS), max_size=2),
)
single_st = st.builds(ConfChangeSingle, st.sampled_from(list(ChangeType)), st.sampled_from(IDS))
seq_cc_st = st.one_of(
    st.just(ConfChange()),
    st.builds(
        ConfChange, st.lists(single_st, max_size=4).map(tuple), st.sampled_from(list(Transition))
    ),
)


@SETTINGS
@given(base_st, st.lists(seq_cc_st, max_size=10))
def test_random_sequences_match_reference_and_keep_invariants(base, ccs):
    conf = base
    for cc in ccs:
        want = reference_next(conf, cc)
        try:
            got = apply_conf_change(conf, cc)
        except ConfChangeError:
            assert want is None, f"{cc} refused on {conf}"
            continue
        assert got == want
        check_invariants(got)
        assert got.voters
        # Joint states remember exactly the configuration they came from,
        # and only a joint state has learners_next or auto_leave.
        if is_joint(got):
            assert got.voters_outgoing == conf.voters and not is_joint(conf)
        else:
            assert not got.learners_next and not got.auto_leave
        # A node is in exactly one role of the incoming configuration.
        assert not (got.voters & got.learners)
        assert not (got.learners & got.learners_next)
        conf = got
