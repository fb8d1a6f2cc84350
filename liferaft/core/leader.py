"""Leader behaviour: replication, commit, heartbeats, ReadIndex, transfer.

Theory of operation
-------------------
The leader keeps a :class:`~liferaft.core.progress.Progress` per peer and
sends each one AppendEntries from its ``next`` index (§5.3).  Followers that
are known to match are streamed to (REPLICATE, bounded by the in-flight
window); others are probed one message at a time; those whose entries were
compacted get a snapshot (§7).  A rejection carries a conflict hint so the
leader skips a whole term of mismatching entries per round trip.

Commit advances when a quorum holds an entry of the current term
(:meth:`Raft.maybe_commit`); the new commit index reaches followers on the
next AppendEntries, or on a heartbeat, which carries
``min(match, commit)`` so a follower never commits entries it may not hold.

The commit broadcast is lazy (:func:`advance_commit`): a commit index that
advanced is not sent on its own at once but left pending
(``Raft.commit_pending``), and rides the next AppendEntries or heartbeat to
each follower, or the empty AppendEntries of :func:`flush_commit`, which the
host calls within its bound (RawNode.flush_commit) and every tick calls.  At
one write at a time a follower then wakes once per write, not twice.  It goes
at once when it matters more than a wake-up: the first commit of a term, a
commit that covers a membership change (a member being removed hears of it
before the leader forgets it; docs/core.md, "The lazy commit broadcast"),
and during a leadership transfer; a reader's follower is told before its
ReadIndex answer (:func:`respond_read`), the transferee before its
TimeoutNow.  Followers' commit indices, and so their applies and stale
reads, lag by up to the host's bound; the leader's commit index, what it
acknowledges and what ReadIndex uses, does not move later.

With check-quorum (thesis §6.2) a leader that has not heard from a quorum for
an election timeout steps down.  ``election_elapsed`` is that clock, and the
lease clock too (:func:`lease_valid`); only the passage of ticks and the
start of a new window move it, never a local request.

Reads (thesis §6.4): each ReadIndex round gets its own token, which its
heartbeats carry; only answers bearing a pending round's token confirm reads
(read_index.py).  A lease (§6.4.1) is derived only from acknowledgements
received in the current window, and a leadership transfer (§3.10) can only
shorten it: the transfer has its own timeout (``transfer_elapsed``), and once
a TimeoutNow has gone out the leader serves no lease read for the rest of its
term.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import LogCompactedError, SnapshotTemporarilyUnavailableError
from .messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Role,
    TimeoutNow,
    entries_size,
)
from .progress import ProgressState
from .quorum import VoteResult
from .read_index import ReadOnlyOption

if TYPE_CHECKING:
    from .raft import Raft


def tick(r: Raft) -> None:
    r.heartbeat_elapsed += 1
    r.election_elapsed += 1
    if r.lead_transferee is not None:
        # A transfer that has not finished within an election timeout is
        # abandoned so the leader can take proposals again (thesis §3.10).
        # It keeps its own clock: the check-quorum and lease clock
        # (election_elapsed) must not move for a transfer (see transfer_to).
        r.transfer_elapsed += 1
        if r.transfer_elapsed >= r.election_timeout:
            r.abort_leader_transfer()
    if r.removed_at:
        # Removed by a committed change: lead only as long as it takes to
        # tell the new voters, and never longer than an election timeout.
        r.removed_elapsed += 1
        if r.removed_elapsed >= r.election_timeout:
            finish_removal(r, "stepped down: removed from the configuration (timeout)")
            return
    if r.election_elapsed >= r.election_timeout:
        r.election_elapsed = 0
        r.read_only.new_lease_window()
        if r.check_quorum:
            if not r.tracker.quorum_active(r.id):
                r.become_follower(r.term, None, "lost quorum (check quorum)")
                return
            for _, pr in r.tracker.peers(r.id):
                pr.recent_active = False
    if r.heartbeat_elapsed >= r.heartbeat_timeout:
        r.heartbeat_elapsed = 0
        if r.removed_at:
            bcast_removal(r)
        else:
            bcast_heartbeat(r, r.read_only.last_pending_token())
    if r.commit_pending:
        # A host that never flushes still bounds the delay by one tick.
        flush_commit(r)


# -- sending ------------------------------------------------------------------------


def send_append(r: Raft, to: NodeId, send_if_empty: bool = True) -> bool:
    """Send ``to`` what it needs next.  Returns True if a message was sent."""
    pr = r.tracker.progress.get(to)
    if pr is None or pr.is_paused():
        return False
    log = r.log
    prev_index = pr.next - 1
    try:
        prev_term = log.term(prev_index)
        ents = log.entries_from(pr.next, r.max_msg_size)
    except LogCompactedError:
        return send_snapshot(r, to)
    if not ents and not send_if_empty:
        return False
    r.send(AppendEntries(r.term, r.id, to, prev_index, prev_term, tuple(ents), log.committed))
    pr.commit_sent = log.committed  # never above it: the commit index only grows
    if ents:
        pr.sent_entries(ents[-1].index, entries_size(ents))
    elif pr.state is ProgressState.PROBE:
        pr.probe_sent = True
    return True


def send_snapshot(r: Raft, to: NodeId) -> bool:
    pr = r.tracker.progress[to]
    if not pr.recent_active:
        # Do not ship a snapshot to a peer that may be down (etcd's rule);
        # a heartbeat response re-activates it.
        return False
    try:
        snap = r.log.snapshot()
    except SnapshotTemporarilyUnavailableError:
        return False
    pr.become_snapshot(snap.index)
    r.send(InstallSnapshot(r.term, r.id, to, snap))
    return True


def bcast_append(r: Raft) -> None:
    r.bcast_pending = False
    r.commit_pending = False
    for nid, _ in list(r.tracker.peers(r.id)):
        send_append(r, nid)


def advance_commit(r: Raft) -> bool:
    """Advance the commit index if a quorum allows (:meth:`Raft.maybe_commit`)
    and decide how the followers hear of it.  Returns True if it was
    broadcast at once (every peer that is not paused was sent an append).

    Lazy by default: the commit rides the next append or heartbeat, or the
    host's :func:`flush_commit`.  At once for the first commit of a term
    (pending reads are released by it, and the followers learn the new
    leader's commit), for a commit that covers a membership change (the
    leader applies it next and stops talking to members it removes, which
    must still hear that it committed; ``pending_conf_index`` is the last
    change appended, or the whole inherited tail after an election), and
    during a leadership transfer (the target takes over with what it knows).
    """
    before = r.log.committed
    first_in_term = not r.committed_entry_in_current_term()
    if not r.maybe_commit():
        return False
    if (
        first_in_term
        or before < r.pending_conf_index <= r.log.committed
        or r.lead_transferee is not None
    ):
        bcast_append(r)
        return True
    r.commit_pending = True
    return False


def flush_commit(r: Raft) -> None:
    """Send the pending commit index to every peer not yet told it, in an
    (empty, unless entries wait) AppendEntries, as the eager broadcast did.
    A paused peer is skipped; it hears with its next append or heartbeat."""
    r.commit_pending = False
    committed = r.log.committed
    for nid, pr in list(r.tracker.peers(r.id)):
        if pr.commit_sent < committed:
            send_append(r, nid)


def commit_told(r: Raft) -> bool:
    """Has every peer a flush could reach been sent the commit index?"""
    committed = r.log.committed
    return all(
        pr.commit_sent >= committed or pr.is_paused() for _, pr in r.tracker.peers(r.id)
    )


def tell_commit(r: Raft, to: NodeId, index: int) -> None:
    """Make sure ``to`` has been sent a commit index of at least ``index``
    before what follows (a read answer, a TimeoutNow)."""
    pr = r.tracker.progress.get(to)
    if pr is not None and pr.commit_sent < index:
        send_append(r, to)


def flush_appends(r: Raft) -> None:
    """Send entries appended since the last broadcast, without empty probes."""
    r.bcast_pending = False
    for nid, _ in list(r.tracker.peers(r.id)):
        send_append(r, nid, send_if_empty=False)


def bcast_heartbeat(r: Raft, token: bytes = b"") -> None:
    """Heartbeat every peer; ``token`` names the ReadIndex round the answers
    confirm (b"": none).  Never a reader's context (read_index.py)."""
    committed = r.log.committed
    for nid, pr in r.tracker.peers(r.id):
        # Never tell a follower to commit past what it is known to hold.
        commit = min(pr.match, committed)
        r.send(Heartbeat(r.term, r.id, nid, commit, token))
        if commit > pr.commit_sent:
            pr.commit_sent = commit


