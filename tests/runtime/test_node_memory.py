"""The runtime Node over the in-memory transport and a manual clock: no test
here sleeps; simulated seconds pass with ``clock.advance``."""

from __future__ import annotations

import asyncio
import errno
import random
from typing import Any

import pytest

from liferaft.runtime import (
    BadConfigError,
    DroppedError,
    EventType,
    NodeConfig,
    NodeTimeoutError,
    NotLeaderError,
    ReplicatedCounter,
    ReplicatedDict,
    StoppedError,
    StorageFailedError,
)
from liferaft.runtime.node import Node
from liferaft.runtime.store import DiskStore
from liferaft.storage import DiskStorage
from liferaft.storage.fs import FaultFS
from tests.runtime.cluster import MemCluster


def values(c: MemCluster) -> set[int]:
    return {sm._value for nid, sm in c.sms.items() if not c.nodes[nid].loop.stopping}


async def test_elects_a_leader_and_replicates_commands() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        counter = c.sms[ld.id]
        assert await c.drive(counter.add(5)) == 5
        assert await c.drive(counter.add(2)) == 7
        await c.until(lambda: values(c) == {7})
        st = ld.status()
        assert st.role == "leader" and st.applied_index == st.commit_index
        assert set(st.peers) == set(c.ids) and all(p.lag == 0 for p in st.peers.values())
    finally:
        await c.stop()


async def test_a_new_leader_takes_over_and_nothing_acknowledged_is_lost() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        for _ in range(10):
            await c.drive(c.sms[ld.id].add(1))
        await ld.stop()
        c.net.isolate(ld.id)
        ld2 = await c.leader()
        assert ld2.id != ld.id
        assert await c.drive(c.sms[ld2.id].add(1)) == 11
        await c.until(lambda: values(c) == {11})
    finally:
        await c.stop()


async def test_linearizable_and_stale_reads() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(3))
        for n in c.nodes.values():  # every node, leader or follower
            got = await c.drive(n.read(lambda n=n: c.sms[n.id]._value))
            assert got == 3
        stale = c.nodes[next(i for i in c.ids if i != ld.id)]
        assert await c.drive(stale.read(lambda: 42, consistency="stale")) == 42
        with pytest.raises(BadConfigError):
            await c.drive(ld.read(lambda: 0, consistency="bogus"))
    finally:
        await c.stop()


async def test_an_isolated_leader_cannot_serve_a_linearizable_read() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(1))
        c.net.isolate(ld.id)
        with pytest.raises(NodeTimeoutError):
            await c.drive(ld.read_index(timeout=0.5))
        with pytest.raises((NodeTimeoutError, NotLeaderError)):
            await c.drive(c.sms[ld.id].add(1), seconds=30)
    finally:
        await c.stop()


async def test_events_follow_goraft_vocabulary() -> None:
    c = MemCluster(3)
    seen: list[EventType] = []
    await c.start()
    try:
        for n in c.nodes.values():
            n.events.on(lambda ev: seen.append(ev.type))
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(1))
        assert {
            EventType.STATE_CHANGE,
            EventType.LEADER_CHANGE,
            EventType.COMMIT,
            EventType.APPLY,
        } <= set(seen)
    finally:
        await c.stop()


async def test_snapshots_compact_and_a_lagging_node_catches_up_by_snapshot() -> None:
    c = MemCluster(3, snapshot_entries=20)
    await c.start()
    try:
        ld = await c.leader()
        lagger = next(i for i in c.ids if i != ld.id)
        c.net.isolate(lagger)
        for _ in range(60):
            await c.drive(c.sms[ld.id].add(1))
        await c.until(lambda: ld.status().snapshot_index >= 40)
        c.net.rejoin(lagger)
        await c.until(lambda: c.sms[lagger]._value == 60, seconds=20)
        assert c.nodes[lagger].status().snapshot_index >= 40
    finally:
        await c.stop()


async def test_restart_from_storage_keeps_state() -> None:
    c = MemCluster(3, snapshot_entries=15)
    await c.start()
    try:
        ld = await c.leader()
        for _ in range(25):
            await c.drive(c.sms[ld.id].add(2))
        f = next(i for i in c.ids if i != ld.id)
        await c.until(lambda: c.sms[f]._value == 50)
        await c.nodes[f].stop()
        node = c.make(f, initial=True)  # initial members are ignored: it has data
        await node.start()
        assert c.sms[f]._value >= 20  # restored from its snapshot...
        await c.until(lambda: c.sms[f]._value == 50)  # ...then the log
    finally:
        await c.stop()


