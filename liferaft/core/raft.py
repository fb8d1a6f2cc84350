"""The Raft state shared by every role, and the role-independent step logic.

Theory of operation
-------------------
:class:`Raft` holds the protocol state of one node (term, vote, log,
membership, progress) and its outbox.  It is driven by three kinds of input:
``tick()`` (logical time), ``step(msg)`` (a message from a peer) and local
requests (propose, read, transfer).  Everything it wants to say goes to
``self.msgs``; :class:`~liferaft.core.rawnode.RawNode` hands those to the
caller in a Ready after the state they depend on has been persisted.

:meth:`Raft.step` applies the term rules of §5.1 to every message (step down
on a higher term, answer or drop a lower one) and the vote rules of §5.2 and
§5.4.1, then dispatches to the handler of the current role, which lives in
leader.py, candidate.py or follower.py.

Pre-vote (thesis §9.6) and check-quorum (thesis §6.2) are on by default.
With check-quorum, a node that has heard from a leader within the minimum
election timeout ignores vote requests of a higher term (thesis §4.2.3), so a
partitioned, removed or otherwise disruptive server cannot depose a healthy
leader.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

from . import candidate, follower, leader
from .confchange import ConfChange, apply_conf_change, is_joint
from .errors import (
    ConfChangeError,
    ConfigError,
    SnapshotTemporarilyUnavailableError,
)
from .log import LogReader, RaftLog
from .messages import (
    AppendEntries,
    AppendResponse,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    InstallSnapshot,
    Message,
    NodeId,
    ReadState,
    RequestVote,
    Role,
    SoftState,
    StateChange,
    VoteResponse,
)
from .quorum import VoteResult
from .read_index import ReadOnly, ReadOnlyOption
from .tracker import ProgressTracker

# Rejection hint term meaning "no hint".
NO_HINT = 0
# Forwarded reads a follower remembers while it waits for their answers.
MAX_FORWARDED_READS = 4096


@dataclass
class Config:
    """Configuration of one Raft node.  Validated by :meth:`validate`.

    Times are in ticks; the caller decides how long a tick is.
    """

    id: NodeId
    election_tick: int = 10
    """Minimum election timeout; the randomized timeout lies in [ET, 2*ET)."""
    heartbeat_tick: int = 1
    """Ticks between leader heartbeats; must be less than election_tick."""
    rng: random.Random | None = None
    """Source of randomness; by default a Random seeded by the OS.  Pass one
    for a deterministic node, but seed it differently on every start of the
    node: it also draws the nonce that tells a follower's forwarded reads
    from those of its previous lives (RawNode.read_index)."""
    pre_vote: bool = True
    check_quorum: bool = True
    read_only: ReadOnlyOption = ReadOnlyOption.SAFE
    max_size_per_msg: int = 1 << 20
    """Byte limit of entries in one AppendEntries (at least one entry is sent)."""
    max_committed_size_per_ready: int = 8 << 20
    max_inflight_msgs: int = 256
    """AppendEntries a leader may have in flight to one follower (pipelining)."""
    applied: int = 0
    """Last index applied by the state machine before a restart (0 = snapshot index)."""
    quiet_after_start: bool = False
    """With check-quorum: refuse votes for one election timeout after this
    node starts, as if it had just heard from a leader.  A node that restarts
    forgets the leader whose lease it was keeping (§6.4.1: a follower that
    heard from the leader will not vote for an election timeout); this keeps
    the promise across the restart.  Set it when a node with state restarts
    in a cluster whose leaders serve lease reads (the runtime does); it can
    cost one election timeout of availability after a whole-cluster restart,
    and a node that crash-loops faster than an election timeout never votes
    while it does (its peers still elect among themselves)."""

    def validate(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError("id must be a non-empty string")
        if self.heartbeat_tick <= 0:
            raise ConfigError(f"heartbeat_tick must be > 0, got {self.heartbeat_tick}")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError(
                f"election_tick ({self.election_tick}) must be greater than "
                f"heartbeat_tick ({self.heartbeat_tick})"
            )
        if self.max_inflight_msgs <= 0:
            raise ConfigError(f"max_inflight_msgs must be > 0, got {self.max_inflight_msgs}")
        if self.max_size_per_msg <= 0:
            raise ConfigError(f"max_size_per_msg must be > 0, got {self.max_size_per_msg}")
        if self.max_committed_size_per_ready <= 0:
            raise ConfigError("max_committed_size_per_ready must be > 0")
        if self.applied < 0:
            raise ConfigError(f"applied must be >= 0, got {self.applied}")
        if self.read_only is ReadOnlyOption.LEASE_BASED and not self.check_quorum:
            raise ConfigError(
                "lease-based reads are unsafe without check_quorum: a deposed leader "
                "would keep serving reads"
            )


class Raft:
    """Protocol state of one node.  Use through RawNode."""

    def __init__(self, cfg: Config, storage: LogReader) -> None:
        cfg.validate()
        self.id = cfg.id
        self.cfg = cfg
        # Not seeded from the id: the read nonce below must differ between two
        # starts of a node.  Pass cfg.rng for a deterministic node.
        self.rng = cfg.rng if cfg.rng is not None else random.Random()
        self.election_timeout = cfg.election_tick
        self.heartbeat_timeout = cfg.heartbeat_tick
        self.pre_vote = cfg.pre_vote
        self.check_quorum = cfg.check_quorum
        self.max_msg_size = cfg.max_size_per_msg

        self.log = RaftLog(storage)
        self.tracker = ProgressTracker(cfg.max_inflight_msgs)
        self.read_only = ReadOnly(cfg.read_only)

        self.term = 0
        self.vote: NodeId | None = None
        self.role = Role.FOLLOWER
        self.leader: NodeId | None = None
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []

        # Ticks since the last election timeout reset.  For followers it is
        # reset by any message from the leader; the lease check reads it.
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        # Ticks left in which a freshly started node keeps a lease it may have
        # granted before it (re)started (Config.quiet_after_start).
        self.quiet_ticks = cfg.election_tick if cfg.quiet_after_start else 0

        # Index of the last membership change appended; a new one may only be
        # proposed once this is applied (one change in flight).
        self.pending_conf_index = 0
        # Set when this leader proposed a change that takes it out of the
        # voters; see RawNode.propose_conf_change.
        self.leaving = False
        # Set (to the commit index at that moment) when a committed change
        # removed this node from the voters while it led: it goes on leading,
        # without counting itself or taking requests, until every voter of
        # the new configuration has acknowledged a message telling it that
        # index committed, or an election timeout passed (leader.begin_removal).
        self.removed_at = 0
        # Ticks since removed_at was set, and the voters known to have heard.
        self.removed_elapsed = 0
        self.removal_told: set[NodeId] = set()
        self.lead_transferee: NodeId | None = None
        # Ticks since the transfer to lead_transferee began; it is aborted
        # after an election timeout.  Its own clock: a transfer never moves
        # election_elapsed, the check-quorum and lease clock (leader.py).
        self.transfer_elapsed = 0
        # ReadIndex requests that arrived before this leader committed in its term.
        self.pending_reads: list[tuple[bytes, NodeId, bool]] = []
        # Reads this follower forwarded to its leader: token -> the caller's
        # ctx.  The token, not the caller's ctx, travels, so an answer to an
        # earlier request (a duplicate, or one delayed across a restart of
        # this node) never answers a later request that reuses the ctx.  The
        # nonce tells this life of the node from earlier ones: it comes from
        # ``cfg.rng``, which must therefore differ between restarts.
        self.forwarded_reads: dict[bytes, bytes] = {}
        self.read_nonce = self.rng.getrandbits(32)
        self.read_seq = 0
        # Set when a leader appended entries not yet broadcast: RawNode.ready()
        # flushes them in one AppendEntries per follower (batching).
        self.bcast_pending = False
        # Set when this leader's commit index advanced and some follower has
        # not been sent it: it rides the next append or heartbeat, or goes
        # out when the host flushes it or at the next tick (leader.advance_commit).
        self.commit_pending = False

        hs, cs = storage.initial_state()
        self.tracker.switch_to(cs, self.log.last_index() + 1)
        # Storage may keep entries before its snapshot; the snapshot still
        # marks what is committed and what a restored state machine holds.
        try:
            snap_index = storage.snapshot().index
        except SnapshotTemporarilyUnavailableError:
            snap_index = 0
        if snap_index > self.log.committed:
            self.log.committed = self.log.applied = snap_index
        if hs != HardState():
            self.load_hard_state(hs)
        if cfg.applied > 0:
            floor = self.log.applied
            self.log.applied_to(min(cfg.applied, self.log.committed))
            # Entries up to `applied` are not handed out again, so membership
            # changes among them must be replayed here: storage only knows the
            # snapshot's configuration.
            if self.log.applied > floor:
                for e in self.log.slice(floor + 1, self.log.applied + 1, None):
                    if e.type is EntryType.CONF_CHANGE:
                        # An undecodable change is ignored alike by every node.
                        with contextlib.suppress(ConfChangeError):
                            self.apply_conf_change(ConfChange.decode(e.data))
        self.become_follower(self.term, None)
        # What the caller is told of role, term and leader changes
        # (Ready.changes); the start itself is not one.
        self.changes: list[StateChange] = []
        self._noted: tuple[Role, int, NodeId | None] = (self.role, self.term, self.leader)

    # -- persistent state ----------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.role, self.leader)

    def load_hard_state(self, hs: HardState) -> None:
        if hs.commit > self.log.last_index():
            raise ConfigError(
                f"hard state commit {hs.commit} is beyond the last log index "
                f"{self.log.last_index()}: the log lost entries that were committed"
            )
        # A snapshot newer than the hard state already implies its commit.
        self.log.committed = max(self.log.committed, hs.commit)
        self.term = hs.term
        self.vote = hs.vote

    def conf_state(self) -> ConfState:
        return self.tracker.conf

    # -- helpers -------------------------------------------------------------------

    def send(self, m: Message) -> None:
        self.msgs.append(m)

    def promotable(self) -> bool:
        """Can this node become leader? Only voters without a pending snapshot."""
        return self.tracker.is_voter(self.id) and self.log.unstable.snapshot is None

    def reset_randomized_election_timeout(self) -> None:
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )

    def past_election_timeout(self) -> bool:
        return self.election_elapsed >= self.randomized_election_timeout

    def committed_entry_in_current_term(self) -> bool:
        return self.log.term_or_zero(self.log.committed) == self.term

    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = None
            self.forwarded_reads.clear()  # answers of an older term never come
        self.leader = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.tracker.reset_votes()
        last = self.log.last_index()
        durable = self.log.stable_last_index()
        for nid, pr in self.tracker.progress.items():
            # A new term forgets what the old leader knew (Figure 2:
            # "reinitialized after election"); we know only our own log, and
            # count only the part of it that is on disk.
            pr.reset(last + 1, match=durable if nid == self.id else 0)
        self.pending_conf_index = 0
        self.leaving = False
        self.removed_at = 0
        self.removed_elapsed = 0
        self.removal_told = set()
        self.read_only.reset()
        self.pending_reads.clear()
        self.bcast_pending = False
        self.commit_pending = False

    def forward_read(self, ctx: bytes) -> bytes:
        """Name a read this follower forwards to its leader; returns the token."""
        self.read_seq += 1
        token = b"f%x.%d" % (self.read_nonce, self.read_seq)
        reads = self.forwarded_reads
        reads[token] = ctx
        if len(reads) > MAX_FORWARDED_READS:  # never answered: forget the oldest
            del reads[next(iter(reads))]
        return token

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = None

    def note_change(self, reason: str) -> None:
        """Record why role, term or leader changed, if one of them did since
        the last record (a step down to the same state is no change)."""
        now = (self.role, self.term, self.leader)
        if now != self._noted:
            self._noted = now
            self.changes.append(StateChange(self.role, self.term, self.leader, reason))

    def learn_leader(self, lead: NodeId) -> None:
        """A follower heard from ``lead``, the leader of its term."""
        if self.leader != lead:
            self.leader = lead
            self.note_change(f"heard from leader {lead}")

    # -- role transitions -------------------------------------------------------------

    def become_follower(self, term: int, lead: NodeId | None, reason: str = "") -> None:
        self.reset(term)
        self.leader = lead
        self.role = Role.FOLLOWER
        if reason:  # only __init__ gives none: the start is not a change
            self.note_change(reason)

    def become_pre_candidate(self, reason: str = "") -> None:
        # A pre-candidate keeps its term and vote: it only asks whether it
        # could win, so a failed attempt disturbs nobody (thesis §9.6).
        if self.role is Role.LEADER:
            raise AssertionError("invalid transition leader -> pre-candidate")
        self.tracker.reset_votes()
        self.leader = None
        self.role = Role.PRE_CANDIDATE
        self.note_change(reason)

    def become_candidate(self, reason: str = "") -> None:
        if self.role is Role.LEADER:
            raise AssertionError("invalid transition leader -> candidate")
        self.reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self.note_change(reason)

    def become_leader(self, reason: str = "") -> None:
        if self.role is Role.FOLLOWER:
            raise AssertionError("invalid transition follower -> leader")
        self.reset(self.term)
        self.leader = self.id
        self.role = Role.LEADER
        self.note_change(reason)
        self.tracker.progress[self.id].become_replicate()
        # Conservatively treat every uncommitted entry as a possible pending
        # membership change: nothing new until they are applied.
        self.pending_conf_index = self.log.last_index()
        self.leaving = self.self_removal_pending()
        # §8: a leader commits an entry of its own term at once, which also
        # commits everything before it (a no-op; Figure 8 explains why it must
        # not count replicas of earlier terms instead).
        self.append_entries([Entry(0, 0)])

    # -- elections ----------------------------------------------------------------------

    def hup(self, transfer: bool = False, reason: str = "campaign requested") -> None:
        """Start an election (or a pre-vote) if this node may; ``reason`` says
        why, for the caller's log (Ready.changes)."""
        if self.role is Role.LEADER or not self.promotable():
            return
        if self.has_unapplied_conf_change():
            # Membership takes effect on apply; campaigning before a committed
            # change is applied could count votes in the wrong configuration.
            return
        if transfer or not self.pre_vote:
            self.campaign(pre_vote=False, transfer=transfer, reason=reason)
        else:
            self.campaign(pre_vote=True, transfer=False, reason=reason)

    def self_removal_pending(self) -> bool:
        """Does a membership change in our log, not yet applied, or the joint
        configuration we are in, take us out of the voters?  (See ``leaving``
        in RawNode.propose_conf_change.)"""
        conf = self.tracker.conf
        if is_joint(conf) and self.id not in conf.voters:
            return True  # the leave, applied or about to be appended, removes us
        lo = max(self.log.applied + 1, self.log.first_index())
        for e in self.log.slice(lo, self.log.last_index() + 1, None):
            if e.type is EntryType.CONF_CHANGE:
                with contextlib.suppress(ConfChangeError):
                    conf = apply_conf_change(conf, ConfChange.decode(e.data))
                    if self.id not in conf.voters:
                        return True
        return False

    def has_unapplied_conf_change(self) -> bool:
        lo = max(self.log.applied + 1, self.log.first_index())
        hi = self.log.committed + 1
        if lo >= hi:
            return False
        # lo >= first_index, so the slice cannot hit compacted entries.
        return any(e.type is EntryType.CONF_CHANGE for e in self.log.slice(lo, hi, None))

    def campaign(self, pre_vote: bool, transfer: bool, reason: str) -> None:
        if pre_vote:
            self.become_pre_candidate(reason)
            term = self.term + 1
        else:
            self.become_candidate(reason)
            term = self.term
        if self.poll(self.id, True, pre_vote) is VoteResult.WON:
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        for nid in sorted(self.tracker.all_voters()):
            if nid == self.id:
                continue
            self.send(
                RequestVote(term, self.id, nid, last_index, last_term, pre_vote, transfer)
            )

    def poll(self, nid: NodeId, granted: bool, pre_vote: bool) -> VoteResult:
        """Record a vote and act on the outcome; returns it."""
        self.tracker.record_vote(nid, granted)
        _, _, result = self.tracker.tally()
        if result is VoteResult.WON:
            if pre_vote:
                self.campaign(pre_vote=False, transfer=False, reason="won the pre-vote")
            else:
                self.become_leader("won the election")
                leader.bcast_append(self)
        elif result is VoteResult.LOST:
            what = "pre-vote" if pre_vote else "election"
            self.become_follower(self.term, None, f"lost the {what}")
        return result

    # -- the log ------------------------------------------------------------------------

    def append_entries(self, ents: list[Entry]) -> int:
        """Leader: stamp ``ents`` with our term and the next indices and append
        them.  Returns the last index.

        Our own copy is *not* counted yet: it counts once the caller has
        persisted it (:meth:`own_entries_persisted`, from advance()).  A
        leader may send AppendEntries before its own fsync (thesis §10.2.1)
        only because of that: were its unsynced copy counted, a sole voter
        would commit, and tell its learners so, an entry that a crash can
        still erase."""
        li = self.log.last_index()
        t = self.term
        stamped = [Entry(li + 1 + i, t, e.data, e.type) for i, e in enumerate(ents)]
        return self.log.append(stamped)

    def own_entries_persisted(self, index: int) -> None:
        """The caller made our log durable through ``index``: count our copy,
        and tell the followers if that completed a quorum."""
        if self.role is not Role.LEADER:
            return
        pr = self.tracker.progress.get(self.id)  # None once a change removed us
        if pr is not None and pr.maybe_update(index):
            leader.advance_commit(self)

    def maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum holds, but only through an
        entry of the current term (§5.4.2, Figure 8)."""
        idx = self.tracker.committed()
        if idx <= self.log.committed:
            return False
        if self.log.term_or_zero(idx) != self.term:
            return False
        first_in_term = not self.committed_entry_in_current_term()
        self.log.commit_to(idx)
        if first_in_term:
            leader.release_pending_reads(self)
        return True

    # -- membership ---------------------------------------------------------------------

    def apply_conf_change(self, cc: ConfChange) -> ConfState:
        """Apply a committed membership change (called as its entry is applied).

        The new configuration is computed on a copy; a change that is invalid
        against the current configuration is ignored (every node applies the
        same sequence of changes, so every node ignores it alike).
        """
        try:
            new = apply_conf_change(self.tracker.conf, cc)
        except ConfChangeError:
            return self.tracker.conf
        self.switch_to_config(new)
        return new

    def switch_to_config(self, conf: ConfState) -> None:
        if self.role is Role.LEADER and self.commit_pending:
            # Members leaving the tracker hear no more from us: tell them now.
            leader.flush_commit(self)
        self.tracker.switch_to(conf, self.log.last_index() + 1)
        if self.role is not Role.LEADER:
            return
        if self.lead_transferee is not None and not self.tracker.is_voter(self.lead_transferee):
            self.abort_leader_transfer()
        if not self.tracker.is_voter(self.id):
            # A removed (or demoted) leader steps down once the change is
            # committed and applied (thesis §4.2.2), but only after the new
            # voters have heard that it committed (leader.begin_removal).
            leader.begin_removal(self)
            return
        self.removed_at = 0  # added back (never by our own proposals: `leaving`)
        if is_joint(conf) and self.id not in conf.voters:
            self.leaving = True  # we are only in the outgoing half
        self.tracker.progress[self.id].maybe_update(self.log.stable_last_index())
        if self.maybe_commit():
            leader.bcast_append(self)
        else:
            for nid, _ in list(self.tracker.peers(self.id)):
                leader.send_append(self, nid, send_if_empty=False)

    def conf_change_in_flight(self) -> bool:
        """One change at a time (thesis §4.1): the last membership change this
        leader appended must be applied before another is proposed."""
        return self.pending_conf_index > self.log.applied

    def maybe_auto_leave_joint(self) -> None:
        """Leader: propose leaving a joint configuration marked auto_leave."""
        conf = self.tracker.conf
        if (
            self.role is Role.LEADER
            and is_joint(conf)
            and conf.auto_leave
            and self.pending_conf_index <= self.log.applied
            and self.committed_entry_in_current_term()
            and self.lead_transferee is None
        ):
            self.append_entries([Entry(0, 0, ConfChange().encode(), EntryType.CONF_CHANGE)])
            self.pending_conf_index = self.log.last_index()
            self.bcast_pending = True

    # -- input --------------------------------------------------------------------------

    def tick(self) -> None:
        if self.quiet_ticks:
            self.quiet_ticks -= 1
        if self.role is Role.LEADER:
            leader.tick(self)
        else:
            self.election_elapsed += 1
            if self.promotable() and self.past_election_timeout():
                self.election_elapsed = 0
                self.hup(reason="election timeout")

    def in_lease(self) -> bool:
        """Heard from a live leader within the minimum election timeout, or
        started less than that long ago (Config.quiet_after_start)."""
        return self.check_quorum and (
            (self.leader is not None and self.election_elapsed < self.election_timeout)
            or self.quiet_ticks > 0
        )

    def step(self, m: Message) -> None:
        """Handle one message from a peer (§5.1 term rules first)."""
        if m.to != self.id:
            return
        if m.term > self.term:
            why = f"higher term from {m.frm}"
            if self.lead_transferee == m.frm:
                why = f"transfer to {m.frm}: {why}"
            if isinstance(m, RequestVote):
                if not m.transfer and self.in_lease():
                    # Thesis §4.2.3: ignore, do not even raise our term.
                    return
                if m.pre_vote:
                    # A pre-vote never changes our term; answered below.
                    return self.handle_vote_request(m)
                self.become_follower(m.term, None, why)
            elif isinstance(m, VoteResponse) and m.pre_vote and m.granted:
                # Granted pre-votes carry the term we would campaign with.
                pass
            elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
                self.become_follower(m.term, m.frm, why)
            else:
                self.become_follower(m.term, None, why)
        elif m.term < self.term:
            if isinstance(m, (AppendEntries, Heartbeat)) and (
                self.check_quorum or self.pre_vote
            ):
                # A stale leader that never hears a higher term would never step
                # down (pre-vote keeps our term from reaching it): tell it.
                self.send(AppendResponse(self.term, self.id, m.frm, 0))
            elif isinstance(m, RequestVote) and m.pre_vote:
                self.send(VoteResponse(self.term, self.id, m.frm, False, True))
            return

        if isinstance(m, RequestVote):
            self.handle_vote_request(m)
        elif self.role is Role.LEADER:
            leader.step(self, m)
        elif self.role is Role.FOLLOWER:
            follower.step(self, m)
        else:
            candidate.step(self, m)

    def handle_vote_request(self, m: RequestVote) -> None:
        """§5.2 and §5.4.1: one vote per term, only for an up-to-date log."""
        can_vote = (
            self.vote == m.frm
            or (self.vote is None and self.leader is None)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            # Answer with the term of the request: for a pre-vote, that is the
            # term the candidate would campaign with, so it can count the grant.
            self.send(VoteResponse(m.term, self.id, m.frm, True, m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(VoteResponse(self.term, self.id, m.frm, False, m.pre_vote))