# -- a leader removed from the configuration ---------------------------------------------

#: Heartbeat.ctx of a removed leader's heartbeats that carry a commit index
#: covering its removal.  Never a ReadIndex round token (those are
#: ``term.seq``), so an answer to it confirms no read.
REMOVAL_TOKEN = b"removed"


def begin_removal(r: Raft) -> None:
    """A committed change this leader just applied took it out of the voters.

    It does not step down at once.  The message that tells the remaining
    voters the change committed can be lost, and a voter that never learns
    it keeps running the old configuration, in which it may need this
    node's vote; a non-voter never campaigns, and refuses its vote to a
    shorter log, so the cluster could stay without a leader for good (the
    simulator's seed 287, churn profile).  So, like etcd's raft (whose
    StepDownOnRemoval is off by default), it keeps leading: it replicates
    and heartbeats, carrying its commit index, but counts itself in no
    quorum (the tracker holds the new configuration), takes no proposals,
    serves no reads and starts no transfer (RawNode refuses them: not the
    leader).  It steps down once every voter of the new configuration has
    answered a heartbeat whose commit index covers the change
    (:data:`REMOVAL_TOKEN`; the answer goes out after the voter made that
    commit index durable, since the change it commits sets ``sync_commit``),
    or after an election timeout, or earlier if check-quorum finds no quorum.
    A transfer under way to a voter may still finish; its TimeoutNow tells
    the target the commit index first."""
    if not r.removed_at:
        r.removed_at = r.log.committed
        r.removed_elapsed = 0
        r.removal_told = set()
        # Rounds under way are dropped, as a step-down drops them; the lease
        # is void with them (read_index refuses reads from now on).
        r.read_only.reset()
        r.pending_reads.clear()
    # Without our own vote the new configuration may commit more at once.
    if r.maybe_commit():
        bcast_append(r)
    bcast_removal(r)


