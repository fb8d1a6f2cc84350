"""The membership in force plus per-peer progress and election votes.

The tracker is the only place that maps a :class:`ConfState` onto quorum
decisions: commit index, election outcome, check-quorum activity.  A new
configuration is installed with :meth:`ProgressTracker.switch_to`, which
keeps the progress of peers that stay and creates fresh progress for peers
that join.
"""

from __future__ import annotations

from collections.abc import Iterator

from .messages import ConfState, NodeId
from .progress import Progress
from .quorum import VoteResult, joint_committed, joint_vote


class ProgressTracker:
    __slots__ = ("conf", "progress", "votes", "inflight_cap", "_voters", "_outgoing")

    def __init__(self, inflight_cap: int) -> None:
        self.inflight_cap = inflight_cap
        self.conf = ConfState()
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self._voters: frozenset[NodeId] = frozenset()
        self._outgoing: frozenset[NodeId] = frozenset()

    # -- membership -----------------------------------------------------------

    def switch_to(self, conf: ConfState, next_index: int) -> None:
        """Install ``conf``; peers that join start probing from ``next_index``."""
        self.conf = conf
        self._voters = conf.voters
        self._outgoing = conf.voters_outgoing
        members = conf.members()
        for nid in list(self.progress):
            if nid not in members:
                del self.progress[nid]
        # Sorted: set order varies with PYTHONHASHSEED, and the order of
        # progress entries decides the order messages are sent in.
        for nid in sorted(members):
            pr = self.progress.get(nid)
            if pr is None:
                pr = Progress(next_index, self.inflight_cap)
                # A newcomer counts as active until the next check-quorum
                # round: the leader has not even written to it yet, and must
                # not step down for a silence it caused.
                pr.recent_active = True
                self.progress[nid] = pr
            # learners_next are still voters of the outgoing half until the
            # joint configuration is left.
            pr.is_learner = nid in conf.learners

    def is_voter(self, nid: NodeId) -> bool:
        return nid in self._voters or nid in self._outgoing

    def all_voters(self) -> frozenset[NodeId]:
        return self._voters | self._outgoing

    def is_single_voter(self, nid: NodeId) -> bool:
        """True when ``nid`` alone forms every quorum."""
        return self._voters == {nid} and (not self._outgoing or self._outgoing == {nid})

    def peers(self, self_id: NodeId) -> Iterator[tuple[NodeId, Progress]]:
        for nid, pr in self.progress.items():
            if nid != self_id:
                yield nid, pr

    # -- quorum decisions -----------------------------------------------------

    def committed(self) -> int:
        """Largest index replicated on a quorum of the configuration in force."""
        match = {nid: pr.match for nid, pr in self.progress.items()}
        return joint_committed(self._voters, self._outgoing, match)

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, nid: NodeId, granted: bool) -> None:
        # Only the first answer of a voter counts (duplicates are common).
        self.votes.setdefault(nid, granted)

    def tally(self) -> tuple[int, int, VoteResult]:
        granted = sum(1 for v in self.votes.values() if v)
        rejected = len(self.votes) - granted
        return granted, rejected, joint_vote(self._voters, self._outgoing, self.votes)

    def vote_result(self, votes: dict[NodeId, bool]) -> VoteResult:
        return joint_vote(self._voters, self._outgoing, votes)

    def quorum_active(self, self_id: NodeId) -> bool:
        """Check-quorum: has a quorum (counting self) been heard from recently?"""
        votes = {
            nid: (nid == self_id or pr.recent_active) for nid, pr in self.progress.items()
        }
        return joint_vote(self._voters, self._outgoing, votes) is VoteResult.WON
