"""Follower behaviour: accept entries, heartbeats and snapshots from the leader.

Theory of operation
-------------------
A follower is passive (§5.1).  It appends what the leader sends when the
entry before it matches (§5.3), truncating only at the first entry whose term
really conflicts, answers heartbeats, installs snapshots that move it forward
(§7), forwards ReadIndex requests to the leader, and starts an election on
TimeoutNow (leadership transfer).  Any message from the current leader
resets the election timer, which is also what the lease check reads.

The same handlers serve candidates: a candidate that hears from a leader of
its term becomes a follower first (§5.2).
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING

from .messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexResponse,
    ReadState,
    Snapshot,
    TimeoutNow,
)

if TYPE_CHECKING:
    from .raft import Raft


def step(r: Raft, m: Message) -> None:
    if isinstance(m, AppendEntries):
        r.election_elapsed = 0
        r.learn_leader(m.frm)
        handle_append(r, m)
    elif isinstance(m, Heartbeat):
        r.election_elapsed = 0
        r.learn_leader(m.frm)
        handle_heartbeat(r, m)
    elif isinstance(m, InstallSnapshot):
        r.election_elapsed = 0
        r.learn_leader(m.frm)
        handle_snapshot(r, m)
    elif isinstance(m, TimeoutNow):
        # Leadership transfer: campaign at once, skipping pre-vote, and mark
        # the request so voters inside a lease still answer (thesis §3.10).
        r.hup(transfer=True, reason=f"transfer from {m.frm}")
    elif isinstance(m, ReadIndexResponse):
        ctx = r.forwarded_reads.pop(m.ctx, None)
        if ctx is not None:  # else a duplicate, or the answer to another life's request
            r.read_states.append(ReadState(m.index, ctx))


_index_of = itemgetter(0)
_term_of = itemgetter(1)


def _well_formed(m: AppendEntries) -> bool:
    """Entries must follow prev_index contiguously, with terms that never
    decrease, start at or after prev_term and do not exceed the sender's term
    (Figure 2).  Checked with C-level list operations: this runs on every
    AppendEntries a follower accepts."""
    ents = m.entries
    if not ents:
        return True
    first = m.prev_index + 1
    if list(map(_index_of, ents)) != list(range(first, first + len(ents))):
        return False
    terms = list(map(_term_of, ents))
    return terms[0] >= m.prev_term and terms[-1] <= m.term and terms == sorted(terms)


def handle_append(r: Raft, m: AppendEntries) -> None:
    if m.prev_index < 0 or not _well_formed(m):
        return  # malformed: ignore, the leader will retry
    log = r.log
    if m.prev_index < log.committed:
        # Everything up to our commit index matches the leader (Leader
        # Completeness); tell it so it can skip ahead.
        r.send(AppendResponse(r.term, r.id, m.frm, log.committed))
        return
    last_new = log.maybe_append(m.prev_index, m.prev_term, m.commit, m.entries)
    if last_new is not None:
        r.send(AppendResponse(r.term, r.id, m.frm, last_new))
        return
    # Mismatch at prev_index.  Hint the last entry at or before it whose term
    # is <= prev_term: every later index we hold must conflict too.
    hint_index, hint_term = log.find_conflict_by_term(
        min(m.prev_index, log.last_index()), m.prev_term
    )
    r.send(AppendResponse(r.term, r.id, m.frm, m.prev_index, True, hint_index, hint_term))


def handle_heartbeat(r: Raft, m: Heartbeat) -> None:
    # The leader sends min(match, commit); a larger value than our log can
    # only come from a confused peer, and is ignored rather than trusted.
    if m.commit <= r.log.last_index():
        r.log.commit_to(m.commit)
    r.send(HeartbeatResponse(r.term, r.id, m.frm, m.ctx))


def handle_snapshot(r: Raft, m: InstallSnapshot) -> None:
    if restore(r, m.snapshot):
        r.send(AppendResponse(r.term, r.id, m.frm, r.log.last_index()))
    else:
        r.send(AppendResponse(r.term, r.id, m.frm, r.log.committed))


def restore(r: Raft, snap: Snapshot) -> bool:
    """Install a snapshot from the leader if it moves us forward (§7)."""
    if snap.index <= r.log.committed:
        return False
    if r.log.match_term(snap.index, snap.term):
        # We already hold the snapshot's last entry, so we hold everything
        # before it too (Log Matching): fast-forward the commit index instead.
        r.log.commit_to(snap.index)
        return False
    r.log.restore(snap)
    r.tracker.switch_to(snap.meta.conf_state, r.log.last_index() + 1)
    pr = r.tracker.progress.get(r.id)
    if pr is not None:
        pr.maybe_update(snap.index)
    return True
