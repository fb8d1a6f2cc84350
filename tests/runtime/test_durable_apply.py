"""The durable state-machine contract, end to end through real Nodes
(docs/statemachine.md, "The durable contract"; liferaft/runtime/applier.py).

A small SQLite-backed state machine (tests/runtime/sms/sqlite.py) applies
each batch in one transaction that also writes its applied index, and its
``applied_log`` table refuses an index applied twice: so "each entry is
applied exactly once" is checked by the database itself, across crashes at
every point of a batch and restarts.  Volatile state machines (in memory)
show the plain, batch and off-loop paths and the leader's time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from liferaft.core import MemoryStorage
from liferaft.runtime import Node, entry_format
from liferaft.runtime.applier import Applier
from liferaft.runtime.apply_events import AppliedBatch, Lagged
from liferaft.runtime.store import wrap_snapshot
from tests.runtime.cluster import MemCluster
from tests.runtime.sms.sqlite import CrashPoint, SQLiteStateMachine
from tests.runtime.sms.volatile import (
    BatchRecordingStateMachine,
    LegacyStateMachine,
    RecordingStateMachine,
)


class CountingSQLite(SQLiteStateMachine):
    """Counts restores: a durable store that holds the snapshot is never restored."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.restores = 0

    def restore(self, chunks: Any) -> None:
        self.restores += 1
        super().restore(chunks)


async def until(c: MemCluster, cond: Callable[[], bool], real: float = 20.0) -> None:
    """Advance the manual clock until ``cond()``, letting worker threads (the
    off-loop applies) run in real time; bounded in real time."""
    deadline = time.monotonic() + real
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await c.clock.advance(0.01)
        await asyncio.sleep(0.001)


async def drive(c: MemCluster, coro: Any, real: float = 20.0) -> Any:
    task = asyncio.ensure_future(coro)
    await until(c, task.done, real)
    return task.result()


async def sqlite_cluster(
    tmp: Path, sm: type[CountingSQLite] = CountingSQLite, **cfg: Any
) -> MemCluster:
    c = MemCluster(3, **cfg)
    for nid in c.ids:
        c.sm_factory = lambda nid=nid: sm(tmp / f"{nid}.db")  # type: ignore[misc]
        await c.make(nid).start()
    return c


async def restart(c: MemCluster, tmp: Path, nid: str) -> Node:
    await c.nodes[nid].stop()
    c.sms[nid].close()
    c.sm_factory = lambda: CountingSQLite(tmp / f"{nid}.db")
    node = c.make(nid)
    await node.start()
    return node


async def write(c: MemCluster, keys: range) -> None:
    for i in keys:
        ld = await c.leader()
        await drive(c, ld.propose(f"k{i % 7}=v{i}".encode()))


def assert_exactly_once(c: MemCluster) -> None:
    """Every node's store holds every index once (the primary key saw to
    that), the same entries, and the same state; applied = its durable index."""
    logs = {nid: c.sms[nid].log() for nid in c.ids}
    first = logs[c.ids[0]]
    for nid, log in logs.items():
        idx = [row[0] for row in log]
        assert idx == list(range(idx[0], idx[-1] + 1)), f"{nid}: gaps or repeats {idx}"
        assert log == first, f"{nid} applied other entries"
        assert c.sms[nid].contents() == c.sms[c.ids[0]].contents()
        assert c.nodes[nid].applied == c.sms[nid].applied_index()


async def test_a_durable_state_machine_resumes_after_its_applied_index(tmp_path: Path) -> None:
    c = await sqlite_cluster(tmp_path, snapshot_entries=8)
    try:
        await write(c, range(30))
        ld = await c.leader()
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        f = next(nid for nid in c.ids if c.nodes[nid] is not ld)
        assert c.nodes[f].applier.snap_index > 1, "snapshots were taken"
        node = await restart(c, tmp_path, f)
        # It holds more than its snapshot: not restored, resumes after it.
        assert c.sms[f].restores == 0
        assert node.applied == c.sms[f].applied_index() > node.applier.snap_index
        await write(c, range(30, 45))
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        assert not node.crashed.is_set()
        assert_exactly_once(c)
    finally:
        await c.stop()