def bcast_removal(r: Raft) -> None:
    """Heartbeat every peer; those known to hold the entries through the
    change get a commit index covering it, marked :data:`REMOVAL_TOKEN`.
    (A peer that lags is brought up by the appends its answer triggers.)"""
    committed = r.log.committed
    for nid, pr in r.tracker.peers(r.id):
        commit = min(pr.match, committed)
        token = REMOVAL_TOKEN if commit >= r.removed_at else b""
        r.send(Heartbeat(r.term, r.id, nid, commit, token))
        if commit > pr.commit_sent:
            pr.commit_sent = commit


def removal_acked(r: Raft, nid: NodeId) -> None:
    """``nid`` answered a heartbeat that told it the removal committed."""
    r.removal_told.add(nid)
    if all(v in r.removal_told for v in r.tracker.all_voters()):
        finish_removal(r, "stepped down: removed from the configuration")


def finish_removal(r: Raft, reason: str) -> None:
    r.become_follower(r.term, None, reason)


# -- ReadIndex (thesis §6.4) ----------------------------------------------------------------


def read_index(r: Raft, ctx: bytes, requester: NodeId, lease: bool = False) -> None:
    """Handle a read request from ourselves or a follower.  ``lease``: the
    reader accepts a lease-based answer; it gets one only if this leader was
    configured to allow them and the lease holds (:func:`lease_valid`)."""
    if r.removed_at:
        return  # removed: no reads at all (begin_removal); the reader retries
    if not r.committed_entry_in_current_term():
        # We do not know the commit index yet (§8), a sole voter no more than
        # anyone: after a restart it may lag far behind acknowledged writes.
        r.pending_reads.append((ctx, requester, lease))
        return
    if r.tracker.is_single_voter(r.id):
        respond_read(r, ctx, requester, r.log.committed)
        return
    if lease and lease_valid(r):
        respond_read(r, ctx, requester, r.log.committed)
        return
    # A round of our own, named by a token bound to this term: a reader's
    # ctx may repeat (another reader's, or an old one of the same reader),
    # so it never names the round (read_index.py).
    token = r.read_only.add_request(r.term, r.log.committed, ctx, requester)
    r.read_only.recv_ack(r.id, token, r.term)
    bcast_heartbeat(r, token)


