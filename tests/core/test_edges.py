"""Edge cases of the core API: misuse, malformed data, restart paths.

Each test names the contract it checks; together with the paper tests they
keep every branch of liferaft/core exercised.
"""

from __future__ import annotations

import random

import pytest

from liferaft.core import (
    ConfChange,
    ConfChangeError,
    Config,
    ConfigError,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    MemoryStorage,
    RaftError,
    RawNode,
    ReadOnlyOption,
    Role,
    SnapshotTemporarilyUnavailableError,
    TimeoutNow,
    Transition,
    add_learner,
    add_voter,
    apply_conf_change,
    remove_node,
)
from liferaft.core.confchange import check_invariants
from liferaft.core.progress import Progress, ProgressState

from .netutil import ack_all, drain, node_with_log, win_election

N3 = ["n1", "n2", "n3"]


def leader_of_one() -> tuple[RawNode, MemoryStorage]:
    st = MemoryStorage.bootstrap(["n1"])
    rn = RawNode(Config(id="n1", rng=random.Random(1)), st)
    rn.campaign()
    handle(rn, st)
    assert rn.role is Role.LEADER
    return rn, st


def handle(rn: RawNode, st: MemoryStorage) -> list[Entry]:
    applied: list[Entry] = []
    while rn.has_ready():
        rd = rn.ready()
        st.save(rd.hard_state, rd.entries, rd.snapshot)
        applied += rd.committed_entries
        rn.advance()
    return applied


# -- confchange ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"not json", b'{"c": [[7, "n1"]], "t": 0, "x": ""}', b'{"c": [], "t": 0}', b"[]"],
)
def test_malformed_conf_change_payload_is_a_typed_error(raw: bytes) -> None:
    with pytest.raises(ConfChangeError, match="malformed"):
        ConfChange.decode(raw)


def test_conf_change_round_trips() -> None:
    cc = ConfChange((add_voter("a"), remove_node("b")), Transition.JOINT_EXPLICIT, b"\x01")
    assert ConfChange.decode(cc.encode()) == cc


@pytest.mark.parametrize(
    ("cs", "msg"),
    [
        (ConfState(voters=frozenset({"a"}), learners=frozenset({"a"})), "also voters"),
        (ConfState(voters=frozenset({"a"}), learners_next=frozenset({"b"})), "outgoing"),
        (
            ConfState(
                voters=frozenset({"a"}),
                voters_outgoing=frozenset({"b"}),
                learners=frozenset({"b2"}),
                learners_next=frozenset({"b"}),
            ),
            None,
        ),
        (ConfState(voters=frozenset({"a"}), auto_leave=True), "auto_leave"),
    ],
)
def test_check_invariants(cs: ConfState, msg: str | None) -> None:
    if msg is None:
        check_invariants(cs)
    else:
        with pytest.raises(ConfChangeError, match=msg):
            check_invariants(cs)


def test_learner_and_learner_next_overlap_is_invalid() -> None:
    cs = ConfState(
        voters=frozenset({"a"}),
        voters_outgoing=frozenset({"b"}),
        learners=frozenset({"b"}),
        learners_next=frozenset({"b"}),
    )
    with pytest.raises(ConfChangeError):
        check_invariants(cs)


def test_empty_node_id_and_zero_voter_joint_are_refused() -> None:
    with pytest.raises(ConfChangeError, match="empty node id"):
        apply_conf_change(ConfState(voters=frozenset({"a"})), ConfChange((add_voter(""),)))
    with pytest.raises(ConfChangeError, match="zero voters"):
        apply_conf_change(
            ConfState(), ConfChange((add_voter("a"), add_voter("b")), Transition.JOINT)
        )


def test_demoting_a_voter_in_joint_lands_in_learners_next() -> None:
    cs = ConfState(voters=frozenset({"a", "b", "c"}))
    joint = apply_conf_change(cs, ConfChange((add_learner("c"), add_voter("d")), Transition.JOINT))
    assert joint.learners_next == {"c"} and "c" in joint.voters_outgoing
    left = apply_conf_change(joint, ConfChange())
    assert left.learners == {"c"} and left.voters == {"a", "b", "d"}


# -- RawNode misuse ---------------------------------------------------------------


def test_ready_twice_and_advance_without_ready_raise() -> None:
    rn, st = leader_of_one()
    rn.propose(b"x")
    rn.ready()
    with pytest.raises(RaftError, match="twice"):
        rn.ready()
    assert not rn.has_ready()  # nothing new until advance()
    rn.advance()
    with pytest.raises(RaftError, match="without an outstanding"):
        rn.advance()


def test_read_index_needs_a_ctx() -> None:
    rn, _ = leader_of_one()
    with pytest.raises(RaftError, match="ctx"):
        rn.read_index(b"")


def test_propose_many_appends_in_order_and_commits() -> None:
    rn, st = leader_of_one()
    before = rn.status().last_index
    assert rn.propose_many([]) == before
    last = rn.propose_many([b"a", b"b", b"c"])
    assert last == before + 3
    applied = handle(rn, st)
    assert [e.data for e in applied] == [b"a", b"b", b"c"]


