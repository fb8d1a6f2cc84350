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
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from liferaft.core import Entry
from liferaft.core import leader as leader_mod
from liferaft.core.log import RaftLog
from liferaft.core.raft import Raft
from liferaft.core.rawnode import RawNode, Ready

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


PATCHES: dict[str, tuple[Any, str, Callable[..., Any]]] = {
    "commit-prior-term": (Raft, "maybe_commit", _commit_prior_term),
    "truncate-on-overlap": (RaftLog, "maybe_append", _truncate_on_overlap),
    "goraft-vote": (RaftLog, "is_up_to_date", _goraft_up_to_date),
    "two-conf-changes": (Raft, "conf_change_in_flight", _no_conf_change_in_flight),
    "ack-before-persist": (RawNode, "ready", _ready_send_first),
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
    owner, attr, fn = PATCHES[name]
    orig = getattr(owner, attr)
    setattr(owner, attr, fn)
    try:
        yield configure
    finally:
        setattr(owner, attr, orig)
