"""liferaft.runtime: a running Raft node for asyncio programs.

* :class:`Node` drives the sans-IO core over durable storage and a transport
  (docs/runtime.md);
* :class:`Replicated` with :func:`command` / :func:`query`: replicated
  Python objects (docs/statemachine.md), and ready-made ones:
  :class:`ReplicatedDict`, :class:`ReplicatedCounter`,
  :class:`ReplicatedLock`, :class:`ReplicatedQueue`, and named locks with
  fencing tokens (:class:`ReplicatedLockManager`);
* several replicated objects on one node: ``Node(state_machine=[a, b])``
  (:class:`Composite`, each object its own section);
* typed errors (:class:`NotLeaderError`, :class:`NodeTimeoutError`,
  :class:`StoppedError`, :class:`DroppedError`, :class:`StorageFailedError`;
  the old names without ``Error`` are aliases until 0.2.0) and events
  (:class:`EventType`).
"""

from .clock import ManualClock, SystemClock
from .commands import Replicated, command, query
from .composite import Composite
from .errors import (
    BadConfig,
    BadConfigError,
    BadMember,
    BadMemberError,
    CallFailedError,
    Dropped,
    DroppedError,
    LockTimeoutError,
    MembershipError,
    NodeError,
    NodeTimeoutError,
    NotLeader,
    NotLeaderError,
    PeerUnreachableError,
    Stopped,
    StoppedError,
    StorageFailed,
    StorageFailedError,
    Timeout,
    UnknownCallError,
    UnknownSectionError,
)
from .events import Event, EventType
from .locks import DistributedLock, LockInfo, ReplicatedLockManager
from .node import Node, NodeConfig, NodeStatus
from .statemachine import StateMachine, StateSnapshot
from .types import ReplicatedCounter, ReplicatedDict, ReplicatedLock, ReplicatedQueue

__all__ = [
    "BadConfig",
    "BadConfigError",
    "BadMember",
    "BadMemberError",
    "CallFailedError",
    "Composite",
    "DistributedLock",
    "Dropped",
    "DroppedError",
    "Event",
    "EventType",
    "LockInfo",
    "LockTimeoutError",
    "ManualClock",
    "MembershipError",
    "Node",
    "NodeConfig",
    "NodeError",
    "NodeStatus",
    "NodeTimeoutError",
    "NotLeader",
    "NotLeaderError",
    "PeerUnreachableError",
    "Replicated",
    "ReplicatedCounter",
    "ReplicatedDict",
    "ReplicatedLock",
    "ReplicatedLockManager",
    "ReplicatedQueue",
    "StateMachine",
    "StateSnapshot",
    "Stopped",
    "StoppedError",
    "StorageFailed",
    "StorageFailedError",
    "SystemClock",
    "Timeout",
    "UnknownCallError",
    "UnknownSectionError",
    "command",
    "query",
]