def test_report_unreachable_moves_a_replicating_peer_to_probe() -> None:
    st = MemoryStorage.bootstrap(N3)
    rn = RawNode(Config(id="n1", rng=random.Random(3)), st)
    rn.raft.become_candidate()
    rn.raft.become_leader()
    pr = rn.raft.tracker.progress["n2"]
    pr.become_replicate()
    rn.report_unreachable("n2")
    assert pr.state is ProgressState.PROBE
    rn.report_unreachable("nobody")  # unknown peers are ignored


def test_invalid_transitions_are_programming_errors() -> None:
    rn, _ = leader_of_one()
    with pytest.raises(AssertionError):
        rn.raft.become_pre_candidate()
    with pytest.raises(AssertionError):
        rn.raft.become_candidate()
    follower = RawNode(Config(id="n2", rng=random.Random(1)), MemoryStorage.bootstrap(N3))
    with pytest.raises(AssertionError):
        follower.raft.become_leader()


def test_a_malformed_conf_change_entry_is_ignored_when_applied() -> None:
    """Every node ignores an undecodable change alike, so they stay in step."""
    rn, st = leader_of_one()
    conf = rn.conf_state()
    rn.raft.append_entries([Entry(0, 0, b"garbage", EntryType.CONF_CHANGE)])
    rn.raft.bcast_pending = True
    handle(rn, st)
    assert rn.conf_state() == conf


def test_an_invalid_committed_conf_change_is_ignored() -> None:
    rn, st = leader_of_one()
    conf = rn.conf_state()
    bad = ConfChange()  # leave-joint while not joint
    rn.raft.append_entries([Entry(0, 0, bad.encode(), EntryType.CONF_CHANGE)])
    handle(rn, st)
    assert rn.conf_state() == conf


# -- restart paths ----------------------------------------------------------------


class _NoSnapshotYet(MemoryStorage):
    def snapshot(self):  # type: ignore[no-untyped-def]
        raise SnapshotTemporarilyUnavailableError("being written")


def test_restart_when_the_snapshot_is_temporarily_unavailable() -> None:
    st = _NoSnapshotYet()
    st._ents = [Entry(0, 0), Entry(1, 1), Entry(2, 1)]
    st.set_hard_state(HardState(term=1, vote=None, commit=2))
    rn = RawNode(Config(id="n1", rng=random.Random(1)), st)
    assert rn.status().commit == 2 and rn.status().applied == 0


def test_restart_with_applied_skips_reapplying() -> None:
    st = MemoryStorage()
    st.append([Entry(1, 1, b"a"), Entry(2, 1, b"b"), Entry(3, 1, b"c")])
    st.set_hard_state(HardState(term=1, vote="n1", commit=3))
    rn = RawNode(Config(id="n1", rng=random.Random(1), applied=2), st)
    assert rn.status().applied == 2
    rd = rn.ready()
    assert [e.index for e in rd.committed_entries] == [3]


def test_restart_with_a_commit_past_the_log_refuses_to_start() -> None:
    st = MemoryStorage()
    st.append([Entry(1, 1)])
    st.set_hard_state(HardState(term=1, vote=None, commit=5))
    with pytest.raises(ConfigError, match="lost entries"):
        RawNode(Config(id="n1"), st)


def test_progress_repr_names_the_state() -> None:
    pr = Progress(5, 4, is_learner=True)
    assert "probe" in repr(pr) and "learner" in repr(pr)


# -- lease reads: when the lease may be trusted (leader.lease_valid) ----------------


def _lease_leader() -> tuple[RawNode, MemoryStorage]:
    node, st = node_with_log(voters=N3, read_only=ReadOnlyOption.LEASE_BASED)
    ack_all(node, st, win_election(node, st).messages)
    return node, st


def test_lease_read_inside_the_first_half_of_the_window_is_immediate() -> None:
    node, st = _lease_leader()
    node.read_index(b"a")
    assert drain(node, st).read_states != []


def test_lease_read_in_the_second_half_of_the_window_confirms_with_a_quorum() -> None:
    """Followers reset their timers at most half a timeout ago only while the
    window is young; later, the read takes a heartbeat round instead."""
    node, st = _lease_leader()
    while node.raft.election_elapsed < node.raft.election_timeout // 2:
        node.tick()
        drain(node, st)
    node.read_index(b"late")
    rd = drain(node, st)
    assert rd.read_states == []
    # A heartbeat round named by the leader's own token (not the reader's ctx).
    assert {m.to for m in rd.messages if isinstance(m, Heartbeat) and m.ctx} == {"n2", "n3"}


def test_no_lease_read_during_a_leadership_transfer() -> None:
    """TimeoutNow elections ignore the followers' lease, so the old leader's
    lease means nothing once a transfer has started."""
    node, st = _lease_leader()
    node.transfer_leader("n2")
    rd = drain(node, st)
    assert any(isinstance(m, TimeoutNow) for m in rd.messages)
    node.read_index(b"t")
    rd = drain(node, st)
    assert rd.read_states == []
    assert {m.to for m in rd.messages if isinstance(m, Heartbeat) and m.ctx} == {"n2", "n3"}
