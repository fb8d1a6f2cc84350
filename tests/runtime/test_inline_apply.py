"""An off-loop state machine's small batches run on the loop when nothing
else waits (NodeConfig.inline_apply_entries): the rules of the worker hold
across both ways (every index once, in order, never two calls at a time,
a hold is never overtaken)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from liferaft.runtime.applier import INLINE_APPLY_BYTES
from liferaft.runtime.config import NodeConfig
from liferaft.runtime.errors import BadConfigError
from liferaft.runtime.statemachine import ApplyEntry
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


class Choosy(BatchRecordingStateMachine):
    """Says a batch holding a ``wide`` entry is costly (``may_apply_inline``),
    as liferaft-kv's store says of a range delete; ``boom`` breaks it."""

    def __init__(self, off_loop: bool = True) -> None:
        super().__init__(off_loop=off_loop)
        self.boom: BaseException | None = None

    def may_apply_inline(self, entries: Sequence[ApplyEntry]) -> bool:
        if any(e.data == b"unreadable" for e in entries):
            raise ValueError("cannot tell")
        return not any(e.data.startswith(b"wide") for e in entries)

    def apply_batch(self, entries: Sequence[ApplyEntry]) -> list[Any]:
        if self.boom is not None and any(e.data == b"boom" for e in entries):
            raise self.boom
        return super().apply_batch(entries)


def _answered_ok(f: asyncio.Future[Any]) -> bool:
    return f.done() and not f.cancelled() and f.exception() is None


def _threads_of(sm: BatchRecordingStateMachine, index: int) -> set[int]:
    return {t for b, t in zip(sm.batches, sm.batch_threads, strict=True) if index in b}


async def test_a_batch_the_state_machine_calls_costly_runs_in_the_worker() -> None:
    """A few entries may hold unbounded work (a range delete over 100 000
    keys: over half a second in LMDB): on the loop it would stall every client
    and the heartbeats.  The state machine's ``may_apply_inline`` says no,
    and so does the runtime for a batch of more than INLINE_APPLY_BYTES."""
    c = MemCluster(3, sm=Choosy, inline_apply_entries=16)
    await c.start()
    try:
        ld = await c.leader()
        sm = c.sms[ld.id]
        main = threading.get_ident()
        cheap = await drive(c, ld.propose(b"cheap"))
        wide = await drive(c, ld.propose(b"wide: a million keys"))
        big = await drive(c, ld.propose(b"x" * (INLINE_APPLY_BYTES + 1)))
        # A hint that raises is a "no", never a stop of the node.
        odd = await drive(c, ld.propose(b"unreadable"))
        assert not ld.crashed.is_set() and main not in _threads_of(sm, odd)
        assert _threads_of(sm, cheap) == {main}
        assert main not in _threads_of(sm, wide), "the costly batch ran on the loop"
        assert main not in _threads_of(sm, big), "the large batch ran on the loop"
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        for nid, s in c.sms.items():
            assert _handed(s) == list(range(2, c.nodes[nid].applied + 1)), "every index, once"
    finally:
        await c.stop()


@pytest.mark.parametrize(
    ("inline", "off_loop"),
    [(16, True), (0, True), (0, False)],
    ids=["loop", "worker", "on-loop-sm"],
)
@pytest.mark.parametrize("boom", [OSError("disk on fire"), asyncio.CancelledError()])
async def test_a_failing_batch_stops_the_node_on_the_loop_as_in_the_worker(
    boom: BaseException, inline: int, off_loop: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The store breaks in a batch on the loop: the node stops through the
    same door as a worker's failure (its log line names the state machine,
    not "unexpected error"; ``crashed`` is set), the broken batch's caller
    is not answered and nothing behind it is applied.  A CancelledError out
    of ``apply_batch`` (a cancelled future it waited on) is the state
    machine's failure too: on the loop it ended the node task silently (a
    node wedged with no sign), in the worker it ended the worker silently
    and the next batch was applied over the gap.  A batch state machine
    that never leaves the loop (``on-loop-sm``) goes through the same door."""
    c = MemCluster(3, sm=lambda: Choosy(off_loop), inline_apply_entries=inline)
    await c.start()
    try:
        ld = await c.leader()
        await drive(c, ld.propose(b"ok"))
        sm, applied = c.sms[ld.id], ld.applied
        sm.boom = boom
        broken = ld.submit(b"boom")
        await until(c, ld.crashed.is_set, real=5.0)
        behind = ld.submit(b"behind")
        for _ in range(30):
            await c.clock.advance(0.01)
            await asyncio.sleep(0.001)
        assert ld.applied == applied and _handed(sm) == list(range(2, applied + 1))
        assert not _answered_ok(broken) and not _answered_ok(behind)
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(f"node {ld.id}: stopping: apply_batch failed" in m for m in lines), lines
        assert not any("unexpected error in the node task" in m for m in lines), lines
    finally:
        await c.stop()


async def test_members_join_and_leave_with_batches_on_the_loop_and_snapshots_agree() -> None:
    """Membership changes alone in their batches (the loop applies them),
    snapshots every 3 entries: the configuration noted for the applied
    index is the core's, so each snapshot carries the members in force at
    its index, and every index is applied once on every member."""
    c = MemCluster(
        3,
        sm=lambda: BatchRecordingStateMachine(off_loop=True),
        inline_apply_entries=16,
        snapshot_entries=3,
    )
    await c.start()
    try:
        ld = await c.leader()
        main = threading.get_ident()
        for new in ("n4", "n5"):
            n = c.make(new, initial=False)
            await n.start()
            await drive(c, n.join(ld.id, new))
            await drive(c, ld.propose(b"after " + new.encode()))
        gone = next(n for n in ("n1", "n2", "n3") if c.nodes[n] is not ld)
        await drive(c, ld.remove(gone))
        await drive(c, ld.propose(b"last"))
        live = [n for n in c.nodes if n != gone]
        await until(c, lambda: all(c.nodes[n].applied == ld.applied for n in live))
        assert main in c.sms[ld.id].threads
        for nid in live:
            a, meta = c.nodes[nid].applier, c.stores[nid].snapshot_meta()
            assert a.conf_index == a.applied and set(a.conf.voters) == set(live)
            assert meta.index >= ld.applied - 3 and a.snap_index == meta.index
            c.sms[nid].assert_exactly_once()
    finally:
        await c.stop()
