"""An off-loop state machine's small batches run on the loop when nothing
else waits (NodeConfig.inline_apply_entries): the rules of the worker hold
across both ways (every index once, in order, never two calls at a time,
a hold is never overtaken)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from liferaft.runtime.config import NodeConfig
from liferaft.runtime.errors import BadConfigError
from tests.runtime.cluster import MemCluster
from tests.runtime.sms.volatile import BatchRecordingStateMachine
from tests.runtime.test_durable_apply import drive, until


def _handed(sm: BatchRecordingStateMachine) -> list[int]:
    return [i for b in sm.batches for i in b]


async def test_a_lone_write_is_applied_on_the_loop() -> None:
    c = MemCluster(3, sm=lambda: BatchRecordingStateMachine(off_loop=True), inline_apply_entries=16)
    await c.start()
    try:
        ld = await c.leader()
        sm = c.sms[ld.id]
        for i in range(5):
            await drive(c, ld.propose(b"one%d" % i))
        main = threading.get_ident()
        assert sm.threads == {main}, "a write alone skips the thread hops"
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        for nid, s in c.sms.items():
            assert _handed(s) == list(range(2, c.nodes[nid].applied + 1)), "every index, once"
    finally:
        await c.stop()


async def test_worker_and_loop_take_turns_in_log_order() -> None:
    c = MemCluster(3, sm=lambda: BatchRecordingStateMachine(off_loop=True), inline_apply_entries=16)
    await c.start()
    try:
        ld = await c.leader()
        for r in range(4):
            # A burst (the worker: other writes wait), then writes alone (the loop).
            burst = [ld.submit(b"b%d.%d" % (r, i)) for i in range(30)]
            for i in range(3):
                await drive(c, ld.propose(b"a%d.%d" % (r, i)))
            await until(c, lambda burst=burst: all(f.done() for f in burst))
            assert [f.result() for f in burst] == sorted(f.result() for f in burst)
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        sm = c.sms[ld.id]
        assert threading.get_ident() in sm.threads and len(sm.threads) > 1, (
            "both the loop and the worker applied batches here"
        )
        for nid, s in c.sms.items():
            assert _handed(s) == list(range(2, c.nodes[nid].applied + 1)), "every index, once"
            s.assert_exactly_once()
    finally:
        await c.stop()


async def test_a_hold_is_not_overtaken_by_a_write_alone() -> None:
    c = MemCluster(3, sm=lambda: BatchRecordingStateMachine(off_loop=True), inline_apply_entries=16)
    await c.start()
    try:
        ld = await c.leader()
        sm = c.sms[ld.id]
        await drive(c, ld.propose(b"before"))
        released = await drive(c, ld.applier.hold())
        try:
            seen = len(_handed(sm))
            fut = ld.submit(b"held")
            for _ in range(50):
                await c.clock.advance(0.01)
                await asyncio.sleep(0.001)
            assert len(_handed(sm)) == seen, "applied while the state machine was held"
            assert not fut.done()
        finally:
            if not released.done():
                released.set_result(None)  # or the stop waits for the parked worker
        await until(c, fut.done)
        assert _handed(sm) == list(range(2, ld.applied + 1))
    finally:
        await c.stop()


async def test_off_by_default_the_worker_takes_every_batch() -> None:
    c = MemCluster(3, sm=lambda: BatchRecordingStateMachine(off_loop=True))
    await c.start()
    try:
        ld = await c.leader()
        for i in range(3):
            await drive(c, ld.propose(b"one%d" % i))
        assert threading.get_ident() not in c.sms[ld.id].threads
    finally:
        await c.stop()


def test_inline_apply_entries_is_checked() -> None:
    with pytest.raises(BadConfigError, match="inline_apply_entries"):
        NodeConfig(id="n1", inline_apply_entries=-1).validate()
