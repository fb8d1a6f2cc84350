"""Raft messages, log entries and the persistent-state records.

Every RPC has its own frozen, slotted dataclass.  All messages share the
fields ``term``, ``frm`` (the sender; ``from`` is a Python keyword) and
``to``.  Entries are NamedTuples: they are created once per proposal and read
many times on the replication hot path, so construction and attribute access
must be cheap.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

NodeId = str


class EntryType(enum.IntEnum):
    """What an entry carries."""

    NORMAL = 0
    """Opaque user data for the state machine (empty data is a leader's no-op)."""
    CONF_CHANGE = 1
    """An encoded :class:`~liferaft.core.confchange.ConfChange`."""


class Entry(NamedTuple):
    """One log entry.  ``index`` and ``term`` identify it uniquely (§5.3)."""

    # Shadows tuple.index(); entries are never searched by value.
    index: int  # type: ignore[assignment]
    term: int
    data: bytes = b""
    type: EntryType = EntryType.NORMAL


# Bytes charged to an entry beyond its payload when sizing a message.  It
# approximates the encoded header so a stream of empty entries is bounded too.
ENTRY_OVERHEAD = 16


def entry_size(e: Entry) -> int:
    """Approximate encoded size of an entry, for message size limits."""
    return len(e.data) + ENTRY_OVERHEAD


_data_of = itemgetter(2)


def entries_size(ents: Sequence[Entry]) -> int:
    """Sum of :func:`entry_size` over ``ents`` (computed without a Python loop)."""
    return sum(map(len, map(_data_of, ents))) + ENTRY_OVERHEAD * len(ents)


@dataclass(frozen=True, slots=True)
class ConfState:
    """A membership configuration as persisted with snapshots.

    ``voters_outgoing`` is non-empty only in a joint configuration (§6 of the
    Raft thesis, "joint consensus").  ``learners_next`` holds voters being
    demoted: they stay voters in the outgoing half until the joint state is
    left.
    """

    voters: frozenset[NodeId] = frozenset()
    learners: frozenset[NodeId] = frozenset()
    voters_outgoing: frozenset[NodeId] = frozenset()
    learners_next: frozenset[NodeId] = frozenset()
    auto_leave: bool = False

    def members(self) -> frozenset[NodeId]:
        """Every node id that appears anywhere in the configuration."""
        return self.voters | self.learners | self.voters_outgoing | self.learners_next


@dataclass(frozen=True, slots=True)
class HardState:
    """State that must be on stable storage before messages depending on it."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log and the membership at that point."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image; ``data`` is opaque to the core."""

    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""

    @property
    def index(self) -> int:
        return self.meta.index

    @property
    def term(self) -> int:
        return self.meta.term


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class Message:
    """Fields shared by every RPC."""

    term: int
    frm: NodeId
    to: NodeId


@dataclass(frozen=True, slots=True)
class AppendEntries(Message):
    """Leader -> follower: entries after (prev_index, prev_term) (§5.3)."""

    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResponse(Message):
    """Follower -> leader.

    On success ``index`` is the last index known to match the leader.  On
    rejection ``index`` echoes the rejected ``prev_index`` and
    (``hint_index``, ``hint_term``) is the follower's last entry at or before
    it whose term is <= the leader's ``prev_term``: the leader can skip every
    index after it in one round trip (§5.3, "the follower can include the
    term of the conflicting entry").
    """

    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat(Message):
    """Leader -> follower keep-alive; ``ctx`` carries a ReadIndex round."""

    commit: int
    ctx: bytes = b""


@dataclass(frozen=True, slots=True)
class HeartbeatResponse(Message):
    """Follower -> leader; echoes ``ctx``."""

    ctx: bytes = b""


@dataclass(frozen=True, slots=True)
class RequestVote(Message):
    """Candidate -> voter (§5.2).  ``pre_vote`` asks without disrupting (thesis §9.6).

    For a pre-vote, ``term`` is the term the candidate *would* use; the
    sender's real term is one lower.  ``transfer`` marks an election started
    by leadership transfer, which voters honour even inside a leader lease.
    """

    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse(Message):
    """Voter -> candidate."""

    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class InstallSnapshot(Message):
    """Leader -> follower whose next entry was compacted away (§7)."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class TimeoutNow(Message):
    """Leader -> transfer target: start an election immediately (thesis §3.10)."""


@dataclass(frozen=True, slots=True)
class ReadIndexRequest(Message):
    """Follower -> leader: ask for a linearizable read index (thesis §6.4).
    ``lease``: the reader accepts a lease-based answer (§6.4.1), if the
    leader allows lease reads at all."""

    ctx: bytes
    lease: bool = False


@dataclass(frozen=True, slots=True)
class ReadIndexResponse(Message):
    """Leader -> follower: reads at ``index`` are linearizable once applied."""

    ctx: bytes
    index: int


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read request whose ``ctx`` may be served once ``index`` is applied."""

    index: int
    ctx: bytes


class Role(enum.Enum):
    """The node's role in its current term."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting: the role and the known leader."""

    role: Role
    leader: NodeId | None


@dataclass(frozen=True, slots=True)
class StateChange:
    """A change of role, term or known leader, and why it happened.

    The core does no logging (it is sans-IO); it hands these to the caller in
    :attr:`Ready.changes`, in the order they happened, and the caller logs
    them.  ``reason`` is for people: "election timeout", "higher term from
    n2", "lost quorum (check quorum)"."""

    role: Role
    term: int
    leader: NodeId | None
    reason: str
