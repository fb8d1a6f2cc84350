"""Group commit under concurrent load, and nothing held back without it.

A front end that hands the event loop one call per wakeup (grpcio's asyncio
server accepts one RPC per completion) must still get Raft's batching:

- the WAL: while other writes are in flight, a Ready's fsync runs in the
  I/O thread, so the writes that arrive meanwhile share the next fsync; a
  write alone is synced inline on the loop, as before (no thread hop, no
  timer);
- the apply: batches queued behind a running off-loop ``apply_batch`` are
  handed over as one;
- reads: while a ReadIndex round is in flight, arriving readers wait for
  the next round instead of starting one each, and a round that is never
  answered holds nobody back for longer than a heartbeat interval.

Counts, never timings: the fake fsync only widens the window in which
writes can arrive.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from liferaft.runtime import Node, NodeConfig, ReplicatedCounter
from liferaft.runtime.statemachine import ApplyEntry
from liferaft.runtime.store import DiskStore
from liferaft.storage import DiskStorage
from liferaft.transport import MemoryNetwork
from tests.runtime.cluster import MemCluster
from tests.runtime.sms.volatile import BatchRecordingStateMachine

FSYNC = 0.002  # seconds a save with entries takes (a slow disk's fsync)


class CountingStore(DiskStore):
    """A threaded DiskStore recording, for each save that carries entries,
    how many and on which thread it ran."""

    threaded = True

    def __init__(self, disk: DiskStorage) -> None:
        super().__init__(disk)
        self.saves: list[tuple[int, int]] = []  # (entries, thread id)

    def save(self, hs: Any, entries: Any, *args: Any, **kw: Any) -> None:
        if entries:
            self.saves.append((len(entries), threading.get_ident()))
            time.sleep(FSYNC)
        super().save(hs, entries, *args, **kw)


class SlowBatches(BatchRecordingStateMachine):
    """Off-loop batches that take longer than a WAL save, so the Readies
    that commit meanwhile queue behind one."""

    def __init__(self) -> None:
        super().__init__(off_loop=True)

    def apply_batch(self, entries: Sequence[ApplyEntry]) -> list[Any]:
        time.sleep(5 * FSYNC)
        return super().apply_batch(entries)


class Three:
    """Three nodes over the memory transport, real clock, counting stores;
    ``sm`` makes each node's state machine."""

    def __init__(self, tmp_path: Path, sm: Callable[[], Any]) -> None:
        net = MemoryNetwork(seed=1)
        ids = ["n1", "n2", "n3"]
        self.stores = {
            i: CountingStore(DiskStorage(tmp_path / i, snapshot_data_in_memory=False))
            for i in ids
        }
        self.sms = {i: sm() for i in ids}
        self.nodes = {
            i: Node(
                NodeConfig(id=i, tick_interval=0.01, election_ticks=10, heartbeat_ticks=1),
                self.sms[i],
                net.transport(i),
                store=self.stores[i],
                initial_members={j: j for j in ids},
            )
            for i in ids
        }

    async def leader(self) -> str:
        for n in self.nodes.values():
            await n.start()
        async with asyncio.timeout(30):
            while True:
                leaders = [i for i, n in self.nodes.items() if n.is_leader]
                if len(leaders) == 1:
                    # Its first entry (the no-op) applied: a write alone is alone.
                    ld = self.nodes[leaders[0]]
                    if ld.applied >= ld.status().commit_index > 1:
                        return leaders[0]
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for n in self.nodes.values():
            await n.stop()


async def one_per_turn(n: int, write: Callable[[], Awaitable[Any]]) -> list[Any]:
    """``n`` concurrent writes, each submitted in its own event-loop turn
    (as grpcio's asyncio server hands calls over)."""
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.ensure_future(write()))
        await asyncio.sleep(0)
    async with asyncio.timeout(60):
        return await asyncio.gather(*tasks)


