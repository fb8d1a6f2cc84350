"""The node's loop is the one owner of the store (issue 13, section 1).

Persists, snapshot adoption and log compaction are operations on the loop's
queue, run one at a time between Readies: none of them may overlap another,
even when persists run in a worker thread.  Before the split, compaction
ran on the event loop while an append ran in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from liferaft.runtime import Node, NodeConfig, ReplicatedCounter
from liferaft.runtime.store import DiskStore
from liferaft.storage import DiskStorage
from liferaft.transport import MemoryNetwork
from tests.runtime.sms.volatile import RecordingStateMachine


class OverlapCheckingStore(DiskStore):
    """A threaded DiskStore that records every call that starts while
    another is in flight (an assert would only kill a worker thread)."""

    threaded = True

    def __init__(self, disk: DiskStorage) -> None:
        super().__init__(disk)
        self._lock = threading.Lock()
        self.in_flight: list[str] = []
        self.overlaps: list[tuple[str, ...]] = []
        self.calls: dict[str, int] = {}

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        with self._lock:
            self.in_flight.append(what)
            self.calls[what] = self.calls.get(what, 0) + 1
            if len(self.in_flight) > 1:
                self.overlaps.append(tuple(self.in_flight))
        try:
            yield
        finally:
            with self._lock:
                self.in_flight.remove(what)

    def save(self, *args: Any, **kw: Any) -> None:
        with self._call("save"):
            time.sleep(0.0005)  # widen the window a concurrent caller would hit
            super().save(*args, **kw)

    def adopt_snapshot(self, meta: Any) -> None:
        with self._call("adopt"):
            super().adopt_snapshot(meta)

    def compact(self, index: int) -> None:
        with self._call("compact"):
            super().compact(index)

    def close(self) -> None:
        with self._call("close"):
            super().close()


async def _one_leader(store: DiskStore, sm: Any, **cfg: Any) -> Node:
    """A started single-node cluster on ``store``, once it leads."""
    node = Node(
        NodeConfig(id="n1", tick_interval=0.01, election_ticks=10, heartbeat_ticks=1, **cfg),
        sm,
        MemoryNetwork(seed=1).transport("n1"),
        store=store,
        initial_members={"n1": "n1"},
    )
    await node.start()
    try:
        async with asyncio.timeout(30):
            while not node.is_leader:
                await asyncio.sleep(0.01)
    except BaseException:
        await node.stop()
        raise
    return node


async def test_persist_compaction_and_adoption_never_overlap(tmp_path: Path) -> None:
    store = OverlapCheckingStore(DiskStorage(tmp_path, snapshot_data_in_memory=False))
    sm = ReplicatedCounter()
    # Every persist goes to a worker thread (inline_sync_entries=0).
    node = await _one_leader(store, sm, snapshot_entries=20, inline_sync_entries=0)
    try:
        async with asyncio.timeout(30):
            for _ in range(60):
                await asyncio.gather(*(sm.add(1) for _ in range(10)))
                if store.calls.get("compact", 0) >= 10:
                    break
    finally:
        await node.stop()
    assert store.calls.get("adopt", 0) >= 10 and store.calls.get("compact", 0) >= 10, store.calls
    assert not store.overlaps, f"store calls overlapped: {store.overlaps[:5]}"


class ThreadRecordingStore(DiskStore):
    """Records, per save that carries entries, their bytes and whether it
    ran on the event loop's thread."""

    threaded = True

    def __init__(self, disk: DiskStorage) -> None:
        super().__init__(disk)
        self.saves: list[tuple[int, bool]] = []
        self.main = threading.get_ident()

    def save(self, hard_state: Any, entries: Any, *args: Any, **kw: Any) -> None:
        if entries:
            size = sum(len(e.data) for e in entries)
            self.saves.append((size, threading.get_ident() == self.main))
        super().save(hard_state, entries, *args, **kw)


async def test_a_few_large_entries_are_synced_off_the_loop(tmp_path: Path) -> None:
    # Few entries may still be megabytes: written with the loop blocked they
    # would stall every caller and the heartbeats (INLINE_SYNC_BYTES).
    store = ThreadRecordingStore(DiskStorage(tmp_path, snapshot_data_in_memory=False))
    node = await _one_leader(store, RecordingStateMachine())
    try:
        async with asyncio.timeout(30):
            await node.propose(b"small")
            await node.propose(b"x" * (1 << 20))
            await node.propose(b"small again")
    finally:
        await node.stop()
    small = [on_loop for size, on_loop in store.saves if size < 100]
    large = [on_loop for size, on_loop in store.saves if size >= 1 << 20]
    assert small and all(small), store.saves  # a lone small write: inline
    assert large == [False], store.saves
