"""A simulated disk that loses what was not synced when its node crashes.

The node writes through a :class:`SimDisk`: every write lands in the live
:class:`~liferaft.core.MemoryStorage` at once (the page cache) and is queued
as *unsynced*.  ``sync()`` makes the queue durable.  ``crash(rng)`` keeps a
random prefix of the unsynced writes (the kernel may have flushed some of
them, in order, and may have torn the last append part-way) and drops the
rest.  ``recover()`` rebuilds the live store from what is durable.

The order a node writes a Ready in matters: snapshot, then entries, then
hard state, so a durable commit index never points past durable entries.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from liferaft.core import ConfState, Entry, HardState, MemoryStorage, Snapshot


class NodeDisk(Protocol):
    """What the simulator needs from a node's disk (SimDisk, or RealDisk on files)."""

    # The store the core reads: a MemoryStorage or a liferaft.storage.DiskStorage.
    live: Any
    persist_vote: bool

    def set_hard_state(self, hs: HardState) -> None: ...
    def apply_snapshot(self, snap: Snapshot) -> None: ...
    def append(self, entries: list[Entry]) -> None: ...
    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot: ...
    def compact(self, index: int) -> None: ...
    def sync(self) -> None: ...
    def crash(self, rng: random.Random) -> int: ...
    def recover(self) -> Any: ...


@dataclass
class _Op:
    kind: str
    hs: HardState | None = None
    snap: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    index: int = 0
    conf: ConfState | None = None
    data: bytes = b""


def _apply(store: MemoryStorage, op: _Op) -> None:
    if op.kind == "hs":
        assert op.hs is not None
        store.set_hard_state(op.hs)
    elif op.kind == "snap":
        assert op.snap is not None
        store.apply_snapshot(op.snap)
    elif op.kind == "append":
        store.append(op.entries)
    elif op.kind == "create":
        assert op.conf is not None
        store.create_snapshot(op.index, op.conf, op.data)
    elif op.kind == "compact":
        store.compact(op.index)
    else:  # pragma: no cover - programming error
        raise ValueError(op.kind)


class SimDisk:
    """Durable copy of a node's storage plus a queue of unsynced writes."""

    def __init__(self, initial: MemoryStorage) -> None:
        self.durable = initial
        self.live = copy.deepcopy(initial)
        self.unsynced: list[_Op] = []
        self.syncs = 0
        # When False the disk "forgets" to persist the vote (a planted bug).
        self.persist_vote = True

    def set_hard_state(self, hs: HardState) -> None:
        self.live.set_hard_state(hs)
        if not self.persist_vote:
            hs = HardState(hs.term, None, hs.commit)
        self.unsynced.append(_Op("hs", hs=hs))

    def apply_snapshot(self, snap: Snapshot) -> None:
        self.live.apply_snapshot(snap)
        self.unsynced.append(_Op("snap", snap=snap))

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        self.live.append(entries)
        self.unsynced.append(_Op("append", entries=list(entries)))

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        snap = self.live.create_snapshot(index, conf, data)
        self.unsynced.append(_Op("create", index=index, conf=conf, data=data))
        return snap

    def compact(self, index: int) -> None:
        self.live.compact(index)
        self.unsynced.append(_Op("compact", index=index))

    def sync(self) -> None:
        for op in self.unsynced:
            _apply(self.durable, op)
        self.unsynced.clear()
        self.syncs += 1

    def crash(self, rng: random.Random) -> int:
        """Lose unsynced writes except a random prefix; returns how many ops survived."""
        n = rng.randint(0, len(self.unsynced)) if self.unsynced else 0
        for op in self.unsynced[:n]:
            _apply(self.durable, op)
        if n < len(self.unsynced) and self.unsynced[n].kind == "append":
            # A torn append: some leading entries made it to disk.
            ents = self.unsynced[n].entries
            k = rng.randint(0, len(ents))
            if k:
                _apply(self.durable, _Op("append", entries=ents[:k]))
        self.unsynced.clear()
        return n

    def recover(self) -> MemoryStorage:
        """The live store after a restart: exactly what is durable."""
        self.live = copy.deepcopy(self.durable)
        return self.live
