"""liferaft.runtime: a running Raft node for asyncio programs.

* :class:`Node` drives the sans-IO core over durable storage and a transport
  (docs/runtime.md);
* :class:`Replicated` with :func:`command` / :func:`query`: replicated
  Python objects (docs/statemachine.md), and ready-made ones:
  :class:`ReplicatedDict`, :class:`ReplicatedCounter`,
  :class:`ReplicatedLock`, :class:`ReplicatedQueue`;
* typed errors (:class:`NotLeader`, :class:`Timeout`, :class:`Stopped`,
  :class:`Dropped`, :class:`StorageFailed`) and events (:class:`EventType`).
"""

from .clock import ManualClock, SystemClock
from .commands import Replicated, command, query
from .errors import (
    BadConfig,
    BadMember,
    Dropped,
    MembershipError,
    NodeError,
    NotLeader,
    Stopped,
    StorageFailed,
    Timeout,
)
from .events import Event, EventType
from .node import Node, NodeConfig, NodeStatus
from .statemachine import StateMachine, StateSnapshot
from .types import ReplicatedCounter, ReplicatedDict, ReplicatedLock, ReplicatedQueue

__all__ = [
    "BadConfig",
    "BadMember",
    "Dropped",
    "Event",
    "EventType",
    "ManualClock",
    "MembershipError",
    "Node",
    "NodeConfig",
    "NodeError",
    "NodeStatus",
    "NotLeader",
    "Replicated",
    "ReplicatedCounter",
    "ReplicatedDict",
    "ReplicatedLock",
    "ReplicatedQueue",
    "StateMachine",
    "StateSnapshot",
    "Stopped",
    "StorageFailed",
    "SystemClock",
    "Timeout",
    "command",
    "query",
]
