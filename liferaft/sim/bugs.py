"""Planted bugs: known-wrong variants of the core, to prove the checkers bite.

Each entry patches one rule of the protocol back to a classic mistake.  The
simulator must catch every one of them within a bounded number of seeds
(tests/sim/test_planted_bugs.py); a checker that cannot fail is a defect.

* ``commit-prior-term``: commit an earlier term's entry by counting replicas
  (the Figure 8 mistake, §5.4.2).
* ``forget-vote``: the disk does not persist the vote (goraft's flaw).
* ``truncate-on-overlap``: a follower truncates its log after every
  AppendEntries it accepts, even when the entries merely overlap (§5.3 says
  to truncate only at a real conflict).
* ``goraft-vote``: grant votes by goraft's rule, which also refuses a
  candidate with a later last term but a shorter log (a liveness bug).
* ``two-conf-changes``: allow a second membership change while one is in
  flight (thesis §4.1).
* ``ack-before-persist``: every node, not only a leader, sends its messages
  before its entries and votes are durable (§5.1 "before responding to
  RPCs"; thesis §10.2.1 allows it to the leader alone).
* ``vote-not-synced``: a Ready whose only durable change is a vote in the
  same term is not marked must_sync, so the grant may leave before the vote
  is on disk (§5.1).
* ``stale-snapshot``: a follower installs a snapshot at or below its commit
  index (the §7 guard removed), rolling its state machine back.
* ``learner-in-quorum``: learners' copies count toward the commit quorum
  (thesis §4.2.1: a non-voting member must not).
* ``count-unsynced-self``: a leader counts its own copy of an entry at once,
  before it is persisted (thesis §10.2.1 allows sending first only if it
  does not): a sole voter commits, and tells its learners of, entries a
  crash can still erase (issue 11, defect 2).
* ``lease-survives-transfer``: a cancelled transfer whose TimeoutNow went out
  gives the lease back, and a transfer restarts the lease clock (defect 3).
* ``ctx-names-reads``: a follower forwards the caller's read ctx and takes
  any answer carrying it, so a duplicated or delayed answer to an earlier
  read with that ctx answers a later one (defect 4).
* ``sole-voter-early-read``: a sole voter answers a read from its commit
  index before it has committed in its term (§8), which after a restart may
  lag writes it acknowledged.
* ``majority-replace-stale-conf``: the commit index stays lazy around
  membership changes (rules 4 and 5 of liferaft.storage.durability gone), as
  it did before: after a crash a node may run a configuration two changes
  old, which shares no quorum with the newest one (the joint change
  {1,2,3} -> {1,4,5}).
* ``flush-commit-past-match``: the lazy commit broadcast flushes with a
  heartbeat carrying the leader's whole commit index instead of an
  AppendEntries (or a heartbeat's min(match, commit)): a follower whose log
  still holds another leader's entries at those indices commits them.
* ``lazy-conf-commit``: the commit of a membership change waits for the
  flush like any other (no broadcast at once, no flush before the leader
  switches configuration), so members it removes may never hear of it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from liferaft.core import Entry, EntryType, HardState, Snapshot
from liferaft.core import follower as follower_mod
from liferaft.core import leader as leader_mod
from liferaft.core.log import RaftLog
from liferaft.core.quorum import joint_committed
from liferaft.core.raft import Raft
from liferaft.core.rawnode import RawNode, Ready
from liferaft.core.tracker import ProgressTracker
from liferaft.storage import durability

from .cluster import Cluster


def _commit_prior_term(self: Raft) -> bool:
    idx = self.tracker.committed()
    if idx <= self.log.committed:
        return False
    # BUG: no check that log.term(idx) == self.term.
    first_in_term = not self.committed_entry_in_current_term()
    self.log.commit_to(idx)
    if first_in_term and self.committed_entry_in_current_term():
        leader_mod.release_pending_reads(self)
    return True


def _truncate_on_overlap(
    self: RaftLog, prev_index: int, prev_term: int, commit: int, ents: tuple[Entry, ...]
) -> int | None:
    if not self.match_term(prev_index, prev_term):
        return None
    last_new = prev_index + len(ents)
    # BUG: replace everything after prev_index, matching or not.
    keep = [e for e in ents if e.index > self.committed]
    if keep:
        self.unstable.truncate_and_append(keep)
    self.commit_to(min(commit, last_new, self.last_index()))
    return last_new


def _goraft_up_to_date(self: RaftLog, last_index: int, last_term: int) -> bool:
    # BUG: goraft refuses when our last index OR last term is larger.
    return not (self.last_index() > last_index or self.last_term() > last_term)


def _no_conf_change_in_flight(self: Raft) -> bool:
    return False  # BUG: never blocks a second change


_ready = RawNode.ready


def _ready_send_first(self: RawNode) -> Ready:
    rd = _ready(self)
    rd.send_first = True  # BUG: followers acknowledge, candidates vote, before syncing
    return rd


def _ready_vote_unsynced(self: RawNode) -> Ready:
    prev = self._prev_hard
    rd = _ready(self)
    hs = rd.hard_state
    if (
        rd.must_sync
        and hs is not None
        and hs.term == prev.term
        and not rd.entries
        and rd.snapshot is None
        and not rd.sync_commit
    ):
        rd.must_sync = False  # BUG: a new vote in the same term is not synced first
    return rd


def _restore_stale(r: Raft, snap: Snapshot) -> bool:
    # BUG: no "snap.index <= committed" guard.
    if r.log.match_term(snap.index, snap.term):
        r.log.commit_to(snap.index)
        return False
    r.log.restore(snap)
    r.tracker.switch_to(snap.meta.conf_state, r.log.last_index() + 1)
    pr = r.tracker.progress.get(r.id)
    if pr is not None:
        pr.maybe_update(snap.index)
    return True


def _committed_with_learners(self: ProgressTracker) -> int:
    match = {nid: pr.match for nid, pr in self.progress.items()}
    # BUG: learners counted as voters.
    return joint_committed(self._voters | self.conf.learners, self._outgoing, match)


_plan_save = durability.plan_save


def _plan_save_lazy_before_conf(
    durable: HardState,
    lazy_commit: int,
    last_index: int,
    hard_state: HardState | None,
    entries: list[Entry],
    snapshot: Snapshot | None = None,
    sync_commit: bool = False,
) -> durability.SavePlan:
    # BUG: plan as if no entry were a membership change and no change were
    # being applied: the commit index stays lazy (rules 4 and 5 gone).
    plain = [Entry(e.index, e.term, e.data) if e.type is EntryType.CONF_CHANGE else e
             for e in entries]
    plan = _plan_save(durable, lazy_commit, last_index, hard_state, plain, snapshot, False)
    # Without rule 4 nothing is split: one append of all the entries at most.
    steps = [durability.PutEntries(entries) if isinstance(st, durability.PutEntries) else st
             for st in plan.steps]
    return durability.SavePlan(steps, plan.lazy_commit)


def _append_counting_self(self: Raft, ents: list[Entry]) -> int:
    li = self.log.last_index()
    stamped = [Entry(li + 1 + i, self.term, e.data, e.type) for i, e in enumerate(ents)]
    last = self.log.append(stamped)
    self.tracker.progress[self.id].maybe_update(last)  # BUG: not yet on disk
    if self.tracker.is_single_voter(self.id):
        self.maybe_commit()
    return last


def _transfer_stretching_lease(r: Raft, to: str) -> None:
    _transfer_to(r, to)
    r.read_only.lease_revoked = False  # BUG: a cancelled transfer gives the lease back
    r.election_elapsed = 0  # BUG: and a transfer restarts the lease clock


_transfer_to = leader_mod.transfer_to


def _forward_read_as_is(self: Raft, ctx: bytes) -> bytes:
    self.forwarded_reads[ctx] = ctx
    return ctx  # BUG: the caller's name travels; nothing binds the answer


def _step_read_answers_by_name(r: Raft, m: Any) -> None:
    from liferaft.core.messages import ReadIndexResponse, ReadState

    if isinstance(m, ReadIndexResponse):
        r.read_states.append(ReadState(m.index, m.ctx))  # BUG: any answer with that name
        return
    _follower_step(r, m)


_follower_step = follower_mod.step
_read_index = leader_mod.read_index


def _read_index_sole_voter_first(r: Raft, ctx: bytes, requester: str, lease: bool = False) -> None:
    if r.tracker.is_single_voter(r.id):
        leader_mod.respond_read(r, ctx, requester, r.log.committed)  # BUG: before §8's check
        return
    _read_index(r, ctx, requester, lease)


def _flush_commit_by_heartbeat(r: Raft) -> None:
    from liferaft.core.messages import Heartbeat

    r.commit_pending = False
    committed = r.log.committed
    for nid, pr in list(r.tracker.peers(r.id)):
        if pr.commit_sent < committed:
            # BUG: the whole commit index, to a follower not known to hold it.
            r.send(Heartbeat(r.term, r.id, nid, committed))
            pr.commit_sent = committed


def _advance_commit_always_lazy(r: Raft) -> bool:
    if not r.maybe_commit():
        return False
    r.commit_pending = True  # BUG: even a membership change waits for the flush
    return False


_switch_to_config = Raft.switch_to_config


def _switch_without_flush(self: Raft, conf: Any) -> None:
    pending = self.commit_pending
    self.commit_pending = False  # BUG: removed members are never told
    _switch_to_config(self, conf)
    self.commit_pending = self.commit_pending or pending


PATCHES: dict[str, tuple[Any, str, Callable[..., Any]]] = {
    "commit-prior-term": (Raft, "maybe_commit", _commit_prior_term),
    "truncate-on-overlap": (RaftLog, "maybe_append", _truncate_on_overlap),
    "goraft-vote": (RaftLog, "is_up_to_date", _goraft_up_to_date),
    "two-conf-changes": (Raft, "conf_change_in_flight", _no_conf_change_in_flight),
    "ack-before-persist": (RawNode, "ready", _ready_send_first),
    "vote-not-synced": (RawNode, "ready", _ready_vote_unsynced),
    "stale-snapshot": (follower_mod, "restore", _restore_stale),
    "learner-in-quorum": (ProgressTracker, "committed", _committed_with_learners),
    "majority-replace-stale-conf": (durability, "plan_save", _plan_save_lazy_before_conf),
    "sole-voter-early-read": (leader_mod, "read_index", _read_index_sole_voter_first),
    "count-unsynced-self": (Raft, "append_entries", _append_counting_self),
    "lease-survives-transfer": (leader_mod, "transfer_to", _transfer_stretching_lease),
    "ctx-names-reads": (follower_mod, "step", _step_read_answers_by_name),
    "flush-commit-past-match": (leader_mod, "flush_commit", _flush_commit_by_heartbeat),
    "lazy-conf-commit": (leader_mod, "advance_commit", _advance_commit_always_lazy),
}
# Bugs that need more than one patch.
EXTRA_PATCHES: dict[str, list[tuple[Any, str, Callable[..., Any]]]] = {
    "ctx-names-reads": [(Raft, "forward_read", _forward_read_as_is)],
    "lazy-conf-commit": [(Raft, "switch_to_config", _switch_without_flush)],
}

BUGS = (*PATCHES, "forget-vote")


@contextlib.contextmanager
def planted(name: str) -> Iterator[Callable[[Cluster], None]]:
    """Patch the core for the duration; yields a cluster configurator."""
    if name not in BUGS:
        raise ValueError(f"unknown bug {name!r}; choose from {', '.join(BUGS)}")

    def configure(c: Cluster) -> None:
        if name == "forget-vote":
            c.disk_persists_vote = False
            for n in c.nodes.values():
                n.disk.persist_vote = False

    if name not in PATCHES:
        yield configure
        return
    patches = [PATCHES[name], *EXTRA_PATCHES.get(name, [])]
    origs = [getattr(owner, attr) for owner, attr, _ in patches]
    for owner, attr, fn in patches:
        setattr(owner, attr, fn)
    try:
        yield configure
    finally:
        for (owner, attr, _), orig in zip(patches, origs, strict=True):
            setattr(owner, attr, orig)
