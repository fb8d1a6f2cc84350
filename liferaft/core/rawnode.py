"""RawNode: the public, sans-IO face of the core, and the Ready contract.

Theory of operation
-------------------
The caller owns all I/O.  It feeds the node time (:meth:`RawNode.tick`),
messages (:meth:`RawNode.step`) and requests (:meth:`RawNode.propose` and
friends), then collects what the node wants done as a :class:`Ready` and
performs it **in this order**:

1. persist ``hard_state``, ``snapshot`` and ``entries``, and fsync them;
2. send ``messages``;
3. restore the state machine from ``snapshot`` (if any), then apply
   ``committed_entries``, and serve ``read_states`` whose index is applied;
4. call :meth:`RawNode.advance`.

Persisting before sending is what makes a vote or an acknowledgement
durable before anyone relies on it (§5.1: "Updated on stable storage before
responding to RPCs").  One exception, flagged by ``Ready.send_first``: a
leader whose term and vote did not change may send its messages *while* it
persists its own new entries (thesis §10.2.1), provided it still finishes
the persist before :meth:`RawNode.advance` and before it steps any further
message.  Its own copy counts toward commitment at once, which is safe only
because the next acknowledgement is stepped after that persist finished.

Membership changes take effect in ``advance()`` as their entries are
applied; the caller needs to do nothing for them beyond applying the entry
(which it may skip: it is the core's business).  That is also why no message
may be stepped while a Ready is out (ReadyOutstandingError): local requests
(tick, propose, read_index, transfer) may, messages may not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import leader
from .confchange import ChangeType, ConfChange, apply_conf_change
from .errors import (
    ConfChangeError,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    ReadyOutstandingError,
)
from .log import LogReader
from .messages import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadState,
    Role,
    Snapshot,
    SoftState,
    StateChange,
)
from .progress import ProgressState
from .raft import Config, Raft
from .read_index import ReadOnlyOption


@dataclass(slots=True)
class Ready:
    """Work for the caller; see the module docstring for the required order."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    messages: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    #: Every change of role, term or known leader since the last Ready, in
    #: order, each with its reason: what the caller logs (the core does no
    #: I/O).  ``soft_state`` and ``hard_state`` give only where they ended.
    changes: list[StateChange] = field(default_factory=list)
    #: True if something here must reach stable storage before the messages
    #: go out: entries, a snapshot, or a new term or vote.  A hard state that
    #: changes only the commit index need not be synced (etcd's MustSync): a
    #: commit index lost in a crash is learned again from the leader, and
    #: the caller may write it lazily.
    must_sync: bool = False
    #: True if the messages may be sent before (or while) persisting; see the
    #: module docstring.  Only ever set on a leader.
    send_first: bool = False
    #: True if the commit index (``hard_state.commit``, or the last one handed
    #: out) must be durable before :meth:`RawNode.advance`: the committed
    #: entries hold a membership change, which takes effect in advance(), and
    #: a node must never restart under a configuration older than one it
    #: acted on (docs/core.md).  Implies ``must_sync``.
    sync_commit: bool = False


@dataclass(frozen=True, slots=True)
class PeerStatus:
    match: int
    next: int
    state: ProgressState
    learner: bool
    recent_active: bool


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    role: Role
    term: int
    vote: NodeId | None
    leader: NodeId | None
    commit: int
    applied: int
    last_index: int
    first_index: int
    conf_state: ConfState
    lead_transferee: NodeId | None
    progress: dict[NodeId, PeerStatus]


