"""liferaft.core: a sans-IO, deterministic Raft state machine.

The core performs no I/O, reads no clock and uses no global randomness.
Drive a :class:`RawNode` with ticks, messages and proposals, and carry out
each :class:`Ready` it returns (persist, send, apply, then ``advance()``).

Example::

    storage = MemoryStorage.bootstrap(["n1", "n2", "n3"])
    node = RawNode(Config(id="n1", rng=random.Random(7)), storage)
    node.tick()
    if node.has_ready():
        rd = node.ready()
        ...  # persist rd.hard_state / rd.entries, send rd.messages, apply
        node.advance()
"""

from .confchange import (
    ChangeType,
    ConfChange,
    ConfChangeSingle,
    Transition,
    add_learner,
    add_voter,
    apply_conf_change,
    remove_node,
)
from .errors import (
    ConfChangeError,
    ConfigError,
    LogCompactedError,
    LogCorruptionError,
    LogUnavailableError,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    ReadyOutstandingError,
    SnapshotTemporarilyUnavailableError,
)
from .log import LogReader
from .memory import MemoryStorage
from .messages import (
    AppendEntries,
    AppendResponse,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    NodeId,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    RequestVote,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
    StateChange,
    TimeoutNow,
    VoteResponse,
)
from .progress import ProgressState
from .raft import Config
from .rawnode import PeerStatus, RawNode, Ready, Status
from .read_index import ReadOnlyOption

__all__ = [
    "AppendEntries",
    "AppendResponse",
    "ChangeType",
    "ConfChange",
    "ConfChangeError",
    "ConfChangeSingle",
    "ConfState",
    "Config",
    "ConfigError",
    "Entry",
    "EntryType",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "LogCompactedError",
    "LogCorruptionError",
    "LogReader",
    "LogUnavailableError",
    "MemoryStorage",
    "Message",
    "NodeId",
    "NotLeaderError",
    "PeerStatus",
    "ProgressState",
    "ProposalDroppedError",
    "RaftError",
    "ReadyOutstandingError",
    "RawNode",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadOnlyOption",
    "ReadState",
    "Ready",
    "RequestVote",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SnapshotTemporarilyUnavailableError",
    "SoftState",
    "StateChange",
    "Status",
    "TimeoutNow",
    "Transition",
    "VoteResponse",
    "add_learner",
    "add_voter",
    "apply_conf_change",
    "remove_node",
]
