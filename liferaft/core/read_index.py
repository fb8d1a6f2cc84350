"""ReadIndex bookkeeping: linearizable reads without writing to the log, and
the evidence a leader's lease rests on.

Theory of operation (thesis §6.4)
---------------------------------
To serve a read linearizably the leader records its commit index as the
*read index*, then confirms it is still leader by a round of heartbeats.
Once a quorum has answered that round, any state machine that has applied
the read index may answer the read.

An answer proves only that its sender still followed this leader when it
received *that round's* heartbeat, so it must be bound to the round (and the
term) that asked for it.  The reader's context cannot name the round: it
only has to be unique among the reads outstanding at one node (a runtime
that numbers its reads starts again after a restart), and two readers may
choose the same one.  So the leader names every round itself, with a
*round token* encoding its term and a sequence number that grows within the
leadership (:func:`round_token`).  The token travels in ``Heartbeat.ctx``
and comes back in ``HeartbeatResponse.ctx``; the reader's context stays here
and goes into the ReadState or ReadIndexResponse.  An answer carrying a
token that is not pending here (an earlier round already confirmed, another
term, garbage) confirms nothing.

Rounds are confirmed in the order they began: a quorum for a later round
also confirms every earlier one, because the earlier heartbeats were sent
first.  Every pending round is forgotten on any change of role or term
(:meth:`ReadOnly.reset`).

A leader that has not yet committed an entry in its own term does not know
the true commit index (§8); it queues read requests until its no-op commits.

Lease evidence (thesis §6.4.1)
------------------------------
With ``ReadOnlyOption.LEASE_BASED`` the leader may skip the heartbeat round
while it holds a lease.  The lease is derived only from acknowledgements
actually received in this leadership: :attr:`ReadOnly.lease_acks` holds the
peers that answered this leader during the current check-quorum window
(cleared when a window begins and on every change of role or term, never
pre-filled: unlike check-quorum's ``recent_active``, a peer that just joined
the configuration does not count).  :attr:`ReadOnly.lease_revoked` is set for
the rest of the term once the leader has sent a TimeoutNow, whose election
overrides the followers' promise the lease rests on (§3.10).  The decision
itself is :func:`liferaft.core.leader.lease_valid`.
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


def round_token(term: int, seq: int) -> bytes:
    """The name of ReadIndex round ``seq`` of the leader of ``term``: unique,
    since a node leads at most once per term and ``seq`` grows within it."""
    return b"%d.%d" % (term, seq)


@dataclass(slots=True)
class ReadIndexStatus:
    index: int
    requester: NodeId
    ctx: bytes
    """The reader's context, returned in its ReadState or ReadIndexResponse."""
    token: bytes
    """The round's name, sent in Heartbeat.ctx (:func:`round_token`)."""
    term: int
    acks: set[NodeId] = field(default_factory=set)


class ReadOnly:
    """A leader's pending ReadIndex rounds, in the order they began, and the
    acknowledgements its lease rests on."""

    __slots__ = ("option", "pending", "queue", "seq", "lease_acks", "lease_revoked")

    def __init__(self, option: ReadOnlyOption) -> None:
        self.option = option
        # Round token -> status; queue holds the tokens in the order sent.
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []
        # Rounds begun in this leadership; names the next round.
        self.seq = 0
        # Peers heard from (AppendResponse or HeartbeatResponse of this
        # leader's term) in the current check-quorum window.
        self.lease_acks: set[NodeId] = set()
        # A TimeoutNow went out in this term: no lease until the term ends.
        self.lease_revoked = False

    # -- ReadIndex rounds ---------------------------------------------------------------

    def add_request(self, term: int, index: int, ctx: bytes, requester: NodeId) -> bytes:
        """Begin a round for a read at ``index``; returns the round's token,
        which the heartbeats of the round must carry.  Readers may share a
        ``ctx``: every request gets its own round."""
        self.seq += 1
        token = round_token(term, self.seq)
        self.pending[token] = ReadIndexStatus(index, requester, ctx, token, term)
        self.queue.append(token)
        return token

    def recv_ack(self, nid: NodeId, token: bytes, term: int) -> set[NodeId] | None:
        """Record that ``nid`` answered round ``token``; returns who has
        answered it, or None if no such round of ``term`` is pending."""
        rs = self.pending.get(token)
        if rs is None or rs.term != term:
            return None
        rs.acks.add(nid)
        return rs.acks

    def advance(self, token: bytes) -> list[ReadIndexStatus]:
        """Pop and return every round up to and including ``token``."""
        if token not in self.pending:
            return []
        i = self.queue.index(token) + 1
        done = [self.pending.pop(t) for t in self.queue[:i]]
        del self.queue[:i]
        return done

    def last_pending_token(self) -> bytes:
        """The token of the latest pending round (b"" if none): periodic
        heartbeats carry it, so their answers confirm every pending round."""
        return self.queue[-1] if self.queue else b""

    # -- lease evidence -----------------------------------------------------------------

    def new_lease_window(self) -> None:
        """A check-quorum window begins: acknowledgements must be earned anew."""
        self.lease_acks.clear()

    def reset(self) -> None:
        """Forget every round and all lease evidence (role or term changed)."""
        self.pending.clear()
        self.queue.clear()
        self.seq = 0
        self.lease_acks.clear()
        self.lease_revoked = False
