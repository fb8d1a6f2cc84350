"""Lease reads and leadership transfer (thesis §6.4.1, §3.10, §6.2).

The rule under test (leader.lease_valid): a lease is derived only from
acknowledgements this leader actually received in the current check-quorum
window, and a leadership transfer can only shorten it.  A transfer has its
own timeout and never restarts the check-quorum/lease clock; once a
TimeoutNow has gone out the leader serves no lease read for the rest of the
term.  The golden scripts lease_transfer_cancel.txt and
transfer_keeps_leader_clock.txt show the same rules in whole clusters.
"""

from __future__ import annotations

from liferaft.core import (
    AppendEntries,
    AppendResponse,
    ConfChange,
    Heartbeat,
    HeartbeatResponse,
    MemoryStorage,
    RawNode,
    ReadOnlyOption,
    Role,
    TimeoutNow,
    add_voter,
)

from .netutil import Network, ack_all, drain, node_with_log, persist, win_election

N3 = ("n1", "n2", "n3")


def lease_leader(voters: tuple[str, ...] = N3) -> tuple[RawNode, MemoryStorage]:
    """n1 leads ``voters`` with lease reads on; every peer acknowledged it."""
    node, st = node_with_log(voters=voters, read_only=ReadOnlyOption.LEASE_BASED)
    ack_all(node, st, win_election(node, st).messages)
    return node, st


def read_round(node: RawNode, st: MemoryStorage, ctx: bytes) -> tuple[list, list[str]]:
    """Ask for a lease read; returns (its ReadStates, the peers its
    confirming heartbeat round went to)."""
    node.read_index(ctx, lease=True)
    rd = drain(node, st)
    beats = [m.to for m in rd.messages if isinstance(m, Heartbeat) and m.ctx]
    return rd.read_states, beats


def test_lease_holds_early_in_the_window_without_a_transfer():
    """The baseline the other tests shorten: inside its lease the leader
    answers at once (thesis §6.4.1)."""
    node, st = lease_leader()
    states, beats = read_round(node, st, b"r")
    assert [rs.ctx for rs in states] == [b"r"] and beats == []


def test_cancelled_transfer_after_timeout_now_gives_no_lease():
    """Thesis §3.10: TimeoutNow makes its target campaign at once, and voters
    answer a transfer's RequestVote inside the old leader's lease; so the
    lease is void once TimeoutNow is out, and cancelling the transfer (a
    transfer to itself) cannot restore it: the target may already lead a
    later term.  The read must take a heartbeat round."""
    node, st = lease_leader()
    node.transfer_leader("n2")  # n2 is caught up: TimeoutNow at once
    assert any(isinstance(m, TimeoutNow) for m in drain(node, st).messages)
    node.transfer_leader("n1")  # cancelled
    assert node.status().lead_transferee is None and node.role is Role.LEADER
    states, beats = read_round(node, st, b"r")
    assert states == [] and beats == ["n2", "n3"]


def test_no_lease_for_the_rest_of_the_term_after_timeout_now():
    """The revocation outlives the transfer's own timeout and fresh
    acknowledgements: the TimeoutNow's election may still be under way.  Only
    a new term (a new leadership) starts without it."""
    node, st = lease_leader()
    node.transfer_leader("n2")
    drain(node, st)
    for _ in range(node.raft.election_timeout):  # the transfer times out
        node.tick()
        for m in drain(node, st).messages:
            if isinstance(m, Heartbeat):
                node.step(HeartbeatResponse(m.term, m.to, m.frm, m.ctx))
    assert node.status().lead_transferee is None and node.role is Role.LEADER
    assert node.raft.election_elapsed == 0  # a fresh window, with fresh acks:
    for peer in ("n2", "n3"):
        node.step(HeartbeatResponse(node.term, peer, "n1"))
    states, beats = read_round(node, st, b"r")
    assert states == [] and beats == ["n2", "n3"]  # still no lease this term


def test_transfer_does_not_restart_the_check_quorum_clock():
    """Thesis §6.2: a leader that has not heard from a quorum for an election
    timeout steps down.  Starting and cancelling transfers over and over (to
    a lagging follower, so no TimeoutNow is sent) must not postpone that:
    the transfer has a clock of its own."""
    net = Network(N3, read_only=ReadOnlyOption.LEASE_BASED)
    ld = net.elect("n1")
    net.isolate("n1")
    ld.propose(b"x")  # n2 will lag: a transfer to it cannot send TimeoutNow
    net.flush()
    et = ld.raft.election_timeout
    for t in range(1, 2 * et + 1):
        if t % 4 == 0:
            ld.transfer_leader("n2")
            ld.transfer_leader("n1")
        ld.tick()
        net.flush()
        if t < 2 * et:
            assert ld.role is Role.LEADER, t
    assert not [m for m in net.dropped if isinstance(m, TimeoutNow)]
    # The first window still had the election's acknowledgements; the
    # second had none.
    assert ld.role is Role.FOLLOWER