async def test_concurrent_writes_share_wal_fsyncs_off_the_loop(tmp_path: Path) -> None:
    c = Three(tmp_path, ReplicatedCounter)
    try:
        ld = await c.leader()
        sm, store = c.sms[ld], c.stores[ld]
        store.saves.clear()
        n = 200
        await one_per_turn(n, lambda: sm.add(1))
        assert await sm.get() == n
    finally:
        await c.stop()
    saved = sum(k for k, _ in store.saves)
    assert saved >= n
    # One fsync per write would be n saves; the writes that arrive during
    # one fsync share the next.
    assert len(store.saves) <= n // 2, f"{len(store.saves)} saves for {n} writes"
    loop_thread = threading.get_ident()
    assert any(t != loop_thread for _, t in store.saves), "no save ran off the loop"


async def test_a_write_alone_is_synced_inline_at_once(tmp_path: Path) -> None:
    """One caller at a time: every write gets its own save on the loop's
    thread, as soon as it is proposed (nothing waits for company)."""
    c = Three(tmp_path, ReplicatedCounter)
    try:
        ld = await c.leader()
        sm, store = c.sms[ld], c.stores[ld]
        store.saves.clear()
        for _ in range(20):
            async with asyncio.timeout(10):
                await sm.add(1)
    finally:
        await c.stop()
    loop_thread = threading.get_ident()
    assert [k for k, _ in store.saves] == [1] * 20
    assert all(t == loop_thread for _, t in store.saves)


async def test_readies_queued_behind_an_off_loop_batch_are_applied_as_one(
    tmp_path: Path,
) -> None:
    c = Three(tmp_path, SlowBatches)
    ld = await c.leader()
    node, sm = c.nodes[ld], c.sms[ld]
    handed: list[int] = []
    real = node.applier.apply

    def counting(ents: list[Any]) -> bool:
        handed.append(len(ents))
        return real(ents)

    # The loop's apply hook is the applier's: count the Readies it hands over.
    assert node.loop._hooks is not None
    node.loop._hooks.apply = counting
    try:
        sm.batches.clear()
        n = 200
        results = await one_per_turn(n, lambda: node.propose(b"w"))
    finally:
        await c.stop()
    assert len(results) == n
    sm.assert_exactly_once()
    applied = [i for b in sm.batches for i in b]
    assert applied == sorted(applied) and len(applied) >= n
    assert len(sm.batches) < len(handed), (len(sm.batches), len(handed))


async def rounds_counted(c: MemCluster, *, lose_first: bool = False) -> tuple[Node, list[bytes]]:
    """The leader of ``c``, once it applied a write, and the ReadIndex
    rounds it starts from now on (the first one dropped if ``lose_first``)."""
    ld = await c.leader()
    await c.drive(c.sms[ld.id].add(3))
    assert ld.rn is not None
    calls: list[bytes] = []
    real = ld.rn.read_index

    def counting(ctx: bytes, lease: bool | None = None) -> None:
        calls.append(ctx)
        if not (lose_first and len(calls) == 1):
            real(ctx, lease)

    ld.rn.read_index = counting  # type: ignore[method-assign]
    return ld, calls


async def test_reads_arriving_during_a_round_share_the_next_one() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld, calls = await rounds_counted(c)

        async def reads() -> list[int]:
            tasks = []
            for _ in range(50):
                tasks.append(asyncio.ensure_future(ld.read_index()))
                await asyncio.sleep(0)  # one reader per loop turn
            return await asyncio.gather(*tasks)

        idx = await c.drive(reads())
        assert len(idx) == 50 and min(idx) >= 1
        # One round per reader would be 50 (each reader's turn runs the
        # node task after it): those that arrive while a round is out wait
        # for its answer and go together.
        assert len(calls) <= 25, len(calls)
    finally:
        await c.stop()


async def test_a_round_never_answered_holds_later_readers_back_briefly() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld, calls = await rounds_counted(c, lose_first=True)
        lost = asyncio.ensure_future(ld.read_index(timeout=3.0))
        await c.run(0.001)
        assert len(calls) == 1
        # Within a second (simulated; heartbeat interval 0.01 s) a later
        # reader gets a round of its own, long before the lost one times out,
        # and its answer serves the lost round's reader too (who arrived
        # before it began) instead of leaving it to its timeout.
        later = await c.drive(ld.read_index(timeout=3.0), seconds=1.0)
        assert later >= 1 and len(calls) == 2
        assert lost.done() and lost.result() == later
    finally:
        await c.stop()