def lease_valid(r: Raft) -> bool:
    """May a lease-based read skip the heartbeat round (thesis §6.4.1)?

    Rule: a lease is derived only from acknowledgements actually received,
    and a leadership transfer can only shorten it.

    * A quorum must have answered this leader in the current check-quorum
      window (``read_only.lease_acks``: real AppendResponses and
      HeartbeatResponses of this term; a peer that just joined the
      configuration, which check-quorum counts as active, does not count),
      and that window must be less than half over.  Those followers reset
      their election timers at most half a timeout ago, so for at least the
      other half (minus message delay and clock drift, which the lease
      assumes bounded) they ignore any candidate (thesis §4.2.3).
      ``election_elapsed`` moves only with ticks; nothing a client asks for
      (a transfer, say) resets it.
    * Never while a transfer is under way, and never again in this term once
      a TimeoutNow has been sent (``read_only.lease_revoked``): its election
      overrides the followers' promise (thesis §3.10), and cancelling the
      transfer cannot call it back; its target may already have won.

    Otherwise the read falls back to a confirmed ReadIndex round, which is
    always safe.
    """
    ro = r.read_only
    if (
        ro.option is not ReadOnlyOption.LEASE_BASED
        or ro.lease_revoked
        or r.lead_transferee is not None
        or r.election_elapsed >= r.election_timeout // 2
    ):
        return False
    heard = {nid: True for nid in ro.lease_acks}
    heard[r.id] = True
    return r.tracker.vote_result(heard) is VoteResult.WON


def respond_read(r: Raft, ctx: bytes, requester: NodeId, index: int) -> None:
    if requester == r.id:
        r.read_states.append(ReadState(index, ctx))
    else:
        # The follower serves the read once it has applied ``index``: with
        # the commit broadcast lazy it might not know that index committed
        # yet, and would wait for the next flush.  Tell it first.
        tell_commit(r, requester, index)
        r.send(ReadIndexResponse(r.term, r.id, requester, ctx, index))


def release_pending_reads(r: Raft) -> None:
    pending, r.pending_reads = r.pending_reads, []
    for ctx, requester, lease in pending:
        read_index(r, ctx, requester, lease)


# -- leadership transfer (thesis §3.10) ------------------------------------------------------


def transfer_to(r: Raft, to: NodeId) -> None:
    """Start a transfer to ``to``, or cancel the one under way (``to`` is
    this node).  A transfer can only shorten the lease (:func:`lease_valid`)."""
    if r.lead_transferee == to:
        return
    r.abort_leader_transfer()
    if to == r.id:
        return
    r.lead_transferee = to
    # The transfer must finish within one election timeout, or it is
    # aborted (tick).  It has its own clock: resetting election_elapsed here
    # would postpone check-quorum and stretch the lease with no new
    # acknowledgement, forever if the application keeps restarting transfers.
    r.transfer_elapsed = 0
    pr = r.tracker.progress[to]
    if pr.match == r.log.last_index():
        send_timeout_now(r, to)
    else:
        send_append(r, to)


def send_timeout_now(r: Raft, to: NodeId) -> None:
    """Tell ``to`` to campaign now (thesis §3.10).  Its election overrides
    the followers' lease promise, so this leader gives up lease reads for the
    rest of its term, whatever becomes of the transfer."""
    r.read_only.lease_revoked = True
    # The target campaigns at once: let it know everything this leader knows
    # committed, so its first term starts from the same commit index.
    tell_commit(r, to, r.log.committed)
    r.send(TimeoutNow(r.term, r.id, to))


