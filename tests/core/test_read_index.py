"""ReadIndex (thesis §6.4): the ReadOnly queue on its own, then the protocol
around it - pending reads of a new leader, forwarded reads, leadership
loss, and when a lease may stand in for the heartbeat round."""

from __future__ import annotations

import pytest

from liferaft.core import (
    HardState,
    Heartbeat,
    HeartbeatResponse,
    MemoryStorage,
    NotLeaderError,
    RawNode,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadOnlyOption,
    ReadState,
    Role,
)
from liferaft.core.read_index import ReadOnly, round_token

from .netutil import Network, ack_all, drain, make_config, node_with_log, win_election

N3 = ("n1", "n2", "n3")


# -- ReadOnly ------------------------------------------------------------------------------


def test_read_only_queue_confirms_in_arrival_order():
    """Thesis §6.4: a later heartbeat round confirms every earlier read too,
    because its heartbeats were sent after theirs.  Rounds are named by the
    leader's tokens (term and sequence number), never by the readers'
    contexts, which may repeat."""
    ro = ReadOnly(ReadOnlyOption.SAFE)
    assert ro.last_pending_token() == b""
    ta = ro.add_request(2, 5, b"a", "n1")
    tb = ro.add_request(2, 6, b"b", "n2")
    ta2 = ro.add_request(2, 7, b"a", "n3")  # the same ctx: a round of its own
    tc = ro.add_request(2, 8, b"c", "n1")
    assert len({ta, tb, ta2, tc}) == 4
    assert ta == round_token(2, 1) and tc == round_token(2, 4)
    assert ro.last_pending_token() == tc
    assert ro.recv_ack("n2", b"zz", 2) is None
    assert ro.recv_ack("n2", b"b", 2) is None  # a reader's ctx names no round
    assert ro.recv_ack("n2", tb, 3) is None  # a round of another term
    assert ro.recv_ack("n2", tb, 2) == {"n2"}
    assert ro.recv_ack("n3", tb, 2) == {"n2", "n3"}
    assert ro.advance(b"zz") == []
    done = ro.advance(tb)
    assert [(s.ctx, s.index, s.requester) for s in done] == [(b"a", 5, "n1"), (b"b", 6, "n2")]
    assert ro.queue == [ta2, tc] and list(ro.pending) == [ta2, tc]
    assert ro.advance(tb) == []
    assert ro.recv_ack("n2", tb, 2) is None  # a late answer to a finished round
    ro.lease_acks.add("n2")
    ro.lease_revoked = True
    ro.reset()
    assert ro.queue == [] and ro.pending == {} and ro.last_pending_token() == b""
    assert ro.lease_acks == set() and not ro.lease_revoked
    # A new leadership starts numbering again, under its own term.
    assert ro.add_request(4, 9, b"a", "n1") == round_token(4, 1)


# -- on a leader ---------------------------------------------------------------------------


def test_follower_read_waits_for_new_leaders_first_commit():
    """Thesis §6.4 step 1 applies to forwarded reads too: the answer waits
    until the leader has committed an entry of its term."""
    node, st = node_with_log(voters=N3)
    rd = win_election(node, st)
    node.step(ReadIndexRequest(node.term, "n2", "n1", b"f"))
    assert not [m for m in drain(node, st).messages if isinstance(m, Heartbeat) and m.ctx]
    rd2 = ack_all(node, st, rd.messages)
    hbs = [m for m in rd2.messages if isinstance(m, Heartbeat) and m.ctx]
    assert len(hbs) == 2
    node.step(HeartbeatResponse(node.term, "n3", "n1", hbs[0].ctx))
    rd3 = drain(node, st)
    assert rd3.messages == [ReadIndexResponse(node.term, "n1", "n2", b"f", 2)]
    assert rd3.read_states == []  # the leader itself did not ask


def test_pending_reads_are_dropped_when_leadership_is_lost():
    """Thesis §6.4 step 3: a leader that cannot confirm it still leads must
    not answer; after stepping down it never does."""
    node, st = node_with_log(voters=N3)
    rd = win_election(node, st)
    node.read_index(b"early")  # before the first commit
    ack_all(node, st, rd.messages)
    node.read_index(b"late")
    rounds = {m.ctx for m in drain(node, st).messages if isinstance(m, Heartbeat) and m.ctx}
    node.step(HeartbeatResponse(node.term + 1, "n2", "n1"))  # deposed
    assert node.role is Role.FOLLOWER
    for token in rounds:
        node.step(HeartbeatResponse(node.term, "n2", "n1", token))
        node.step(HeartbeatResponse(node.term, "n3", "n1", token))
    assert drain(node, st).read_states == []
    assert node.raft.read_only.pending == {} and node.raft.pending_reads == []


