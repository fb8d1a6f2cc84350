"""A hostile schedule for group commit (issue 16's runtime change).

The WAL save of a Ready may run in the I/O thread while the event loop
keeps going (docs/runtime.md, "persist"); queued off-loop apply batches are
merged; one ReadIndex round is in flight at a time.  Each test holds the
runtime at one of the windows that opened and checks what must not happen
in it:

- a save held off the loop: the core is stepped by nothing (no message,
  tick, proposal or read round), so the leader counts no undurable entry
  of its own in the commit and a follower acknowledges nothing unsaved;
- a save that fails off the loop: nothing of that Ready is applied or
  answered while it is retried;
- a stop during such a save: the store is closed only after it, and the
  writer learns "outcome unknown", not "never proposed";
- merged apply batches: ``max_batch`` bounds them, a snapshot or a hold
  ends them, and the configuration noted after them is the last one;
- reads: a round that is lost strands nobody, and a late answer serves
  only the readers that arrived before its round began.

Everything runs on the manual clock and the memory network; a held save
is a real thread blocked on an event, so the loop's behaviour while it
waits is the real one.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from liferaft.core import ConfState, Entry, EntryType, ReadIndexRequest
from liferaft.runtime import ManualClock, Node, NodeConfig
from liferaft.runtime.applier import _Job
from liferaft.runtime.clock import settle
from liferaft.runtime.errors import NodeTimeoutError
from liferaft.runtime.store import MemStore
from liferaft.storage import StorageError
from liferaft.transport import MemoryNetwork
from tests.runtime.cluster import MemCluster
from tests.runtime.sms.volatile import BatchRecordingStateMachine


class GatedStore(MemStore):
    """A threaded MemStore: saves that carry entries run in the loop's I/O
    thread, and a test may hold them (``gate``) or make them fail."""

    threaded = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()  # a save is waiting at the gate
        self.fail = 0  # saves with entries still to refuse
        self.refused = 0
        self.saving = False
        self.closed_while_saving = False
        self.closed = False
        self.loop_thread = threading.get_ident()
        self.off_loop = 0  # saves with entries run outside the loop's thread

    def save(self, hs: Any, entries: list[Entry], snap: Any, sync_commit: bool = False) -> None:
        if not entries:
            super().save(hs, entries, snap, sync_commit)
            return
        self.saving = True
        try:
            if threading.get_ident() != self.loop_thread:
                self.off_loop += 1
            if not self.gate.is_set():
                self.held.set()
                assert self.gate.wait(30), "the test never opened the gate"
            if self.fail:
                self.fail -= 1
                self.refused += 1
                raise StorageError("EIO (injected)")
            super().save(hs, entries, snap, sync_commit)
        finally:
            self.saving = False

    def close(self) -> None:
        self.closed_while_saving = self.closed_while_saving or self.saving
        self.closed = True
        super().close()


class IoClock(ManualClock):
    """The manual clock, moved one tick at a time and only once every I/O
    thread is idle or held at its gate: simulated time must not run ahead
    of a real thread's save (whole election timeouts would pass during one
    save, and the loop's tick burst after it would depose a healthy
    leader: an artefact of the manual clock, not of the schedule)."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        super().__init__()
        self._nodes = nodes

    def _busy(self) -> bool:
        for n in self._nodes.values():
            cf, store = n.loop._io_busy, n.loop.store
            held = isinstance(store, GatedStore) and store.held.is_set() and not store.gate.is_set()
            if cf is not None and not cf.done() and not held:
                return True
        return False

    async def advance(self, seconds: float, step: float | None = None) -> None:
        end = self.monotonic() + seconds
        while self.monotonic() < end - 1e-9:
            for _ in range(10_000):
                await settle()
                if not self._busy():
                    break
                await asyncio.sleep(0.0005)
            await super().advance(min(0.01, end - self.monotonic()), step)


async def started(c: MemCluster) -> Node:
    """Start ``c``; its leader, once it applied a first write."""
    await c.start()
    ld = await c.leader()
    await c.drive(c.sms[ld.id].add(1))
    return ld