async def test_membership_add_learner_promote_remove() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(4))
        new = c.make("n4", initial=False)
        await new.start()
        await c.drive(new.join(ld.id, "n4", voter=False))  # a learner, via the leader
        assert "n4" in ld.status().learners
        await c.drive(ld.add_voter("n4", "n4"))  # promoted once caught up
        st = ld.status()
        assert "n4" in st.voters and "n4" in st.members
        await c.until(lambda: c.sms["n4"]._value == 4)
        await c.drive(ld.remove("n2" if ld.id != "n2" else "n3"))
        assert len(ld.status().voters) == 3
        assert await c.drive(c.sms[ld.id].add(1)) == 5
    finally:
        await c.stop()


async def test_leadership_transfer() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(1))
        to = next(i for i in c.ids if i != ld.id)
        assert await c.drive(ld.transfer_leadership(to)) == to
        assert c.nodes[to].is_leader
        assert await c.drive(c.sms[to].add(1)) == 2
    finally:
        await c.stop()


async def test_dict_and_bad_arguments() -> None:
    c = MemCluster(3, sm=ReplicatedDict)
    await c.start()
    try:
        ld = await c.leader()
        d = c.sms[ld.id]
        await c.drive(d.set("k", "v"))
        assert await c.drive(d.get("k")) == "v"
        with pytest.raises(TypeError):
            d.set(1)  # refused before anything is proposed
    finally:
        await c.stop()


async def test_bad_constructor_arguments_are_typed_errors() -> None:
    c = MemCluster(1)
    with pytest.raises(BadConfigError):
        NodeConfig(id="").validate()
    with pytest.raises(BadConfigError):
        Node(
            NodeConfig(id="a", election_ticks=1, heartbeat_ticks=1),
            ReplicatedCounter(),
            c.net.transport("a"),
        )
    with pytest.raises(BadConfigError):
        Node(NodeConfig(id="a"), object(), c.net.transport("b"))  # type: ignore[arg-type]
    with pytest.raises(BadConfigError):
        Node(
            NodeConfig(id="a"),
            ReplicatedCounter(),
            c.net.transport("c"),
            initial_members={"x": "x"},
        )


async def test_stopped_node_refuses_work() -> None:
    c = MemCluster(1)
    await c.start()
    ld = await c.leader()
    await c.drive(c.sms[ld.id].add(1))
    await ld.stop()
    with pytest.raises(StoppedError):
        await ld.propose(b"x" * 9)


async def test_a_full_disk_stops_writes_and_the_node_recovers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """ENOSPC under a single-node cluster on real files: proposals fail with
    StorageFailedError, nothing synced is lost, and writes resume with space."""
    fs = FaultFS(random.Random(3))
    c = MemCluster(1)
    store = DiskStore(DiskStorage(tmp_path, fs=fs, snapshot_data_in_memory=False))
    store.threaded = False  # deterministic under the manual clock
    c.stores["n1"] = store  # type: ignore[assignment]
    await c.start()
    ld = await c.leader()
    counter = c.sms["n1"]
    for _ in range(5):
        await c.drive(counter.add(1))
    failed = []
    ld.events.on(lambda ev: failed.append(ev) if ev.type is EventType.STORAGE_FAILED else None)
    fs.fail_after = 0
    fs.fail_errno = errno.ENOSPC
    with pytest.raises((StorageFailedError, NodeTimeoutError)):
        await c.drive(counter.add(1), seconds=10)
    assert failed and "No space left" in failed[0].value
    with pytest.raises(StorageFailedError):
        await c.drive(counter.add(1))
    assert not ld.status().storage_ok
    fs.fail_after = None  # space is back
    await c.until(lambda: ld.status().storage_ok)
    v = await c.drive(counter.add(1))
    assert v in (6, 7)  # the entry that hit the full disk may commit later
    await ld.stop()
    reopened = DiskStorage(tmp_path)
    assert reopened.hard_state.commit >= 6


async def test_followers_forward_proposals_to_the_leader() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        results = []
        for nid in c.ids:
            if nid != ld.id:
                results.append(await c.drive(c.sms[nid].add(10)))
        assert sorted(results) == [10, 20]
        await c.until(lambda: values(c) == {20})
    finally:
        await c.stop()


