"""ReadIndex bookkeeping: linearizable reads without writing to the log.

Theory of operation (thesis §6.4)
---------------------------------
To serve a read linearizably the leader records its commit index as the
*read index*, then confirms it is still leader by a round of heartbeats that
carry the request's context.  Once a quorum has echoed the context, any state
machine that has applied the read index may answer the read.  Requests are
confirmed in arrival order: an acknowledgement of a later context also
confirms every earlier one, because the earlier heartbeat was sent first.

A leader that has not yet committed an entry in its own term does not know
the true commit index (§8); it queues read requests until its no-op commits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .messages import NodeId


class ReadOnlyOption(enum.Enum):
    SAFE = "safe"
    """Confirm leadership with a heartbeat round (default)."""
    LEASE_BASED = "lease"
    """Trust the leader lease given by check-quorum; assumes bounded clock drift."""


@dataclass(slots=True)
class ReadIndexStatus:
    index: int
    requester: NodeId
    ctx: bytes
    acks: set[NodeId] = field(default_factory=set)


class ReadOnly:
    """Pending ReadIndex requests of a leader, in arrival order."""

    __slots__ = ("option", "pending", "queue")

    def __init__(self, option: ReadOnlyOption) -> None:
        self.option = option
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, ctx: bytes, requester: NodeId) -> bool:
        """Queue a request; False if a request with this context is pending."""
        if ctx in self.pending:
            return False
        self.pending[ctx] = ReadIndexStatus(index, requester, ctx)
        self.queue.append(ctx)
        return True

    def recv_ack(self, nid: NodeId, ctx: bytes) -> set[NodeId] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(nid)
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Pop and return every request up to and including ``ctx``."""
        if ctx not in self.pending:
            return []
        i = self.queue.index(ctx) + 1
        done = [self.pending.pop(c) for c in self.queue[:i]]
        del self.queue[:i]
        return done

    def last_pending_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""

    def reset(self) -> None:
        self.pending.clear()
        self.queue.clear()