@pytest.mark.parametrize(
    ("point", "after"),
    [
        (CrashPoint.BEFORE_BATCH, 1),
        (CrashPoint.INSIDE_BATCH, 1),
        (CrashPoint.INSIDE_BATCH, 2),
        (CrashPoint.AFTER_COMMIT, 1),
    ],
)
@pytest.mark.parametrize("who", ["follower", "leader"])
async def test_a_crash_anywhere_in_a_batch_then_a_restart_applies_each_entry_once(
    tmp_path: Path, point: CrashPoint, after: int, who: str
) -> None:
    c = await sqlite_cluster(tmp_path, snapshot_entries=6)
    try:
        await write(c, range(10))
        ld = await c.leader()
        victim = ld.id if who == "leader" else next(n for n in c.ids if n != ld.id)
        c.sms[victim].arm(point, after_entries=after)
        crashed = c.nodes[victim].crashed.is_set
        for burst in range(4):  # bursts, so that batches hold several entries
            leader = await c.leader()
            futs = [leader.submit(f"k{i}=v{burst}".encode(), timeout=2) for i in range(5)]
            await until(c, lambda fs=futs: all(f.done() for f in fs) or crashed())
            if crashed():
                break
        assert c.nodes[victim].crashed.is_set(), "the injected crash stopped the node"
        node = await restart(c, tmp_path, victim)
        await write(c, range(20, 26))
        ld = await c.leader()
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        assert not node.crashed.is_set(), "an entry was handed to the store twice"
        assert_exactly_once(c)
    finally:
        await c.stop()


