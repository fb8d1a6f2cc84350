"""Candidate and pre-candidate behaviour: count votes, yield to a leader.

A candidate that hears from a leader of its own term becomes its follower
(§5.2, "If the AppendEntries RPC is from another server claiming to be leader
... whose term is at least as large").  Vote answers are counted only when
they match the kind of election under way: a late pre-vote grant must never
count as a real vote.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import follower
from .messages import (
    AppendEntries,
    Heartbeat,
    InstallSnapshot,
    Message,
    Role,
    VoteResponse,
)

if TYPE_CHECKING:
    from .raft import Raft


def step(r: Raft, m: Message) -> None:
    if isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
        r.become_follower(m.term, m.frm, f"heard from leader {m.frm}")
        follower.step(r, m)
    elif isinstance(m, VoteResponse):
        pre = r.role is Role.PRE_CANDIDATE
        if m.pre_vote != pre:
            return
        r.poll(m.frm, m.granted, pre)
