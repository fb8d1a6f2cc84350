"""Quorum arithmetic for majority and joint configurations.

Theory of operation
-------------------
A majority configuration is a set of voters.  An index is *committed* in it
when more than half of the voters have it in their log (§5.3); a vote is
*won* when more than half granted it (§5.2).  A joint configuration (thesis
§4.3, "joint consensus") is a pair of majority configurations, and every
decision needs a majority of *both* halves.  An empty half never constrains a
decision, which is what lets one code path serve both joint and plain
configurations (the outgoing half of a plain configuration is empty).

These are pure functions over sets and mappings, checked by hypothesis
against a brute-force reference in tests/core/test_quorum_props.py.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping

from .messages import NodeId

# Returned as the commit index of an empty configuration so that min() over
# a joint pair ignores the empty half.
UNBOUNDED = 1 << 62


class VoteResult(enum.Enum):
    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority_committed(voters: Collection[NodeId], match: Mapping[NodeId, int]) -> int:
    """Largest index that a majority of ``voters`` has (missing voters count as 0)."""
    n = len(voters)
    if n == 0:
        return UNBOUNDED
    if n == 1:
        return match.get(next(iter(voters)), 0)
    idx = sorted([match.get(v, 0) for v in voters], reverse=True)
    return idx[n // 2]


def joint_committed(
    incoming: Collection[NodeId], outgoing: Collection[NodeId], match: Mapping[NodeId, int]
) -> int:
    """Largest index committed in both halves of a joint configuration."""
    a = majority_committed(incoming, match)
    if not outgoing:
        return a
    return min(a, majority_committed(outgoing, match))


def majority_vote(voters: Collection[NodeId], votes: Mapping[NodeId, bool]) -> VoteResult:
    """Outcome of an election in one majority configuration."""
    if not voters:
        return VoteResult.WON
    granted = rejected = 0
    for v in voters:
        got = votes.get(v)
        if got is None:
            continue
        if got:
            granted += 1
        else:
            rejected += 1
    q = len(voters) // 2 + 1
    if granted >= q:
        return VoteResult.WON
    if granted + (len(voters) - granted - rejected) >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


def joint_vote(
    incoming: Collection[NodeId], outgoing: Collection[NodeId], votes: Mapping[NodeId, bool]
) -> VoteResult:
    """Outcome of an election that must win both halves of a joint configuration."""
    a = majority_vote(incoming, votes)
    b = majority_vote(outgoing, votes)
    if a is b:
        return a
    if VoteResult.LOST in (a, b):
        return VoteResult.LOST
    return VoteResult.PENDING