async def test_replaying_into_a_durable_store_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planted bug (how it was before issue 13): on restart ``applied`` is
    reset to the snapshot index, so a durable store is handed again what it
    holds.  The store's own check refuses it and the node stops: the test
    above would fail."""
    real = Applier.restore_from

    def forgetful(self: Applier, store: Any, meta: Any) -> None:
        real(self, store, meta)
        self.applied = meta.index

    c = await sqlite_cluster(tmp_path, snapshot_entries=8)
    try:
        await write(c, range(20))
        ld = await c.leader()
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        f = next(nid for nid in c.ids if c.nodes[nid] is not ld)
        monkeypatch.setattr(Applier, "restore_from", forgetful)
        node = await restart(c, tmp_path, f)
        await write(c, range(20, 24))
        await until(c, node.crashed.is_set)
    finally:
        await c.stop()


async def test_every_replica_gets_the_leaders_time_once_per_entry() -> None:
    c = MemCluster(3, sm=RecordingStateMachine)
    await c.start()
    try:
        ld = await c.leader()
        for i in range(5):
            await c.drive(ld.propose(b"x%d" % i))
        await c.until(lambda: all(len(sm.state) == 5 for sm in c.sms.values()))
        rows = [sm.state for sm in c.sms.values()]
        assert rows[0] == rows[1] == rows[2]
        assert all(a.leader_time >= c.clock.wall() - 60 for a in rows[0])
        assert [a.data for a in rows[0]] == [b"x%d" % i for i in range(5)]
        for sm in c.sms.values():
            sm.assert_exactly_once()
    finally:
        await c.stop()


@pytest.mark.parametrize("off_loop", [False, True])
async def test_a_batch_state_machine_gets_every_index_in_order(off_loop: bool) -> None:
    c = MemCluster(3, sm=lambda: BatchRecordingStateMachine(off_loop=off_loop))
    await c.start()
    try:
        ld = await c.leader()
        futs = [ld.submit(b"w%d" % i) for i in range(20)] + [ld.submit(b"!refused")]
        await until(c, lambda: all(f.done() for f in futs))
        assert [f.result() for f in futs[:20]] == sorted(f.result() for f in futs[:20])
        assert isinstance(futs[-1].exception(), ValueError)
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        main = threading.get_ident()
        for nid, sm in c.sms.items():
            handed = [i for b in sm.batches for i in b]
            assert handed == list(range(2, c.nodes[nid].applied + 1)), "every index, once"
            assert (main not in sm.threads) is off_loop
            sm.assert_exactly_once()
    finally:
        await c.stop()


async def test_an_off_loop_apply_leaves_the_loop_stepping_and_heartbeating() -> None:
    """While a batch is stuck in the state machine, the leader keeps sending
    heartbeats (the loop is not waiting for the batch)."""
    gate, inside = threading.Event(), threading.Event()

    class Slow(BatchRecordingStateMachine):
        block = False

        def apply_batch(self, entries: Any) -> list[Any]:
            if self.block and any(e.data for e in entries):
                inside.set()
                gate.wait(10)
            return super().apply_batch(entries)

    c = MemCluster(3, sm=lambda: Slow(off_loop=True))
    await c.start()
    try:
        ld = await c.leader()
        c.sms[ld.id].block = True
        sent: list[str] = []
        real_send = ld.transport.send

        def spy(m: Any) -> None:
            sent.append(type(m).__name__)
            real_send(m)

        ld.transport.send = spy  # type: ignore[method-assign]
        fut = ld.submit(b"slow")
        await until(c, inside.is_set, real=10)
        before = len(sent)
        await c.clock.advance(0.5, step=0.01)
        assert len(sent) - before >= 10, "the leader stopped sending while applying"
        assert ld.is_leader and not fut.done()
        gate.set()
        await until(c, fut.done)
        assert fut.result() > 0
    finally:
        gate.set()
        await c.stop()


async def test_an_entry_whose_envelope_cannot_be_read_is_refused_everywhere_alike() -> None:
    c = MemCluster(3, sm=RecordingStateMachine)
    await c.start()
    try:
        ld = await c.leader()
        rn = ld.rn
        assert rn is not None
        ld.loop.call(lambda: rn.propose(b"\x07 not an envelope"))  # past the tracker's wrap
        await c.drive(ld.propose(b"after"))
        await c.until(lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        for sm in c.sms.values():
            assert [a.data for a in sm.state] == [b"after"]
        assert not any(n.crashed.is_set() for n in c.nodes.values())
    finally:
        await c.stop()


async def test_a_cluster_of_entry_format_1_keeps_raw_entries_and_the_legacy_stamp() -> None:
    """Data dirs of earlier builds (a version-1 snapshot header) stay format 1."""
    c = MemCluster(3, sm=RecordingStateMachine)
    book = {nid: {"addr": nid} for nid in c.ids}
    old = b"".join(wrap_snapshot(book, RecordingStateMachine().snapshot().chunks(), 1))
    for nid in c.ids:
        c.stores[nid].mem = MemoryStorage.bootstrap(c.ids, old)
        c.stores[nid].reader = c.stores[nid].mem
    await c.start()
    try:
        ld = await c.leader()
        assert ld.applier.entry_format == entry_format.ENTRY_FORMAT_RAW
        await c.drive(ld.propose(b"12345678rest", stamp_time=True))
        await c.drive(ld.propose(b"plain"))
        await c.until(lambda: all(len(sm.state) == 2 for sm in c.sms.values()))
        for sm in c.sms.values():
            stamped, plain = sm.state
            assert stamped.leader_time == 0.0 and stamped.data[8:] == b"rest"
            assert stamped.data[:8] != b"12345678"  # the leader's clock is in it
            assert plain.data == b"plain"
        # Its membership contexts stay readable by an earlier build.
        assert ld.membership.context_version == 1
    finally:
        await c.stop()


async def test_the_apply_stream_shows_every_batch_in_order_and_says_when_it_lagged() -> None:
    c = MemCluster(3, sm=RecordingStateMachine)
    await c.start()
    try:
        ld = await c.leader()
        stream = ld.apply_stream(maxlen=1000)
        tiny = ld.apply_stream(maxlen=1)
        for i in range(4):
            await c.drive(ld.propose(b"e%d" % i))
        items = []
        while len([e for i in items if isinstance(i, AppliedBatch) for e in i.entries]) < 4:
            items.append(await asyncio.wait_for(stream.__anext__(), 5))
        got = [
            (e.data, r)
            for i in items
            if isinstance(i, AppliedBatch)
            for e, r in zip(i.entries, i.results, strict=True)
        ]
        assert [d for d, _ in got] == [b"e%d" % i for i in range(4)]
        assert all(isinstance(r, int) for _, r in got)
        assert isinstance(await asyncio.wait_for(tiny.__anext__(), 5), Lagged)
        await ld.stop()
        assert [i async for i in stream] == []  # ends when the node stops
    finally:
        await c.stop()


async def test_the_old_apply_signature_still_works_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="leader_time"):
        c = MemCluster(1, sm=LegacyStateMachine)
        await c.start()
    try:
        ld = await c.leader()
        await c.drive(ld.propose(b"old"))
        assert [a.data for a in c.sms["n1"].state] == [b"old"]
    finally:
        await c.stop()