class RawNode:
    """A Raft node without I/O.  Not thread-safe: drive it from one task."""

    def __init__(self, config: Config, storage: LogReader) -> None:
        self.raft = Raft(config, storage)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard = self.raft.hard_state()
        self._outstanding: _Handed | None = None

    # -- input ----------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (pre-vote first, when enabled)."""
        self.raft.hup()

    def step(self, m: Message) -> None:
        """Handle a message received from a peer.

        Not while a Ready is out (between :meth:`ready` and :meth:`advance`):
        that raises ReadyOutstandingError and changes nothing.  advance()
        applies the membership changes of the Ready it finishes, which a
        message stepped in between (a snapshot of a newer configuration) could
        have overtaken.  Queue the message and step it after advance()."""
        if self._outstanding is not None:
            raise ReadyOutstandingError(
                f"step({type(m).__name__}) with a Ready outstanding: advance() first"
            )
        self.raft.step(m)

    def _require_leader(self, what: str, leaving_ok: bool = False) -> Raft:
        r = self.raft
        if r.role is not Role.LEADER:
            raise NotLeaderError(f"{what}: {r.id} is not the leader", r.leader)
        if r.removed_at:
            # Still leading only to tell the new voters (leader.begin_removal).
            raise NotLeaderError(f"{what}: {r.id} was removed from the configuration", None)
        if r.lead_transferee is not None:
            raise ProposalDroppedError(
                f"{what}: leadership transfer to {r.lead_transferee} in progress"
            )
        if r.leaving and not leaving_ok:
            raise ProposalDroppedError(f"{what}: {r.id} is leaving the voters")
        return r

    def propose(self, data: bytes) -> int:
        """Append ``data`` to the log; returns its index.  Leader only.

        The entry is committed (and so applied everywhere) only if this node
        stays leader long enough; the caller learns the outcome when an entry
        with this index *and* :attr:`term` is applied.
        """
        r = self._require_leader("propose")
        last = r.append_entries([Entry(0, 0, data)])
        r.bcast_pending = True
        return last

    def propose_many(self, datas: list[bytes]) -> int:
        """Append several entries at once; returns the index of the last one."""
        r = self._require_leader("propose")
        if not datas:
            return r.log.last_index()
        last = r.append_entries([Entry(0, 0, d) for d in datas])
        r.bcast_pending = True
        return last

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Propose a membership change; returns the index of its entry.

        Refused (ConfChangeError) while another change is in flight, before
        this leader has committed an entry of its term (the single-server
        change bug in Ongaro's 2015 raft-dev post), when invalid against the
        current configuration, or when it promotes a learner that has not
        caught up.
        """
        # A leader on its way out may still finish its change: leave the joint
        # configuration (JOINT_EXPLICIT), which only the application proposes.
        r = self._require_leader("propose_conf_change", leaving_ok=cc.leave_joint)
        if r.conf_change_in_flight():
            raise ConfChangeError(
                f"membership change at index {r.pending_conf_index} is not yet applied "
                f"(applied={r.log.applied}); one change at a time"
            )
        if not r.committed_entry_in_current_term():
            raise ConfChangeError(
                "the leader has not committed an entry in its term yet; retry shortly"
            )
        after = apply_conf_change(r.tracker.conf, cc)  # validate on a copy; raises if invalid
        for c in cc.changes:
            if c.type is ChangeType.ADD_VOTER and c.node_id in r.tracker.conf.learners:
                pr = r.tracker.progress.get(c.node_id)
                if pr is None or pr.match < r.log.committed:
                    raise ConfChangeError(
                        f"learner {c.node_id} has not caught up "
                        f"(match={pr.match if pr else 0}, commit={r.log.committed})"
                    )
        last = r.append_entries([Entry(0, 0, cc.encode(), EntryType.CONF_CHANGE)])
        r.pending_conf_index = last
        r.bcast_pending = True
        if r.id not in after.voters:
            # A leader that removes or demotes itself takes no more writes:
            # its log then ends with the change (and the joint leave), which
            # every voter that committed it holds too.  Otherwise a voter that
            # lost the commit index in a crash, and so still runs the old
            # configuration, could need this node's vote and never get it
            # (our longer log would refuse it): no leader, ever.
            r.leaving = True
        return last

    def read_index(self, ctx: bytes, lease: bool | None = None) -> None:
        """Request a linearizable read; a ReadState carrying ``ctx`` appears in
        a later Ready once the read index is confirmed (thesis §6.4).

        ``ctx`` is the caller's name for the read, returned untouched; it must
        be non-empty but need not be unique.  Acknowledgements are bound to the
        request, never to ``ctx``: a leader confirms each request with a
        heartbeat round named by its term and a sequence number, and a
        follower forwards each under a token of its own (a per-life nonce from
        ``Config.rng``, which must differ between restarts, and a sequence
        number).  So a late or duplicated answer to an earlier read never
        answers a later one, and two requests with the same ctx each get a
        ReadState.

        ``lease``: whether this read may be answered from the leader's lease
        without a heartbeat round (§6.4.1; it assumes bounded clock drift and
        message delay).  A leader configured with ``ReadOnlyOption.LEASE_BASED``
        does so only while a quorum has acknowledged it in the first half of
        the current check-quorum window, no transfer is under way, and it has
        sent no TimeoutNow in its term; ``None`` means "if so configured"."""
        r = self.raft
        if not ctx:
            raise RaftError("read_index needs a non-empty ctx")
        if lease is None:
            lease = r.read_only.option is ReadOnlyOption.LEASE_BASED
        if r.role is Role.LEADER:
            if r.removed_at:
                raise NotLeaderError(
                    f"read_index: {r.id} was removed from the configuration", None
                )
            leader.read_index(r, ctx, r.id, lease)
        elif r.leader is not None and r.role is Role.FOLLOWER:
            r.send(ReadIndexRequest(r.term, r.id, r.leader, r.forward_read(ctx), lease))
        else:
            raise NotLeaderError("read_index: no known leader", r.leader)

    def transfer_leader(self, to: NodeId) -> None:
        """Hand leadership to voter ``to`` (thesis §3.10).  Leader only."""
        r = self.raft
        if r.role is not Role.LEADER or r.removed_at:
            raise NotLeaderError(f"transfer_leader: {r.id} is not the leader", r.leader)
        if to != r.id and to not in r.tracker.conf.voters:
            raise ConfChangeError(f"transfer_leader: {to} is not a voter")
        leader.transfer_to(r, to)

    @property
    def commit_pending(self) -> bool:
        """True while this leader's commit index has advanced past what some
        follower was sent.  It rides the next append or heartbeat; the host
        should call :meth:`flush_commit` within its bound (the runtime's
        ``NodeConfig.commit_flush_delay``), and the next :meth:`tick` sends
        it if the host never does.  Check it after :meth:`advance`."""
        r = self.raft
        if not r.commit_pending or r.role is not Role.LEADER:
            return False
        if leader.commit_told(r):
            r.commit_pending = False  # heartbeats or appends carried it since
            return False
        return True

    def flush_commit(self) -> None:
        """Send a pending commit index now, to each follower not yet told it
        (an AppendEntries in the next Ready).  Harmless when none is pending."""
        r = self.raft
        if r.commit_pending and r.role is Role.LEADER:
            leader.flush_commit(r)

    def report_unreachable(self, nid: NodeId) -> None:
        """The transport failed to deliver to ``nid``: stop streaming to it."""
        leader.report_unreachable(self.raft, nid)

    def report_snapshot(self, nid: NodeId, failed: bool) -> None:
        """The transport finished (or failed) sending a snapshot to ``nid``."""
        leader.report_snapshot(self.raft, nid, failed)

    # -- output ---------------------------------------------------------------

    def has_ready(self) -> bool:
        r = self.raft
        if self._outstanding is not None:
            return False
        return bool(
            r.msgs
            or r.bcast_pending
            or r.log.unstable.entries
            or r.log.unstable.snapshot is not None
            or r.read_states
            or r.changes
            or r.soft_state() != self._prev_soft
            or r.hard_state() != self._prev_hard
            or r.log.has_next_committed()
        )

    def ready(self) -> Ready:
        """Collect pending work.  Call :meth:`advance` before the next ready()."""
        if self._outstanding is not None:
            raise RaftError("ready() called twice: advance() the previous Ready first")
        r = self.raft
        if r.bcast_pending and r.role is Role.LEADER:
            leader.flush_appends(r)
            if r.commit_pending and leader.commit_told(r):
                r.commit_pending = False  # the new entries carried it
        r.bcast_pending = False
        rd = Ready()
        soft = r.soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
        hard = r.hard_state()
        prev = self._prev_hard
        if hard != prev:
            rd.hard_state = hard
        u = r.log.unstable
        rd.entries = list(u.entries)
        rd.snapshot = u.snapshot
        rd.must_sync = bool(
            rd.entries
            or rd.snapshot is not None
            or hard.term != prev.term
            or hard.vote != prev.vote
        )
        rd.send_first = (
            r.role is Role.LEADER
            and rd.snapshot is None
            and hard.term == prev.term
            and hard.vote == prev.vote
        )
        if rd.snapshot is None:
            rd.committed_entries = r.log.next_committed(r.cfg.max_committed_size_per_ready)
            if any(e.type is EntryType.CONF_CHANGE for e in rd.committed_entries):
                rd.sync_commit = rd.must_sync = True
        rd.messages = r.msgs
        r.msgs = []
        rd.read_states = r.read_states
        r.read_states = []
        rd.changes = r.changes
        r.changes = []
        self._outstanding = _Handed(
            soft,
            hard,
            rd.entries[-1] if rd.entries else None,
            rd.snapshot.index if rd.snapshot is not None else None,
            rd.committed_entries,
        )
        return rd

    def advance(self) -> None:
        """Tell the node the last Ready was fully handled."""
        h = self._outstanding
        if h is None:
            raise RaftError("advance() without an outstanding Ready")
        self._outstanding = None
        r = self.raft
        self._prev_soft = h.soft
        self._prev_hard = h.hard
        if h.snapshot_index is not None:
            r.log.stable_snap_to(h.snapshot_index)
            r.log.applied_to(h.snapshot_index)
        if h.last_entry is not None:
            r.log.stable_to(h.last_entry.index, h.last_entry.term)
            if h.last_entry.term == r.term:
                r.own_entries_persisted(h.last_entry.index)
        if h.committed:
            for e in h.committed:
                if e.type is EntryType.CONF_CHANGE:
                    self._apply_conf_entry(e)
            r.log.applied_to(h.committed[-1].index)
        r.maybe_auto_leave_joint()

    def _apply_conf_entry(self, e: Entry) -> None:
        r = self.raft
        try:
            cc = ConfChange.decode(e.data)
        except ConfChangeError:
            return  # never valid, ignored alike by every node
        r.apply_conf_change(cc)

    # -- introspection -------------------------------------------------------------

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def role(self) -> Role:
        return self.raft.role

    @property
    def leader(self) -> NodeId | None:
        return self.raft.leader

    @property
    def id(self) -> NodeId:
        return self.raft.id

    def conf_state(self) -> ConfState:
        """The membership in force (as of the last applied change)."""
        return self.raft.conf_state()

    def status(self) -> Status:
        r = self.raft
        prog = {}
        if r.role is Role.LEADER:
            prog = {
                nid: PeerStatus(pr.match, pr.next, pr.state, pr.is_learner, pr.recent_active)
                for nid, pr in r.tracker.progress.items()
            }
        return Status(
            r.id,
            r.role,
            r.term,
            r.vote,
            r.leader,
            r.log.committed,
            r.log.applied,
            r.log.last_index(),
            r.log.first_index(),
            r.tracker.conf,
            r.lead_transferee,
            prog,
        )


@dataclass(slots=True)
class _Handed:
    soft: SoftState
    hard: HardState
    last_entry: Entry | None
    snapshot_index: int | None
    committed: list[Entry]


__all__ = ["RawNode", "Ready", "Status", "PeerStatus", "Config"]