def test_leader_forwarded_read_answered_at_commit_index():
    """Thesis §6.4.1: "the follower issues a request to the leader to learn
    the current readIndex"; the index is the leader's commit index."""
    net = Network(N3)
    ld = net.elect("n1")
    for i in range(3):
        ld.propose(b"%d" % i)
    net.stabilize()
    net.nodes["n3"].read_index(b"q")
    net.stabilize()
    assert net.read_states["n3"] == [ReadState(ld.raft.log.committed, b"q")]
    assert net.nodes["n3"].raft.log.applied >= ld.raft.log.committed


def test_follower_without_leader_cannot_forward():
    net = Network(N3)
    n2 = net.nodes["n2"]
    assert n2.leader is None
    with pytest.raises(NotLeaderError) as exc:
        n2.read_index(b"x")
    assert exc.value.leader is None


# -- lease reads ---------------------------------------------------------------------------


def lease_leader():
    node, st = node_with_log(voters=N3, read_only=ReadOnlyOption.LEASE_BASED)
    ack_all(node, st, win_election(node, st).messages)
    return node, st


def test_lease_read_answers_forwarded_request_at_once():
    """Thesis §6.4.1: within its lease the leader answers without a round."""
    node, st = lease_leader()
    node.step(ReadIndexRequest(node.term, "n2", "n1", b"f", lease=True))
    rd = drain(node, st)
    assert rd.messages == [ReadIndexResponse(node.term, "n1", "n2", b"f", 2)]


def test_a_read_that_does_not_accept_a_lease_gets_a_heartbeat_round():
    """Lease reads are per request: on a leader that allows them, a reader
    asking for a linearizable read still gets a confirmed ReadIndex round,
    whether it asks locally or through a follower."""
    node, st = lease_leader()
    node.read_index(b"own", lease=False)
    node.step(ReadIndexRequest(node.term, "n2", "n1", b"fwd"))
    rd = drain(node, st)
    assert rd.read_states == []
    beats = [m for m in rd.messages if isinstance(m, Heartbeat)]
    assert {m.to for m in beats} == {"n2", "n3"}
    assert not any(isinstance(m, ReadIndexResponse) for m in rd.messages)
    node.read_index(b"leased", lease=True)
    rd = drain(node, st)
    assert [rs.ctx for rs in rd.read_states] == [b"leased"]


def test_without_lease_reads_configured_a_lease_request_is_confirmed():
    node, st = node_with_log(voters=N3)
    ack_all(node, st, win_election(node, st).messages)
    node.read_index(b"x", lease=True)
    rd = drain(node, st)
    assert rd.read_states == [] and any(isinstance(m, Heartbeat) for m in rd.messages)