async def test_membership_changes_while_writing() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        acked = 0
        stop = False

        async def writer() -> None:
            nonlocal acked
            while not stop:
                try:
                    await c.sms[ld.id].add(1)
                    acked += 1
                except (NotLeaderError, NodeTimeoutError):
                    await c.clock.sleep(0.05)

        w = asyncio.ensure_future(writer())
        new = c.make("n4", initial=False)
        await new.start()
        await c.drive(new.join("n1", "n4"))
        await c.until(lambda: "n4" in ld.status().voters, seconds=20)
        victim = next(i for i in c.ids if i != ld.id)
        await c.drive(ld.remove(victim))
        await c.nodes[victim].stop()
        await c.until(lambda: acked >= 30, seconds=20)
        stop = True
        await c.drive(w)
        assert sorted(ld.status().voters) == sorted({*c.ids, "n4"} - {victim})
        await c.until(lambda: c.sms["n4"]._value == c.sms[ld.id]._value == acked)
    finally:
        await c.stop()


async def test_linearizable_reads_during_leader_changes() -> None:
    """Every read returns at least every write acknowledged before it began,
    and no more than the writes begun before it ended."""
    c = MemCluster(5)
    await c.start()
    try:
        await c.leader()
        began = acked = 0
        bad: list[str] = []

        async def writer() -> None:
            nonlocal began, acked
            for _ in range(60):
                n = next(iter(x for x in c.nodes.values() if not x.loop.stopping))
                began += 1
                try:
                    await c.sms[n.id].add(1)
                    acked += 1
                except (NotLeaderError, NodeTimeoutError, DroppedError):
                    pass  # indeterminate: it may still apply

        async def reader(nid: str) -> None:
            for _ in range(30):
                node = c.nodes[nid]
                if node.loop.stopping:
                    return
                lo = acked
                try:
                    v = await node.read(lambda: c.sms[nid]._value, timeout=1.0)
                except (NotLeaderError, NodeTimeoutError, StoppedError):
                    continue
                if not lo <= v <= began:
                    bad.append(f"{nid} read {v}, acked-before={lo}, begun={began}")

        tasks = [asyncio.ensure_future(writer())] + [
            asyncio.ensure_future(reader(i)) for i in c.ids
        ]
        for _ in range(2):  # depose the leader twice mid-run
            await c.run(1.0)
            ld = await c.leader()
            await ld.stop()
            c.net.isolate(ld.id)
        await c.drive(asyncio.gather(*tasks), seconds=60)
        assert not bad, bad
        assert acked > 0
    finally:
        await c.stop()


async def test_events_as_an_async_iterator() -> None:
    c = MemCluster(1)
    await c.start()
    try:
        ld = await c.leader()
        sub = ld.events.subscribe()
        await c.drive(c.sms[ld.id].add(1))

        async def first_apply() -> Any:
            async for ev in sub:
                if ev.type is EventType.APPLY:
                    return ev.value

        assert await c.drive(first_apply()) >= 2
    finally:
        await c.stop()


async def test_lease_reads_are_opt_in_and_served() -> None:
    with pytest.raises(BadConfigError):
        NodeConfig(id="a", lease_reads=True, check_quorum=False).validate()
    c = MemCluster(3, lease_reads=True)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(2))
        assert ld.rn is not None
        asked = []
        real = ld.rn.read_index

        def spy(ctx: bytes, lease: bool | None = None) -> None:
            asked.append(lease)
            real(ctx, lease)

        ld.rn.read_index = spy  # type: ignore[method-assign]
        assert await c.drive(ld.read(lambda: c.sms[ld.id]._value, consistency="lease")) == 2
        assert await c.drive(ld.read(lambda: c.sms[ld.id]._value)) == 2
        assert asked == [True, False]  # a linearizable read never rides the lease
    finally:
        await c.stop()


async def test_submit_returns_futures_that_resolve_in_log_order() -> None:
    """submit() is propose() without a coroutine: one future per write."""
    c = MemCluster(3, sm=ReplicatedDict)
    await c.start()
    try:
        ld = await c.leader()
        d = c.sms[ld.id]
        await c.drive(d.set("k", 0))
        base = ld.applied
        futs = [ld.submit(b"raw-%03d" % i) for i in range(100)]
        await c.drive(asyncio.gather(*futs, return_exceptions=True))
        assert all(f.done() and not f.cancelled() for f in futs)
        # The dict refuses raw bytes (not a command), and says so per entry;
        # what matters here is one outcome per write, in log order.
        assert ld.applied == base + 100
        assert not ld.proposals.pending and not ld.proposals.queue
    finally:
        await c.stop()


