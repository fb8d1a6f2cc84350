"""A simulated node: its core, its disk and its application (a running CRC).

Shared by the cluster (cluster.py) and the Ready handler (ready.py).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from liferaft.core import NodeId, RawNode

from .disk import NodeDisk


class StateMachine:
    """The simulated application: a running CRC of every applied command.

    Its snapshot is (index, crc, count), so a node restored from a snapshot
    can be compared with one that applied every entry.
    """

    def __init__(self) -> None:
        self.index = 0
        self.crc = 0
        self.count = 0
        self.values: dict[int, bytes] = {}

    def apply(self, index: int, data: bytes) -> None:
        self.index = index
        if data:
            self.crc = zlib.crc32(data, self.crc)
            self.count += 1
            self.values[index] = data

    def snapshot(self) -> bytes:
        return f"{self.index}:{self.crc}:{self.count}".encode()

    def restore(self, data: bytes) -> None:
        if not data:
            self.index = self.crc = self.count = 0
        else:
            i, c, n = data.decode().split(":")
            self.index, self.crc, self.count = int(i), int(c), int(n)
        self.values = {}


@dataclass
class SimNode:
    id: NodeId
    disk: NodeDisk
    rn: RawNode | None = None
    sm: StateMachine = field(default_factory=StateMachine)
    alive: bool = False
    lives: int = 0
    # ReadIndex ctx -> the least index a linearizable answer may carry: every
    # write acknowledged, and every read answered, before the read began.
    pending_reads: dict[bytes, int] = field(default_factory=dict)
    # Highest commit index this life of the node has known.
    commit_seen: int = 0
    # (term, vote) of the last hard state this node saved.
    voted: tuple[int, NodeId | None] = (0, None)
    # (term, candidate) of the last vote this node granted on the wire: it
    # must survive any crash (§5.1, "before responding to RPCs").
    promised: tuple[int, NodeId] | None = None
