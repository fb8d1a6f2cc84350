"""Deferred commits of inline batches (docs/statemachine.md, "settle"): a
state machine with ``settle()`` may leave the batches the loop applies
uncommitted; the runtime settles them within NodeConfig.settle_delay, before
anything goes to the worker, at close, and when another thread asks; a
failing settle stops the node."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from liferaft.runtime.config import NodeConfig
from liferaft.runtime.errors import BadConfigError
from liferaft.runtime.node import Node
from liferaft.runtime.statemachine import ApplyEntry
from tests.runtime.cluster import MemCluster
from tests.runtime.sms.volatile import BatchRecordingStateMachine
from tests.runtime.test_durable_apply import drive, until


class Settling(BatchRecordingStateMachine):
    """Keeps the batches applied on its bound thread ``pending`` until
    ``settle()``, as liferaft-kv's store keeps an open transaction, and
    records every break of the rules the runtime promises: a batch in
    another thread, or a settle off the bound thread, while some are
    pending."""

    def __init__(self) -> None:
        super().__init__(off_loop=True)
        self.request: Callable[[], concurrent.futures.Future[None]] | None = None
        self.bound_thread: int | None = None
        self.pending: list[int] = []
        self.settles = 0
        self.settle_threads: set[int] = set()
        self.broken: list[str] = []
        self.boom: BaseException | None = None

    def bind_settle(self, request: Callable[[], concurrent.futures.Future[None]]) -> None:
        self.request = request
        self.bound_thread = threading.get_ident()

    def settle(self) -> None:
        if threading.get_ident() != self.bound_thread:
            self.broken.append("settle off the bound thread")
        if self.boom is not None and self.pending:
            raise self.boom
        self.settles += 1
        self.settle_threads.add(threading.get_ident())
        self.pending.clear()

    def apply_batch(self, entries: Sequence[ApplyEntry]) -> list[Any]:
        here = threading.get_ident()
        if here != self.bound_thread and self.pending:
            self.broken.append(f"batch {entries[0].index} in the worker over unsettled "
                               f"{self.pending}")  # fmt: skip
        out = super().apply_batch(entries)
        if here == self.bound_thread:
            self.pending.extend(e.index for e in entries)
        return out


def cluster(settle_delay: float, **cfg: Any) -> MemCluster:
    return MemCluster(3, sm=Settling, inline_apply_entries=16, settle_delay=settle_delay, **cfg)


@contextlib.asynccontextmanager
async def leading(settle_delay: float) -> AsyncIterator[tuple[MemCluster, Node, Settling]]:
    """A started cluster, its leader and the leader's state machine."""
    c = cluster(settle_delay)
    await c.start()
    try:
        ld = await c.leader()
        sm = c.sms[ld.id]
        assert isinstance(sm, Settling)
        yield c, ld, sm
    finally:
        await c.stop()


async def test_writes_are_answered_before_the_settle_and_a_thread_can_ask_for_it() -> None:
    async with leading(settle_delay=30.0) as (c, ld, sm):
        for i in range(3):
            await drive(c, ld.propose(b"w%d" % i))
        assert sm.bound_thread == threading.get_ident(), "bound on the loop's thread"
        assert len(sm.pending) >= 3 and sm.settles == 0, "answered before any settle"
        assert sm.request is not None
        request = sm.request
        done = await asyncio.to_thread(lambda: request().result(timeout=10))
        assert done is None and sm.pending == [] and sm.settles == 1
        assert sm.settle_threads == {threading.get_ident()}, "settled on the loop"
        assert sm.broken == []


async def test_a_settle_comes_within_the_delay() -> None:
    async with leading(settle_delay=0.05) as (c, ld, sm):
        await drive(c, ld.propose(b"alone"))
        await until(c, lambda: not sm.pending, real=5.0)
        assert sm.settles >= 1 and sm.broken == []


async def test_nothing_goes_to_the_worker_over_unsettled_batches() -> None:
    """Writes alone (the loop, deferred) and bursts (the worker) in turns,
    a snapshot every 5 entries (a hold each): every worker batch and hold
    finds the loop's batches settled."""
    c = cluster(settle_delay=30.0, snapshot_entries=5)
    await c.start()
    try:
        ld = await c.leader()
        for r in range(3):
            for i in range(2):
                await drive(c, ld.propose(b"a%d.%d" % (r, i)))
            burst = [ld.submit(b"b%d.%d" % (r, i)) for i in range(30)]
            await until(c, lambda burst=burst: all(f.done() for f in burst))
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        main = threading.get_ident()
        sm = c.sms[ld.id]
        assert isinstance(sm, Settling)
        assert main in sm.threads and len(sm.threads) > 1, "both ways were taken"
        assert sm.settles >= 3, "each burst settled the loop's batches first"
    finally:
        await c.stop()
    for s in c.sms.values():
        assert isinstance(s, Settling)
        assert s.broken == [] and s.pending == [], (s.broken, s.pending)
        s.assert_exactly_once()


async def test_a_stop_settles() -> None:
    async with leading(settle_delay=30.0) as (c, ld, sm):
        await drive(c, ld.propose(b"alone"))
        assert sm.pending
    assert sm.pending == [] and sm.broken == []


async def test_a_failing_settle_stops_the_node(caplog: pytest.LogCaptureFixture) -> None:
    async with leading(settle_delay=0.05) as (c, ld, sm):
        sm.boom = OSError("disk on fire")
        await drive(c, ld.propose(b"lost to the store, not to the log"))
        await until(c, ld.crashed.is_set, real=5.0)
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(f"node {ld.id}: stopping: settle failed" in m for m in lines), lines
        # A thread that asks now is told, not left waiting.
        assert sm.request is not None
        request = sm.request
        with pytest.raises(Exception, match="settle failed|state machine failed"):
            await asyncio.to_thread(lambda: request().result(timeout=10))


def test_settle_delay_is_checked() -> None:
    for bad in (-1.0, float("nan"), 61.0):
        with pytest.raises(BadConfigError, match="settle_delay"):
            NodeConfig(id="n1", settle_delay=bad).validate()


async def test_enough_pending_entries_settle_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """An open transaction keeps every page it dirtied in memory: past
    SETTLE_ENTRIES (or SETTLE_BYTES) pending, the loop settles right after
    the batch, not at the end of the delay."""
    from liferaft.runtime import applier

    monkeypatch.setattr(applier, "SETTLE_ENTRIES", 3)
    async with leading(settle_delay=30.0) as (c, ld, sm):
        await drive(c, ld.propose(b"one"))
        assert sm.pending and sm.settles == 0
        for i in range(3):
            await drive(c, ld.propose(b"more%d" % i))
        assert sm.settles >= 1 and len(sm.pending) < 3, (sm.settles, sm.pending)
        assert sm.broken == []