def test_transfer_does_not_extend_the_lease():
    """Thesis §6.4.1: the lease runs from acknowledgements, so starting and
    cancelling a transfer late in the window must not make the leader answer
    a lease read it would have refused."""
    node, st = lease_leader()
    node.propose(b"x")
    drain(node, st)  # n2 and n3 never acknowledge x: both lag
    half = node.raft.election_timeout // 2
    for _ in range(half):
        node.tick()
        drain(node, st)
    node.transfer_leader("n2")
    assert not any(isinstance(m, TimeoutNow) for m in drain(node, st).messages)
    node.transfer_leader("n1")
    states, beats = read_round(node, st, b"r")
    assert states == [] and beats == ["n2", "n3"]


def test_unfinished_transfer_is_still_aborted_after_an_election_timeout():
    """Thesis §3.10: "If the transfer does not complete within about an
    election timeout, the prior leader aborts the transfer and resumes
    accepting client requests" - now on the transfer's own clock, started
    when the transfer began."""
    node, st = lease_leader()
    node.propose(b"x")
    drain(node, st)
    et = node.raft.election_timeout
    for _ in range(3):  # some time passes in the window first
        node.tick()
        for m in drain(node, st).messages:
            if isinstance(m, Heartbeat):
                node.step(HeartbeatResponse(m.term, m.to, m.frm, m.ctx))
    node.transfer_leader("n3")
    drain(node, st)
    for _ in range(et - 1):
        node.tick()
        for m in drain(node, st).messages:
            if isinstance(m, Heartbeat):
                node.step(HeartbeatResponse(m.term, m.to, m.frm, m.ctx))
    assert node.status().lead_transferee == "n3"
    node.tick()
    assert node.status().lead_transferee is None
    assert node.role is Role.LEADER
    node.propose(b"y")  # accepting proposals again


def test_newcomer_does_not_count_toward_the_lease():
    """A lease rests only on acknowledgements actually received.  A voter
    that has just joined counts as active for check-quorum (the leader must
    not step down for a silence it caused), but it has promised this leader
    nothing: with voters n1..n5, n1 heard only from n2 in this window, so
    n3, n4 and the newcomer n5 (none of which is bound by n1's lease) could
    already elect someone else.  The read must take a heartbeat round."""
    voters = ("n1", "n2", "n3", "n4")
    node, st = lease_leader(voters)
    node.propose_conf_change(ConfChange((add_voter("n5"),)))
    rd = drain(node, st)
    for m in rd.messages:  # n2 and n3 accept the change: it commits
        if isinstance(m, AppendEntries) and m.to in ("n2", "n3"):
            node.step(AppendResponse(m.term, m.to, m.frm, m.prev_index + len(m.entries)))
    # The Ready that applies the change is slow to finish: the check-quorum
    # window ends meanwhile (n2 and n3 were heard from in it: n1 stays).
    rd = node.ready()
    persist(st, rd)
    assert rd.committed_entries
    for _ in range(node.raft.election_timeout):
        node.tick()
    assert node.raft.election_elapsed == 0 and node.role is Role.LEADER
    node.advance()  # n5 joins the configuration
    assert "n5" in node.conf_state().voters
    assert node.role is Role.LEADER and node.status().progress["n5"].recent_active
    drain(node, st)
    node.step(HeartbeatResponse(node.term, "n2", "n1"))  # only n2 in this window
    states, beats = read_round(node, st, b"r")
    assert states == []
    assert sorted(beats) == ["n2", "n3", "n4", "n5"]


def _restarted_follower_schedule(quiet: bool) -> tuple[list, int]:
    """n1 leads with lease reads; n2 acknowledges it early in a fresh window,
    then crashes and restarts at once (it forgets it was in n1's lease), and
    n3, which cannot hear n1, campaigns and commits W with n2's vote.  Returns
    n1's lease answers and W's index."""
    net = Network(N3, read_only=ReadOnlyOption.LEASE_BASED)
    n1 = net.elect("n1")
    net.propose("n1", b"a")
    net.stabilize()
    net.cut_links |= {("n1", "n3"), ("n3", "n1")}
    for _ in range(3 * n1.raft.election_timeout):
        net.tick(["n1", "n2"])
        if n1.raft.election_elapsed == 0:
            break  # a fresh check-quorum window, and n2 has acknowledged in it
    net.cut_links |= {("n1", "n2"), ("n2", "n1")}
    net.restart("n2", quiet_after_start=quiet)
    n3 = net.nodes["n3"]
    n3.campaign()
    net.stabilize()
    w = 0
    if n3.role is Role.LEADER:
        w = net.propose("n3", b"W")
        net.stabilize()
    n1.read_index(b"x", lease=True)
    net.flush()
    return net.read_states["n1"], w


def test_a_restarted_follower_keeps_the_lease_it_may_have_granted():
    """A follower's promise not to vote for an election timeout after hearing
    from the leader (the lease, §6.4.1) does not survive a crash: its memory
    of the leader is gone.  With quiet_after_start (the runtime sets it on a
    restart when leases are on) a node refuses votes for one election timeout
    after it starts, so n3 cannot win and n1's lease stays true."""
    reads, w = _restarted_follower_schedule(quiet=True)
    assert w == 0, "n3 won an election inside n1's lease"
    assert all(rs.index >= 2 for rs in reads)


def test_without_the_quiet_start_a_restart_breaks_the_lease():
    reads, w = _restarted_follower_schedule(quiet=False)
    assert w > 0 and reads and reads[-1].index < w  # the stale read the option prevents
