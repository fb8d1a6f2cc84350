"""Safety checkers, run incrementally after every simulator step.

Each safety rule of docs/architecture.md is checked from what the nodes persist and apply,
never from their private state, so a bug anywhere in the core shows up as a
violation here:

* election safety: at most one leader per term;
* log matching: an (index, term) pair always names the same entry with the
  same predecessor term, which by induction means the same prefix;
* leader completeness: a new leader's log holds every committed entry;
* state machine safety: every node applies the same entry at each index, in
  order, once per life of its state machine;
* durability: every acknowledged proposal is in every later leader's log
  and, at the end, applied everywhere;
* read safety: a ReadIndex answer is at least the index of every write
  acknowledged, and of the state every read answered, before the read was
  asked for (real-time order, for writes and reads alike).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from liferaft.core import Entry, NodeId, RawNode


class SafetyViolation(AssertionError):
    """A Raft safety rule was broken; the message says which and where."""


@dataclass
class Checker:
    violations: list[str] = field(default_factory=list)
    # term -> leader id
    leaders: dict[int, NodeId] = field(default_factory=dict)
    # term -> the life of its leader (a node restarts with its term on disk,
    # so it can never lead the same term again in a later life)
    leader_lives: dict[int, int] = field(default_factory=dict)
    # (index, term) -> (data, type, prev_term)
    entries: dict[tuple[int, int], tuple[bytes, int, int]] = field(default_factory=dict)
    # index -> term of the entry committed there
    committed: dict[int, int] = field(default_factory=dict)
    # index -> the term in which it was first known committed (the leader's)
    commit_term: dict[int, int] = field(default_factory=dict)
    # index -> (term, data) of the entry applied there
    applied: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    # index -> (term, data) of acknowledged proposals
    acked: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    max_acked: int = 0
    # The highest state index any answered read has exposed.
    max_read: int = 0
    raise_on_violation: bool = True
    # The simulated clock (the Cluster sets it): a message that does not say
    # when it fired gets " (t=NNN)", which the trace's verdict is keyed on.
    clock: Callable[[], int] | None = None

    def fail(self, msg: str) -> None:
        if self.clock is not None and "(t=" not in msg:
            msg = f"{msg} (t={self.clock()})"
        self.violations.append(msg)
        if self.raise_on_violation:
            raise SafetyViolation(msg)

    # -- hooks called by the simulator --------------------------------------------

    def on_leader(self, node: RawNode, now: int, life: int = 0) -> None:
        term = node.term
        prev = self.leaders.get(term)
        if prev is not None and prev != node.id:
            self.fail(f"election safety: {prev} and {node.id} both leader in term {term} (t={now})")
            return
        if prev is not None and self.leader_lives.get(term, life) != life:
            self.fail(
                f"election safety: {node.id} leads term {term} again after a restart: it came "
                f"back with an older term on disk (t={now})"
            )
            return
        self.leaders[term] = node.id
        self.leader_lives[term] = life
        log = node.raft.log
        first = log.first_index()
        last = log.last_index()
        # Leader Completeness (§5.4.3) speaks of leaders of *higher-numbered*
        # terms: an election of an older term that ends late (its votes were
        # delayed) need not hold entries committed in newer terms, and it
        # can commit nothing, as a majority has moved past its term.
        ct = self.commit_term
        for idx, t in self.committed.items():
            if idx < first or ct[idx] > term:
                continue
            if idx > last or log.term_or_zero(idx) != t:
                self.fail(
                    f"leader completeness: {node.id} leads term {term} without committed "
                    f"entry {idx} (term {t}); its log ends at {last} (t={now})"
                )
                return
        for idx, (t, _) in self.acked.items():
            if ct.get(idx, 0) > term:
                continue
            if idx >= first and (idx > last or log.term_or_zero(idx) != t):
                self.fail(
                    f"durability: {node.id} leads term {term} without acknowledged "
                    f"entry {idx} (term {t}) (t={now})"
                )
                return

    def on_persist(self, nid: NodeId, prev_term: int, ents: list[Entry]) -> None:
        """``prev_term`` is the term of the entry just before ents[0] in nid's log."""
        table = self.entries
        for e in ents:
            key = (e.index, e.term)
            val = (e.data, int(e.type), prev_term)
            seen = table.get(key)
            if seen is None:
                table[key] = val
            elif seen != val:
                what = "predecessor term" if seen[:2] == val[:2] else "content"
                self.fail(
                    f"log matching: {nid} holds entry ({e.index}, {e.term}) whose {what} "
                    f"differs from another node's"
                )
                return
            prev_term = e.term

    def on_commit(self, nid: NodeId, node: RawNode, old: int, new: int) -> None:
        log = node.raft.log
        lo = max(old + 1, log.first_index())
        for i in range(lo, new + 1):
            t = log.term_or_zero(i)
            # The first node to persist a commit is the leader that made it.
            self.commit_term.setdefault(i, node.term)
            seen = self.committed.setdefault(i, t)
            if seen != t:
                self.fail(f"state machine safety: {nid} commits index {i} at term {t}, "
                          f"another node committed term {seen}")
                return

    def on_apply(self, nid: NodeId, e: Entry) -> None:
        seen = self.applied.setdefault(e.index, (e.term, e.data))
        if seen != (e.term, e.data):
            self.fail(
                f"state machine safety: {nid} applies ({e.index}, {e.term}) which differs from "
                f"the entry another node applied at that index (term {seen[0]})"
            )

    def on_ack(self, index: int, term: int, data: bytes) -> None:
        self.acked[index] = (term, data)
        if index > self.max_acked:
            self.max_acked = index

    def on_leader_progress(self, leader: RawNode, peers: dict[NodeId, RawNode]) -> None:
        """A leader's match index for a follower of the same term must name an
        entry the follower really holds: within one term only the leader
        changes a follower's log, so nothing may have removed it."""
        llog = leader.raft.log
        for nid, pr in leader.raft.tracker.progress.items():
            f = peers.get(nid)
            if nid == leader.id or f is None or pr.match == 0:
                continue
            if f.term != leader.term or f.leader != leader.id:
                continue
            flog = f.raft.log
            if pr.match < max(flog.first_index(), llog.first_index()) - 1:
                continue  # compacted on either side: covered by a snapshot
            if pr.match > flog.last_index() or flog.term_or_zero(pr.match) != llog.term_or_zero(
                pr.match
            ):
                self.fail(
                    f"log matching: leader {leader.id} counts {nid} as holding index {pr.match}, "
                    f"but {nid}'s log ends at {flog.last_index()} or differs there"
                )
                return

    def on_install(self, nid: NodeId, index: int, commit: int) -> None:
        """A node installs a snapshot from its leader: only one past every index
        it knows committed (§7), or its state machine would go back."""
        if index <= commit:
            self.fail(
                f"state machine safety: {nid} installs a snapshot at {index}, at or below "
                f"its commit index {commit}"
            )

    def on_restart(
        self, nid: NodeId, term: int, vote: NodeId | None, promised: tuple[int, NodeId]
    ) -> None:
        """A node restarted with (term, vote) from its disk, after it had granted
        its vote in ``promised`` = (term, candidate): that vote must have been
        durable before the grant left (§5.1)."""
        t, cand = promised
        if term < t or (term == t and vote != cand):
            self.fail(
                f"vote durability: {nid} granted its vote in term {t} to {cand}, but "
                f"restarted with term {term} and vote {vote}"
            )

    def on_read(self, nid: NodeId, index: int, floor: int, served: int) -> None:
        """A read began when ``floor`` was the highest acknowledged write or
        answered read; it is answered at read index ``index`` from the state
        at ``served`` (>= index).  Linearizability: it must not be older than
        anything that completed before it began (real-time order)."""
        if index < floor:
            self.fail(
                f"linearizable read: {nid} served read index {index}, but index {floor} was "
                f"acknowledged or read before the read began"
            )
        if served > self.max_read:
            self.max_read = served