async def gated() -> tuple[MemCluster, Node]:
    """A 3-node cluster whose saves with entries all go to the I/O thread
    (``inline_sync_entries=0``: the path under test, whatever the count of
    writes in flight), and its leader (:func:`started`)."""
    c = MemCluster(3, inline_sync_entries=0)
    c.clock = IoClock(c.nodes)
    for i in c.ids:
        c.stores[i] = GatedStore()
    return c, await started(c)


async def wait_held(store: GatedStore) -> None:
    """Until a save waits at ``store``'s gate (the loop keeps running)."""
    for _ in range(10_000):
        if store.held.is_set():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("no save reached the gate")


def gstore(n: Node) -> GatedStore:
    store = n.loop.store
    assert isinstance(store, GatedStore)
    return store


def last_index(n: Node) -> int:
    return n.status().last_log_index


async def test_the_leader_steps_nothing_while_its_save_is_off_the_loop() -> None:
    """Held in its own save, the leader has sent the new entry (send_first)
    and the followers acknowledge it, but it steps none of that, nor ticks,
    nor the writes and reads queued meanwhile: its commit index never
    counts its own copy before that copy is durable."""
    c, ld = await gated()
    store = gstore(ld)
    try:
        follower = next(n for n in c.nodes.values() if n is not ld)
        before = ld.status().commit_index
        term = ld.status().term
        store.gate.clear()
        first = asyncio.ensure_future(c.sms[ld.id].add(10))
        await wait_held(store)
        held_index = last_index(ld)
        # The followers got it while the leader's fsync runs, and answered.
        await c.until(lambda: last_index(follower) >= held_index, seconds=1.0)
        later = asyncio.ensure_future(c.sms[ld.id].add(100))
        read = asyncio.ensure_future(ld.read_index(timeout=5.0))
        # Half an election timeout of ticks, answers and work, none stepped.
        for _ in range(5):
            await c.run(0.01)
            st = ld.status()
            assert st.commit_index == before < held_index
            assert st.role == "leader" and st.term == term
            assert not first.done() and not later.done() and not read.done()
        assert ld.loop._inbox, "the followers' answers should wait in the inbox"
        assert ld.proposals.queue, "the later write should wait to be proposed"
        store.gate.set()
        assert await c.drive(first) == 11
        assert await c.drive(later) == 111
        assert await c.drive(read) >= held_index
    finally:
        store.gate.set()
        await c.stop()
    assert store.off_loop > 0


async def test_a_follower_acknowledges_nothing_before_its_save_ends() -> None:
    """A follower whose save is held off the loop sends no acknowledgement:
    the leader's match for it stays below the held entries (they commit
    with the other follower), and catches up once the save is done."""
    c, ld = await gated()
    try:
        slow = next(n for n in c.nodes.values() if n is not ld)
        store = gstore(slow)
        base = ld.status().peers[slow.id].match
        store.gate.clear()
        w = asyncio.ensure_future(c.sms[ld.id].add(5))
        await wait_held(store)
        assert await c.drive(w, seconds=2.0) == 6  # the other follower's copy
        target = ld.status().last_log_index
        for _ in range(10):
            await c.run(0.01)
            assert ld.status().peers[slow.id].match == base < target
        store.gate.set()
        await c.until(lambda: ld.status().peers[slow.id].match >= target, seconds=2.0)
    finally:
        store.gate.set()
        await c.stop()


async def test_a_save_refused_off_the_loop_applies_and_answers_nothing_until_retried() -> None:
    """The disk refuses the leader's save twice, in the I/O thread: the
    Ready is retried with back-off, and the leader applies and answers
    nothing meanwhile (the followers may: they hold the entry, sent first,
    and may elect one of them, which commits it), and the write succeeds
    once the disk takes it."""
    c, ld = await gated()
    store = gstore(ld)
    try:
        applied = ld.applied
        store.gate.clear()
        store.fail = 2
        w = asyncio.ensure_future(c.sms[ld.id].add(7))
        await wait_held(store)
        store.gate.set()
        await c.until(lambda: store.refused >= 1, seconds=1.0)
        assert not ld.status().storage_ok
        while store.fail:
            assert not w.done()
            assert ld.applied == applied
            await c.run(0.01)
        assert await c.drive(w, seconds=5.0) == 8
        assert ld.status().storage_ok and store.refused == 2
    finally:
        store.gate.set()
        await c.stop()