def test_lease_read_falls_back_to_heartbeat_round_late_in_window():
    """Thesis §6.4.1: the lease is only as long as the followers' promise not
    to elect anyone; late in the check-quorum window the leader confirms with
    a heartbeat round instead."""
    node, st = lease_leader()
    for _ in range(node.raft.election_timeout // 2):
        node.tick()
        for m in drain(node, st).messages:
            if isinstance(m, Heartbeat):
                node.step(HeartbeatResponse(m.term, m.to, m.frm, m.ctx))
    node.read_index(b"late")
    rd = drain(node, st)
    assert rd.read_states == []
    hbs = [m for m in rd.messages if isinstance(m, Heartbeat) and m.ctx]
    assert len(hbs) == 2
    node.step(HeartbeatResponse(node.term, "n2", "n1", hbs[0].ctx))
    assert drain(node, st).read_states == [ReadState(2, b"late")]


def test_lease_read_not_used_during_leader_transfer():
    """Thesis §3.10: the transfer's election overrides the followers' lease
    promise, so a lease read must be confirmed by a round."""
    node, st = lease_leader()
    node.transfer_leader("n2")
    drain(node, st)
    node.read_index(b"t")
    rd = drain(node, st)
    assert rd.read_states == []
    assert [m.to for m in rd.messages if isinstance(m, Heartbeat) and m.ctx] == ["n2", "n3"]


def test_lease_read_needs_recent_quorum():
    """Thesis §6.2/§6.4.1: a leader that has not heard from a quorum in the
    current window holds no lease."""
    node, st = lease_leader()
    for _ in range(node.raft.election_timeout):  # heartbeats go unanswered
        node.tick()
        drain(node, st)
    assert node.role is Role.LEADER  # the acks of the election still counted
    assert node.raft.election_elapsed == 0  # a fresh window ...
    node.read_index(b"q")
    rd = drain(node, st)
    assert rd.read_states == []  # ... but nobody heard from in it yet
    assert [m.to for m in rd.messages if isinstance(m, Heartbeat) and m.ctx] == ["n2", "n3"]


# -- round tokens: acknowledgements bound to their round and term --------------------------


def test_late_ack_of_a_finished_round_does_not_confirm_a_reused_ctx():
    """Thesis §6.4: an answer proves leadership only for the round whose
    heartbeat it answers.  A context only has to be unique among outstanding
    reads (a restarted runtime numbers its reads from 1 again), so a late
    answer to an earlier round with the same context must not confirm a new
    read: this leader may have been deposed in between."""
    node, st = node_with_log(voters=N3)
    ack_all(node, st, win_election(node, st).messages)
    node.read_index(b"c")
    (first,) = {m.ctx for m in drain(node, st).messages if isinstance(m, Heartbeat) and m.ctx}
    node.step(HeartbeatResponse(node.term, "n2", "n1", first))
    assert [rs.ctx for rs in drain(node, st).read_states] == [b"c"]
    # n3's answer to that round is still in the network.  A new read reuses c.
    node.read_index(b"c")
    rd = drain(node, st)
    (second,) = {m.ctx for m in rd.messages if isinstance(m, Heartbeat) and m.ctx}
    node.step(HeartbeatResponse(node.term, "n3", "n1", first))  # the late answer
    node.step(HeartbeatResponse(node.term, "n3", "n1", b"c"))  # an echo of the ctx
    assert drain(node, st).read_states == []
    assert second != first  # the new round has a name of its own
    node.step(HeartbeatResponse(node.term, "n3", "n1", second))
    assert [rs.ctx for rs in drain(node, st).read_states] == [b"c"]


def test_two_readers_with_the_same_ctx_are_both_answered():
    """Contexts are chosen by the readers, not by the leader, so two of them
    may coincide; each request still gets its own round and its own answer."""
    net = Network(N3)
    net.elect("n1")
    net.nodes["n1"].read_index(b"same")
    net.nodes["n2"].read_index(b"same")
    net.nodes["n3"].read_index(b"same")
    net.stabilize()
    for nid in N3:
        assert [rs.ctx for rs in net.read_states[nid]] == [b"same"], nid


def test_round_tokens_name_the_term():
    """A token names its leadership: a round of another term is unknown here
    even if its sequence number matches."""
    node, st = node_with_log(voters=N3)
    ack_all(node, st, win_election(node, st).messages)
    node.read_index(b"x")
    (token,) = {m.ctx for m in drain(node, st).messages if isinstance(m, Heartbeat) and m.ctx}
    assert token == round_token(node.term, 1)
    node.step(HeartbeatResponse(node.term, "n2", "n1", round_token(node.term - 1, 1)))
    assert drain(node, st).read_states == []
    node.step(HeartbeatResponse(node.term, "n2", "n1", token))
    assert [rs.ctx for rs in drain(node, st).read_states] == [b"x"]


def test_sole_voter_reads_wait_for_its_first_commit_in_the_term():
    """A leader does not know the commit index until it has committed an
    entry of its own term (§8, thesis §6.4); a sole voter is no exception.
    After a restart its commit index may be far behind what it acknowledged
    (the commit index is written lazily), so a read answered at once would
    miss acknowledged writes."""
    st = MemoryStorage.bootstrap(["n1"])
    node = RawNode(make_config("n1"), st)
    node.campaign()
    drain(node, st)
    w = node.propose(b"W")
    while node.has_ready():
        drain(node, st)
    assert node.raft.log.committed >= w
    st.hard_state = HardState(st.hard_state.term, st.hard_state.vote, 1)  # lazy commit lost
    node = RawNode(make_config("n1"), st)
    node.campaign()
    assert node.role is Role.LEADER
    node.read_index(b"after-W")
    answers = []
    while node.has_ready():
        answers += drain(node, st).read_states
    assert [rs.ctx for rs in answers] == [b"after-W"]
    assert answers[0].index >= w
