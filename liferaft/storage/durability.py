"""What one Ready's state costs on disk, and in what order it becomes durable.

Theory of operation
-------------------
:meth:`~liferaft.storage.DiskStorage.save` persists a Ready as a short list of
*steps*, each durable when it returns:

* :class:`PutSnapshot`: the snapshot file (tmp, fsync, rename, directory
  fsync), then the WAL is reset behind it;
* :class:`PutEntries`: one WAL append and one fdatasync (group commit); a
  crash in the middle keeps a prefix of the records (a torn tail);
* :class:`PutHardState`: the hard-state file, replaced atomically.

:func:`plan_save` decides the steps.  It is a pure function so that the
simulator's model disk (liferaft.sim.disk) runs *the same plan* as the real
store: what a crash keeps in the simulator is, by construction, what it keeps
on a real disk.

The rules, and why (docs/core.md, "What each Ready field needs on disk"):

1. Entries and a snapshot are durable before a commit index that refers to
   them, so a durable commit index never points past the durable log.
2. A new term or vote is written first, before any entry or snapshot of the
   Ready (§5.1: "updated on stable storage before responding to RPCs"; and
   the durable term must never be below a term in the durable log).
3. A commit index on its own is *lazy*: kept in memory, written along with
   a term or vote change, by rules 4 and 5, and by DiskStorage.close()
   (etcd does not sync it either).  A commit index lost in a crash is
   learned again from the leader.
4. **Except before a membership change.**  A configuration takes effect when
   its entry is applied (etcd's rule), so a node that restarts with a commit
   index below a change it once knew committed runs the *older*
   configuration.  One configuration behind is safe: consecutive
   configurations share a quorum (one voter changed, or joint consensus).
   Two behind is not: {n1,n2,n3} and {n1,n4,n5} share none.  So before a
   CONF_CHANGE entry at index q reaches the disk, the commit index known
   then, capped at q-1, is made durable.  The change that precedes q was
   committed before q was proposed (one change at a time), and every node
   that holds q learned that commit with it (the leader sends it along), so
   a node that holds a change on disk also knows, on disk, that the change
   before it committed: after any crash it runs at most one configuration
   behind the newest one that may have committed.
5. **And before a membership change is applied** (Ready.sync_commit): a
   node that acted on a configuration never restarts under an older one.
   Rule 4 is what safety needs; this one is for liveness: a leader that
   applied the removal of a member (which an operator may then shut down)
   must not come back needing that member's vote.
"""

from __future__ import annotations

from dataclasses import dataclass

from liferaft.core import Entry, EntryType, HardState, Snapshot


@dataclass(frozen=True, slots=True)
class PutSnapshot:
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class PutEntries:
    entries: list[Entry]


@dataclass(frozen=True, slots=True)
class PutHardState:
    hard_state: HardState


Step = PutSnapshot | PutEntries | PutHardState


@dataclass(frozen=True, slots=True)
class SavePlan:
    steps: list[Step]
    #: The commit index known but not written (rule 3); 0 if none.
    lazy_commit: int


def plan_save(
    durable: HardState,
    lazy_commit: int,
    last_index: int,
    hard_state: HardState | None,
    entries: list[Entry],
    snapshot: Snapshot | None = None,
    sync_commit: bool = False,
) -> SavePlan:
    """The steps that persist one Ready.

    ``durable`` is the hard state on disk, ``lazy_commit`` a commit index
    known but not yet written, ``last_index`` the last durable log index.
    ``sync_commit`` (Ready.sync_commit) asks for the commit index too (rule 5).
    """
    steps: list[Step] = []
    term, vote = durable.term, durable.vote
    commit = max(durable.commit, lazy_commit)
    if hard_state is not None:
        term, vote = hard_state.term, hard_state.vote
        commit = max(commit, hard_state.commit)
    on_disk = durable.commit
    if term != durable.term or vote != durable.vote:
        # Rule 2, first: nothing of a new term may reach the disk before the
        # term does.  (Written after, a crash between could leave a sole voter
        # with entries of term T and a durable term T-1: it would campaign for
        # T again and write a second, different entry at the same index and
        # term.)  It carries the commit index as far as the durable log that
        # this save leaves alone (below its first entry; none of it if a
        # snapshot replaces the log).
        if snapshot is None:
            below = min(entries[0].index - 1, last_index) if entries else last_index
            on_disk = max(on_disk, min(commit, below))
        steps.append(PutHardState(HardState(term, vote, on_disk)))
    if snapshot is not None:
        steps.append(PutSnapshot(snapshot))
        last_index = snapshot.index
        on_disk = max(on_disk, snapshot.index)
    start = 0
    for i, e in enumerate(entries):
        if e.type is not EntryType.CONF_CHANGE:
            continue
        want = min(commit, e.index - 1)  # rule 4
        if want <= on_disk:
            continue
        if i > start:
            steps.append(PutEntries(entries[start:i]))
            start = i
        steps.append(PutHardState(HardState(term, vote, want)))
        on_disk = want
    if start < len(entries):
        steps.append(PutEntries(entries[start:]))
    if entries:
        last_index = entries[-1].index
    if sync_commit and min(commit, last_index) > on_disk:  # rule 5
        steps.append(PutHardState(HardState(term, vote, min(commit, last_index))))
        on_disk = min(commit, last_index)
    return SavePlan(steps, commit if commit > on_disk else 0)