async def test_stop_during_an_off_loop_save_waits_for_it() -> None:
    """``stop()`` while the leader's save runs in the I/O thread: the store
    is closed only after the save returned (never under it), and the write
    whose entry was in the log learns "outcome unknown"."""
    c, ld = await gated()
    store = gstore(ld)
    try:
        store.gate.clear()
        w = asyncio.ensure_future(c.sms[ld.id].add(1))
        await wait_held(store)
        stopping = asyncio.ensure_future(ld.stop())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not stopping.done() and not store.closed
        store.gate.set()
        await asyncio.wait_for(stopping, 10)
        assert store.closed and not store.closed_while_saving
        with pytest.raises(NodeTimeoutError):
            await asyncio.wait_for(w, 10)
    finally:
        store.gate.set()
        await c.stop()


# -- merged apply batches ----------------------------------------------------------------


def _entries(first: int, n: int, conf_at: int | None = None) -> list[Entry]:
    return [
        Entry(
            term=1,
            index=i,
            type=EntryType.CONF_CHANGE if i == conf_at else EntryType.NORMAL,
            data=b"",
        )
        for i in range(first, first + n)
    ]


def _applier(max_batch: int) -> Any:
    node = Node(
        NodeConfig(id="n1", max_batch=max_batch),
        BatchRecordingStateMachine(off_loop=True),
        MemoryNetwork().transport("n1"),
        store=MemStore(),
        initial_members={"n1": "n1"},
    )
    return node.applier


async def test_merged_apply_batches_keep_to_max_batch() -> None:
    """docs/statemachine.md: the Readies queued behind a running batch are
    handed over as one batch of at most ``max_batch`` entries."""
    a = _applier(max_batch=4)
    a._jobs.extend([_Job(_entries(4, 3)), _Job(_entries(7, 1))])
    merged = a._merge_queued(_Job(_entries(1, 3)))
    assert len(merged.ents) <= 4
    rest = [e.index for j in a._jobs for e in j.ents]
    assert [e.index for e in merged.ents] + rest == list(range(1, 8)), "nothing lost or reordered"
    # Room for a whole job: it is merged.
    a = _applier(max_batch=4)
    a._jobs.extend([_Job(_entries(4, 1))])
    assert [e.index for e in a._merge_queued(_Job(_entries(1, 3))).ents] == [1, 2, 3, 4]


async def test_merged_apply_batches_end_at_a_snapshot_or_hold_and_keep_the_last_conf() -> None:
    a = _applier(max_batch=100)
    c1 = ConfState(voters=frozenset({"n1", "n2"}))
    c2 = ConfState(voters=frozenset({"n1", "n2", "n3"}))
    loop = asyncio.get_running_loop()
    hold = _Job(reached=loop.create_future(), released=loop.create_future())
    a._jobs.extend(
        [
            _Job(_entries(3, 2, conf_at=3), conf=c1),
            _Job(_entries(5, 1)),  # no change: None
            hold,
            _Job(_entries(6, 1, conf_at=6), conf=c2),
        ]
    )
    merged = a._merge_queued(_Job(_entries(1, 2)))
    assert [e.index for e in merged.ents] == [1, 2, 3, 4, 5]
    assert merged.conf == c1, "the configuration after the last change merged"
    assert a._jobs[0] is hold
    a._jobs.popleft()
    assert a._merge_queued(a._jobs.popleft()).conf == c2
    hold.reached.cancel()
    hold.released.cancel()


# -- reads -----------------------------------------------------------------------------


