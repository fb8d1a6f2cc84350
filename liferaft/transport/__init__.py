"""liferaft.transport: moving Raft messages between nodes.

* :class:`Transport`, :class:`TransportHandler`, :class:`SnapshotSink`,
  :class:`CallError`: the contracts the runtime programs against
  (:mod:`.base`), including request/response calls beside the Raft traffic.
* :class:`TcpTransport`: asyncio TCP with length-prefixed frames, a
  handshake carrying the cluster and node ids, bounded per-peer queues,
  pipelined writes, reconnects with backoff, streamed snapshots and optional
  TLS/mTLS (:mod:`.tcp`).
* :class:`MemoryNetwork` / :class:`MemoryTransport`: a deterministic
  in-process network with partitions, loss and pauses, for runtime tests
  (:mod:`.memory`).

The wire format is described in docs/transport.md.
"""

from .base import (
    CallError,
    CallNotSent,
    CallNotSentError,
    SnapshotSink,
    Transport,
    TransportHandler,
    format_address,
    parse_address,
)
from .memory import MemoryNetwork, MemoryTransport
from .tcp import TcpTransport

__all__ = [
    "CallError",
    "CallNotSent",  # the old name, until 0.2.0
    "CallNotSentError",
    "MemoryNetwork",
    "MemoryTransport",
    "SnapshotSink",
    "TcpTransport",
    "Transport",
    "TransportHandler",
    "format_address",
    "parse_address",
]