# -- receiving ------------------------------------------------------------------------


def step(r: Raft, m: Message) -> None:
    pr = r.tracker.progress.get(m.frm)
    if isinstance(m, ReadIndexRequest):
        read_index(r, m.ctx, m.frm, m.lease)
        return
    if pr is None:
        return  # a peer outside the configuration: nothing to track
    if isinstance(m, AppendResponse):
        pr.recent_active = True
        r.read_only.lease_acks.add(m.frm)
        if m.reject:
            handle_reject(r, m)
        else:
            handle_ack(r, m)
    elif isinstance(m, HeartbeatResponse):
        pr.recent_active = True
        r.read_only.lease_acks.add(m.frm)
        pr.probe_sent = False
        if pr.state is ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first_one()
        if pr.match < r.log.last_index():
            send_append(r, m.frm)
        if m.ctx == REMOVAL_TOKEN and r.removed_at:
            removal_acked(r, m.frm)
        elif m.ctx:
            handle_read_ack(r, m)
    # Votes, snapshots and appends from another leader of our term cannot
    # happen (election safety); stale ones were filtered by term already.


def handle_reject(r: Raft, m: AppendResponse) -> None:
    pr = r.tracker.progress[m.frm]
    hint = m.hint_index
    if m.hint_term > 0:
        # Skip every index of ours whose term exceeds the follower's term at
        # hint_index: they cannot match (§5.3 optimisation).
        hint, _ = r.log.find_conflict_by_term(m.hint_index, m.hint_term)
    if pr.maybe_decr_to(m.index, hint):
        if pr.state is ProgressState.REPLICATE:
            pr.become_probe()
        send_append(r, m.frm)


def handle_ack(r: Raft, m: AppendResponse) -> None:
    pr = r.tracker.progress[m.frm]
    if m.index > r.log.last_index():
        return  # acknowledges entries we never had: a confused or stale peer
    was_paused = pr.is_paused()
    if not pr.maybe_update(m.index):
        return
    if pr.state is ProgressState.PROBE:
        pr.become_replicate()
    elif pr.state is ProgressState.SNAPSHOT:
        if pr.match + 1 >= r.log.first_index():
            pr.become_probe()
            pr.become_replicate()
    else:
        pr.inflights.free_le(m.index)
    if advance_commit(r):
        pass  # m.frm was sent an append too
    elif was_paused:
        send_append(r, m.frm)
    # Keep the pipeline full while the window allows.
    while send_append(r, m.frm, send_if_empty=False):
        pass
    if m.frm == r.lead_transferee and pr.match == r.log.last_index():
        send_timeout_now(r, m.frm)


def handle_read_ack(r: Raft, m: HeartbeatResponse) -> None:
    """An answer to a heartbeat that carried round token ``m.ctx``.  It counts
    only for that round, and only if the round is pending in this term: a
    late answer to a finished round, or to another leadership, confirms
    nothing.  A quorum for a round confirms every earlier round as well."""
    acks = r.read_only.recv_ack(m.frm, m.ctx, r.term)
    if acks is None:
        return
    if r.tracker.vote_result({a: True for a in acks}) is not VoteResult.WON:
        return
    for rs in r.read_only.advance(m.ctx):
        respond_read(r, rs.ctx, rs.requester, rs.index)


def report_unreachable(r: Raft, nid: NodeId) -> None:
    pr = r.tracker.progress.get(nid)
    if r.role is Role.LEADER and pr is not None and pr.state is ProgressState.REPLICATE:
        pr.become_probe()


def report_snapshot(r: Raft, nid: NodeId, failed: bool) -> None:
    pr = r.tracker.progress.get(nid)
    if r.role is not Role.LEADER or pr is None or pr.state is not ProgressState.SNAPSHOT:
        return
    if failed:
        pr.pending_snapshot = 0
    pr.become_probe()
    # Wait for a heartbeat response before probing again.
    pr.probe_sent = True