def hold_answers(node: Node, n: int) -> tuple[list[list[Any]], Any]:
    """Keep the first ``n`` batches of ReadIndex answers from reaching
    ``node``'s read batcher (later ones pass); the held batches, and the
    batcher's own handler to deliver them with."""
    held: list[list[Any]] = []
    real = node.reads.on_read_states

    def hold(states: list[Any], applied: int) -> None:
        if len(held) < n:
            held.append(states)
        else:
            real(states, applied)

    node.reads.on_read_states = hold  # type: ignore[method-assign]
    return held, real


async def test_a_followers_lost_read_round_is_retried_not_left_to_time_out() -> None:
    """A follower's ReadIndex request is lost on the way to the leader (as
    when the leader changes under it).  No other reader comes along to
    start a round; the reader is still served, by a new round, long before
    its own timeout."""
    c = MemCluster(3)
    ld = await started(c)
    try:
        f = next(n for n in c.nodes.values() if n is not ld)
        lost: list[ReadIndexRequest] = []

        def drop_first(frm: str, m: Any) -> bool:
            if type(m) is ReadIndexRequest and frm == f.id and not lost:
                lost.append(m)
                return True
            return False

        c.net.drop_if(drop_first)
        written = ld.status().commit_index
        idx = await c.drive(f.read_index(timeout=4.0), seconds=3.0)
        assert lost, "the first request was not lost: the test proves nothing"
        assert idx >= written
    finally:
        await c.stop()


async def test_a_late_answer_serves_only_readers_older_than_its_round() -> None:
    """Round 1's answer (the commit index when it began) is held back; a
    write commits and is acknowledged; then a reader arrives and round 2
    begins.  Round 1's answer, delivered late while round 2 is in flight,
    must not serve that reader: only round 2's may, with an index covering
    the write."""
    c = MemCluster(3)
    ld = await started(c)
    try:
        held, real = hold_answers(ld, 2)
        early = asyncio.ensure_future(ld.read_index(timeout=5.0))
        await c.until(lambda: len(held) == 1, seconds=0.05)
        old_index = held[0][0].index
        await c.drive(c.sms[ld.id].add(1), seconds=0.05)
        written = ld.status().commit_index
        assert written > old_index
        late_reader = asyncio.ensure_future(ld.read_index(timeout=5.0))
        await c.until(lambda: len(held) == 2, seconds=0.05)
        real(held[0], ld.applied)  # round 1 answered now, late
        await settle()
        assert early.done() and early.result() == old_index
        assert not late_reader.done(), "a round's answer served a reader who came after it began"
        real(held[1], ld.applied)
        got = await c.drive(late_reader)
        assert got >= written, f"a reader that arrived after index {written} got {got}"
    finally:
        await c.stop()


async def test_a_read_round_lost_with_its_leader_ends_well_before_the_timeout() -> None:
    """The leader begins a round and is cut off before any answer: it steps
    down and forgets the round.  Its reader is not left to its own timeout:
    once the partition heals and a leader is known, a new round serves it."""
    c = MemCluster(3)
    ld = await started(c)
    try:
        written = ld.status().commit_index
        c.net.isolate(ld.id)
        reader = asyncio.ensure_future(ld.read_index(timeout=5.0))
        await c.run(0.3)
        assert not ld.is_leader
        c.net.heal()
        assert await c.drive(reader, seconds=1.0) >= written
    finally:
        await c.stop()


async def test_a_lease_answer_serves_no_reader_of_a_confirmed_round() -> None:
    """A confirmed round's answer is held back; a lease read comes and goes
    (the lease may skip the heartbeat round): its answer must not serve the
    older reader, who asked for a confirmed round."""
    c = MemCluster(3, lease_reads=True)
    ld = await started(c)
    try:
        held, real = hold_answers(ld, 1)
        confirmed = asyncio.ensure_future(ld.read_index(timeout=5.0))
        await c.until(lambda: bool(held), seconds=0.05)
        await c.drive(ld.read_index(timeout=5.0, lease=True), seconds=0.05)
        assert not confirmed.done()
        real(held[0], ld.applied)
        assert await c.drive(confirmed) >= 1
    finally:
        await c.stop()
