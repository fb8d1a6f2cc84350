"""Named locks of a ReplicatedLockManager (runtime/locks.py), on a 3-node in-memory cluster.

The manual clock drives both the leader's time (stamped on every entry)
and the handles' waits and refreshes, so nothing here sleeps for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from liferaft.runtime import (
    DistributedLock,
    LockInfo,
    LockTimeoutError,
    NodeTimeoutError,
    ReplicatedCounter,
    ReplicatedLockManager,
)
from tests.runtime.cluster import MemCluster

TTL = 2.0


def _objects() -> list[Any]:
    # With a counter beside it: the lock manager is one section of several.
    return [ReplicatedLockManager(ttl=TTL), ReplicatedCounter()]


def _manager(c: MemCluster, nid: str) -> ReplicatedLockManager:
    manager = c.sms[nid][0]
    assert isinstance(manager, ReplicatedLockManager)
    return manager


@pytest.fixture
async def c() -> AsyncIterator[MemCluster]:
    """Three nodes, each running a lock manager beside a counter, with a leader."""
    cluster = MemCluster(3, sm=_objects)
    await cluster.start()
    try:
        await cluster.leader()
        yield cluster
    finally:
        await cluster.stop()


async def test_two_nodes_contend_and_the_holder_keeps_its_lease_by_refreshing(
    c: MemCluster,
) -> None:
    n1, n2 = c.ids[0], c.ids[1]
    a = _manager(c, n1).lock("orders")
    b = _manager(c, n2).lock("orders")
    first = await c.drive(a.acquire(timeout=5))
    assert a.held
    with pytest.raises(LockTimeoutError) as caught:
        await c.drive(b.acquire(timeout=0.5))
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, NodeTimeoutError)
    assert "'orders'" in str(caught.value)
    # Three leases' worth of time: only the background refresh keeps it.
    await c.run(3 * TTL)
    assert a.held and not a.lost.is_set()
    with pytest.raises(TimeoutError):
        await c.drive(b.acquire(timeout=0))
    info = await c.drive(_manager(c, n2).holder("orders"))
    # LockInfo is what holder() returns: a program annotates with it.
    assert isinstance(info, LockInfo) and (info.owner, info.token) == (a.owner, first)
    # b blocks until a releases, then gets the lock with a later token.
    task = asyncio.ensure_future(c.drive(b.acquire(), seconds=5))
    await c.run(0.3)
    assert not task.done()
    assert await c.drive(a.release()) is True
    second = await task
    assert second > first and b.held and not a.held
    await c.drive(b.release())


async def test_a_lease_lapses_when_its_holders_node_stops(c: MemCluster) -> None:
    leader = await c.leader()
    holder_id = next(i for i in c.ids if i != leader.id)
    other_id = next(i for i in c.ids if i not in (leader.id, holder_id))
    a = _manager(c, holder_id).lock("jobs")
    first = await c.drive(a.acquire(timeout=5))
    await c.nodes[holder_id].stop()  # no more refreshes from it
    b = _manager(c, other_id).lock("jobs")
    second = await c.drive(b.acquire(timeout=4 * TTL), seconds=4 * TTL + 1)
    assert second > first
    info = await c.drive(_manager(c, other_id).holder("jobs"))
    assert info is not None and info.owner == b.owner
    await c.run(TTL)
    assert a.lost.is_set() and not a.held  # its refresher saw the node stop
    await c.drive(b.release())


@pytest.mark.parametrize("on_leader", [False, True], ids=["follower", "leader"])
async def test_a_cut_off_holder_learns_it_lost_the_lock_before_another_gets_it(
    c: MemCluster, on_leader: bool
) -> None:
    # The holder's node is partitioned, not stopped: its refreshes fail
    # (no leader, or no quorum) rather than being refused, and it must not
    # go on believing it holds the lock while the majority grants it again.
    leader = await c.leader()
    holder_id = leader.id if on_leader else next(i for i in c.ids if i != leader.id)
    other_id = next(i for i in c.ids if i != holder_id)
    a = _manager(c, holder_id).lock("jobs")
    first = await c.drive(a.acquire(timeout=5))
    c.net.isolate(holder_id)
    b = _manager(c, other_id).lock("jobs")
    task = asyncio.ensure_future(b.acquire(timeout=10 * TTL))
    await c.until(lambda: task.done() or a.lost.is_set(), seconds=10 * TTL)
    assert a.lost.is_set() and not a.held  # it learnt first, on its own clock
    second = await c.drive(task, seconds=10 * TTL)
    assert second > first and b.held and not a.held
    c.net.heal()
    assert await c.drive(a.release()) is False  # its token is stale
    await c.drive(b.release())


async def test_fencing_tokens_strictly_increase_per_lock(c: MemCluster) -> None:
    tokens: dict[str, list[int]] = {"x": [], "y": []}
    for round_ in range(3):
        for name in ("x", "y"):
            nid = c.ids[(round_ + len(tokens[name])) % 3]
            handle = _manager(c, nid).lock(name)
            tokens[name].append(await c.drive(handle.acquire(timeout=5)))
            await c.drive(handle.release())
    for seq in tokens.values():
        assert seq == sorted(seq) and len(set(seq)) == len(seq), tokens
    # The same owner taking its lock again gets a new token; the old one is stale.
    m = _manager(c, c.ids[0])
    h = m.lock("x")
    t1 = await c.drive(h.acquire())
    t2 = await c.drive(m.acquire(h.name, h.owner, TTL))
    assert t2 is not None and t2 > t1
    assert await c.drive(m.refresh("x", h.owner, t1, TTL)) is False
    assert await c.drive(m.release("x", h.owner, t2)) is True


async def test_async_with_releases_the_lock_when_the_body_raises(c: MemCluster) -> None:
    m = _manager(c, c.ids[0])
    lock = m.lock("cfg")
    seen: list[int] = []

    async def body(handle: DistributedLock) -> None:
        async with handle as token:
            seen.append(token)
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await c.drive(body(lock))
    assert seen and not lock.held and lock.token is None
    assert await c.drive(m.holder("cfg")) is None
    assert not m._holding  # its refresher is gone
    # Free at once for anyone else, without waiting for the lease.
    other = _manager(c, c.ids[1]).lock("cfg")
    assert await c.drive(other.acquire(timeout=0)) > seen[0]
    await c.drive(other.release())


def test_expiry_is_judged_on_leader_time_never_a_local_clock() -> None:
    m = ReplicatedLockManager()

    def run(index: int, leader_time: float, cmd: Any, *args: Any) -> Any:
        return m.apply(index, cmd.encode(*args), leader_time=leader_time)

    acquire, release = ReplicatedLockManager.acquire, ReplicatedLockManager.release
    assert run(10, 100.0, acquire, "l", "a", 10.0) == 10  # the token is the log index
    assert run(11, 105.0, acquire, "l", "b", 10.0) is None  # a's lease runs to 110
    # A lagging new leader's time never moves the lease backwards.
    assert run(12, 50.0, acquire, "l", "b", 10.0) is None
    assert run(13, 110.5, acquire, "l", "b", 10.0) == 13  # lapsed at leader time 110
    assert run(14, 111.0, release, "l", "a", 10) is False  # a's token is stale
    # A snapshot keeps the grants and the lock time.
    copy = ReplicatedLockManager()
    snap = m.snapshot()
    copy.restore(snap.chunks())
    snap.release()
    assert copy.holder.local("l") == m.holder.local("l")
    assert copy.apply(15, acquire.encode("l", "c", 1.0), leader_time=60.0) is None


def test_bad_lock_arguments_are_refused_before_anything_is_proposed() -> None:
    m = ReplicatedLockManager()
    with pytest.raises(ValueError, match="ttl"):
        m.lock("a", ttl=0)
    with pytest.raises(ValueError, match="lock name"):
        m.lock("")
    with pytest.raises(ValueError, match="ttl"):
        ReplicatedLockManager(ttl=float("nan"))