async def test_a_write_that_cannot_commit_times_out_by_its_own_deadline() -> None:
    """Deadlines are checked on the ticker (no timer per write); a short
    deadline after a long one still fires first, and nothing is left behind."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(1))
        c.net.isolate(ld.id)
        slow = ld.submit(b"s" * 9, timeout=3.0)
        fast = ld.submit(b"f" * 9, timeout=0.3)  # out of order: goes to the heap
        await c.run(0.5)
        assert fast.done() and isinstance(fast.exception(), NodeTimeoutError)
        assert "outcome unknown" in str(fast.exception())
        assert not slow.done()
        await c.run(3.0)
        assert slow.done() and isinstance(slow.exception(), NodeTimeoutError)
        assert not ld.proposals.pending and not ld.proposals.deadlines and not ld.proposals.late
    finally:
        await c.stop()


async def test_a_write_cancelled_before_it_is_proposed_is_withdrawn() -> None:
    c = MemCluster(1)
    await c.start()
    try:
        ld = await c.leader()
        counter = c.sms[ld.id]
        await c.drive(counter.add(1))
        last = ld.status().last_log_index
        f = ld.submit(b"never" * 2)
        f.cancel()  # before the node task ran
        assert await c.drive(counter.add(1)) == 2
        assert ld.status().last_log_index == last + 1  # only the add
    finally:
        await c.stop()


async def test_a_write_caught_by_a_leadership_transfer_goes_to_the_new_leader() -> None:
    """The fast path found the leader mid-transfer: nothing was proposed, so
    the write waits for the new leader and is forwarded there."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        counter = c.sms[ld.id]
        await c.drive(counter.add(1))
        to = next(i for i in c.ids if i != ld.id)
        transfer = asyncio.ensure_future(ld.transfer_leadership(to))
        await asyncio.sleep(0)  # the transfer is queued for the node task first
        assert await c.drive(counter.add(1)) == 2
        assert await c.drive(transfer) == to
        await c.until(lambda: values(c) == {2})
    finally:
        await c.stop()


async def test_a_write_on_a_node_without_a_leader_fails_or_can_be_cancelled() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(1))
        f = next(n for n in c.nodes.values() if n is not ld)
        c.net.isolate(f.id)
        await c.run(0.5)  # it loses its leader (check quorum / no heartbeats)
        fut = f.submit(b"x" * 9, timeout=0.3)
        with pytest.raises((NotLeaderError, NodeTimeoutError)):
            await c.drive(fut)
        fut2 = f.submit(b"y" * 9, timeout=5.0)
        await c.run(0.05)
        assert f.loop.background  # waiting for a leader
        fut2.cancel()
        await c.run(0.05)
        assert not f.loop.background
    finally:
        await c.stop()


async def test_forwarding_to_an_unreachable_leader_is_not_leader_not_timeout() -> None:
    """A forward that never left the follower proposed nothing: the caller
    gets NotLeaderError (safe to retry; kv answers 503), not an unknown outcome."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(1))
        f = next(n for n in c.nodes.values() if n is not ld)
        c.net.cut(f.id, ld.id)
        assert f.leader == ld.id  # it still believes in the leader
        with pytest.raises(NotLeaderError):
            await c.drive(f.propose(b"x" * 9, timeout=0.3))
    finally:
        await c.stop()


async def test_concurrent_reads_share_one_read_index_round() -> None:
    """Reads that arrive together ride one ReadIndex round (one heartbeat
    broadcast), and each still sees every write acknowledged before it."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(3))
        assert ld.rn is not None
        calls = []
        real = ld.rn.read_index

        def counting(ctx: bytes, lease: bool | None = None) -> None:
            calls.append(ctx)
            real(ctx, lease)

        ld.rn.read_index = counting  # type: ignore[method-assign]
        idx = await c.drive(asyncio.gather(*(ld.read_index() for _ in range(50))))
        assert len(set(idx)) == 1 and idx[0] >= ld.status().commit_index - 1
        assert len(calls) == 1
        later = await c.drive(ld.read(lambda: c.sms[ld.id]._value))
        assert later == 3 and len(calls) == 2
    finally:
        await c.stop()


async def test_transfer_to_a_non_voter_is_refused_at_once() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        with pytest.raises(BadConfigError, match="not a voter"):
            await ld.transfer_leadership("n9")
    finally:
        await c.stop()


async def test_stopping_fails_proposed_writes_as_unknown_and_queued_ones_as_stopped() -> None:
    """StoppedError promises "not proposed"; a write already in the log may still
    commit elsewhere, so stop() fails it with NodeTimeoutError (outcome unknown)."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(1))
        c.net.isolate(ld.id)
        proposed = ld.submit(b"p" * 9)
        await c.run(0.05)
        assert ld.proposals.pending  # in the log, not committed
        queued = ld.submit(b"q" * 9)  # not yet proposed when stop() runs
        await ld.stop()
        assert isinstance(proposed.exception(), NodeTimeoutError)
        assert "outcome unknown" in str(proposed.exception())
        assert isinstance(queued.exception(), StoppedError)
    finally:
        await c.stop()


async def test_followers_persist_before_they_acknowledge() -> None:
    """§5.1 at the runtime level: a follower sends an AppendResponse only for
    entries it has saved, and a vote only once the vote is saved.  Only the
    leader may send before its own save (Ready.send_first)."""
    from liferaft.core import AppendEntries, AppendResponse, VoteResponse

    c = MemCluster(3)
    log: dict[str, list[tuple[str, int]]] = {i: [] for i in c.ids}
    nodes = [c.make(nid) for nid in c.ids]
    for node in nodes:
        nid = node.id
        store, tr = c.stores[nid], node.transport
        real_save, real_send = store.save, tr.send

        def save(hs, ents, snap, sync_commit=False, _n=nid, _real=real_save):  # type: ignore[no-untyped-def]
            _real(hs, ents, snap, sync_commit)
            log[_n].append(("saved", ents[-1].index if ents else -1))
            if hs is not None and hs.vote:
                log[_n].append(("voted", hs.term))

        def send(m, _n=nid, _real=real_send):  # type: ignore[no-untyped-def]
            if isinstance(m, AppendResponse) and not m.reject:
                log[_n].append(("ack", m.index))
            elif isinstance(m, VoteResponse) and m.granted and not m.pre_vote:
                log[_n].append(("grant", m.term))
            elif isinstance(m, AppendEntries) and m.entries:
                log[_n].append(("append-sent", m.entries[-1].index))
            _real(m)

        store.save = save  # type: ignore[method-assign]
        tr.send = send  # type: ignore[method-assign]
    for node in nodes:
        await node.start()
    try:
        ld = await c.leader()
        for _ in range(5):
            await c.drive(c.sms[ld.id].add(1))
        await c.until(lambda: values(c) == {5})
    finally:
        await c.stop()
    for nid, events in log.items():
        saved = 0
        voted: set[int] = set()
        for kind, n in events:
            if kind == "saved":
                saved = max(saved, n)
            elif kind == "voted":
                voted.add(n)
            elif kind == "ack":
                assert n <= saved, f"{nid} acknowledged {n} with only {saved} saved: {events}"
            elif kind == "grant":
                assert n in voted, f"{nid} granted a vote in term {n} before saving it"
    # The leader did send entries before saving them (the point of send_first).
    lead = log[ld.id]
    assert any(
        kind == "append-sent" and all(not (k == "saved" and i >= n) for k, i in lead[:pos])
        for pos, (kind, n) in enumerate(lead)
    )


async def test_a_membership_change_caught_by_a_leadership_transfer_goes_to_the_new_leader() -> None:
    """A change the leader cannot propose because it is handing leadership
    over (a transfer, or SIGTERM's hand-over) waits for the new leader like
    a write; it used to crash the old leader's node task."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        to = next(i for i in c.ids if i != ld.id)
        transfer = asyncio.ensure_future(ld.transfer_leadership(to))
        await asyncio.sleep(0)  # the transfer is queued for the node task first
        await c.drive(ld.add_learner("n4", "n4"))
        assert await c.drive(transfer) == to
        assert not ld.crashed.is_set()
        await c.until(lambda: all("n4" in n.members for n in c.nodes.values()))
    finally:
        await c.stop()
