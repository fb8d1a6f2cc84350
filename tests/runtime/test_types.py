"""The ready-made replicated types: dict, counter, lock, queue.

Every test drives three replicas through :class:`FakeCluster` (the real
encoding path, entries applied in order, leader time from a fake clock) and
checks that they agree; the properties check random operation sequences
against a plain Python model and snapshot/restore equality.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.runtime.commands import BadArguments, Replicated
from liferaft.runtime.types import (
    LockInfo,
    ReplicatedCounter,
    ReplicatedDict,
    ReplicatedLock,
    ReplicatedQueue,
)

from .test_commands import START, FakeCluster, restored, snapshot_bytes

# --- dict -----------------------------------------------------------------------


async def test_dict_set_get_delete() -> None:
    cluster = FakeCluster(ReplicatedDict)
    d = cluster.replicas[1]
    assert await d.set("a", 1) is None
    assert await d.set("a", {"x": [1, 2]}) == 1
    assert await d.set("b", "two") is None
    assert await d.get("a") == {"x": [1, 2]}
    assert await d.get("zz") is None and await d.get("zz", "dflt") == "dflt"
    assert await d.items() == [("a", {"x": [1, 2]}), ("b", "two")]
    assert await d.keys() == ["a", "b"] and await d.size() == 2
    assert await d.delete("a") == {"x": [1, 2]}
    assert await d.delete("a") is None
    assert await cluster.leader.items() == [("b", "two")]
    cluster.assert_agree()


async def test_dict_cas() -> None:
    cluster = FakeCluster(ReplicatedDict)
    d = cluster.leader
    assert await d.cas("k", None, 1) is True  # None expected: create only
    assert await d.cas("k", None, 2) is False
    assert await d.cas("k", 5, 2) is False
    assert await d.cas("k", 1, [1]) is True
    assert await d.cas("k", [1], None) is True  # None new: delete
    assert await d.size() == 0
    cluster.assert_agree()


async def test_dict_queries_hand_out_copies() -> None:
    cluster = FakeCluster(ReplicatedDict)
    await cluster.leader.set("k", {"list": [1]})
    got = await cluster.leader.get("k")
    got["list"].append(2)
    ((_, value),) = await cluster.leader.items()
    value["new"] = 1
    assert await cluster.leader.get("k") == {"list": [1]}
    cluster.assert_agree()


async def test_dict_refuses_none_values_without_changing_state() -> None:
    cluster = FakeCluster(ReplicatedDict)
    await cluster.leader.set("k", 1)
    with pytest.raises(ValueError, match="cannot be None"):
        await cluster.leader.set("k", None)
    assert [r.get.local("k") for r in cluster.replicas] == [1, 1, 1]
    cluster.assert_agree()
    with pytest.raises(BadArguments, match="argument 'key': Expected `str`, got `int`"):
        _ = cluster.leader.set(1, 2)  # type: ignore[arg-type]


# --- counter --------------------------------------------------------------------


async def test_counter() -> None:
    cluster = FakeCluster(ReplicatedCounter)
    c = cluster.replicas[2]
    assert await c.add() == 1
    assert await c.add(10) == 11
    assert await c.add(-20) == -9
    assert await c.set(100) == -9
    assert await cluster.leader.get() == 100
    cluster.assert_agree()
    assert ReplicatedCounter(5).add.local(1) == 6
    assert restored(ReplicatedCounter, snapshot_bytes(c)).get.local() == 100


# --- lock -----------------------------------------------------------------------


async def test_lock_expires_by_leader_time() -> None:
    cluster = FakeCluster(ReplicatedLock)
    lock = cluster.leader
    assert await lock.acquire("a", 10.0) == 1
    cluster.clock.advance(9.9)
    assert await lock.acquire("b", 10.0) is None  # a's lease still runs
    assert await lock.holder() == LockInfo("a", 1, START + 10.0)
    cluster.clock.advance(0.1)  # the lease ends exactly now
    assert await cluster.replicas[1].acquire("b", 5.0) == 2
    assert await lock.holder() == LockInfo("b", 2, START + 15.0)
    cluster.assert_agree()


async def test_lock_judges_expiry_by_the_entrys_stamp_not_the_local_clock() -> None:
    # The same entries give the same grants whenever and wherever they are applied.
    cluster = FakeCluster(ReplicatedLock)
    await cluster.leader.acquire("a", 1.0)
    cluster.clock.advance(5.0)
    await cluster.leader.acquire("b", 1.0)
    late = ReplicatedLock()
    results = [late.apply(i + 1, entry) for i, entry in enumerate(cluster.log)]
    assert results == [1, 2]
    assert snapshot_bytes(late) == cluster.assert_agree()


async def test_fencing_tokens_grow_across_owners_and_grants() -> None:
    cluster = FakeCluster(ReplicatedLock)
    lock = cluster.replicas[1]
    tokens = []
    for owner in ["a", "b", "a", "c"]:
        token = await lock.acquire(owner, 1.0)
        assert token is not None
        tokens.append(token)
        assert await lock.release(owner, token) is True
    assert tokens == [1, 2, 3, 4]
    # re-acquiring one's own live lock issues a new token; the old one goes stale
    t5 = await lock.acquire("a", 10.0)
    t6 = await lock.acquire("a", 10.0)
    assert (t5, t6) == (5, 6)
    assert await lock.refresh("a", 5, 10.0) is False
    assert await lock.release("a", 5) is False
    assert await lock.last_token() == 6
    cluster.assert_agree()


async def test_stale_tokens_are_refused() -> None:
    cluster = FakeCluster(ReplicatedLock)
    lock = cluster.leader
    t1 = await lock.acquire("a", 5.0)
    assert t1 == 1
    cluster.clock.advance(6.0)
    # a's lease expired: its token is stale even before anyone else takes the lock
    assert await lock.refresh("a", t1, 5.0) is False
    assert await lock.release("a", t1) is False
    t2 = await lock.acquire("b", 5.0)
    assert t2 == 2
    assert await lock.release("a", t1) is False  # stale token
    assert await lock.release("a", t2) is False  # right token, wrong owner
    assert await lock.refresh("b", 99, 5.0) is False  # a token never issued
    assert await lock.holder() == LockInfo("b", 2, START + 11.0)
    assert await lock.release("b", t2) is True
    assert await lock.holder() is None
    assert await lock.release("b", t2) is False  # already released
    cluster.assert_agree()


async def test_refresh_extends_a_live_lease() -> None:
    cluster = FakeCluster(ReplicatedLock)
    lock = cluster.leader
    t = await lock.acquire("a", 5.0)
    assert t is not None
    cluster.clock.advance(4.0)
    assert await lock.refresh("a", t, 5.0) is True  # now ends at +9
    cluster.clock.advance(4.0)
    assert await lock.acquire("b", 5.0) is None
    cluster.clock.advance(1.0)
    assert await lock.acquire("b", 5.0) == t + 1


async def test_lock_time_never_runs_backwards() -> None:
    # A new leader whose clock lags does not make a lease run longer in lock time,
    # nor let another owner in early: the lock's clock is the highest leader time seen.
    cluster = FakeCluster(ReplicatedLock)
    lock = cluster.leader
    cluster.clock.advance(100.0)
    assert await lock.acquire("a", 10.0) == 1  # lease ends at START + 110
    cluster.clock.now = START + 50.0  # leader change to a slow clock
    assert await lock.acquire("b", 10.0) is None
    assert await lock.refresh("a", 1, 10.0) is True  # ends at START + 110 (100 + 10)
    assert await lock.holder() == LockInfo("a", 1, START + 110.0)
    cluster.clock.now = START + 110.0
    assert await lock.acquire("b", 10.0) == 2
    cluster.assert_agree()


async def test_lock_refuses_bad_ttls() -> None:
    cluster = FakeCluster(ReplicatedLock)
    with pytest.raises(BadArguments, match=r"argument 'ttl': Expected `float` > 0.0"):
        _ = cluster.leader.acquire("a", 0.0)
    with pytest.raises(BadArguments, match="argument 'ttl'"):
        _ = cluster.leader.refresh("a", 1, -1.0)
    assert cluster.proposals == []
    with pytest.raises(ValueError, match="ttl must be finite"):
        await cluster.leader.acquire("a", math.inf)
    assert await cluster.leader.holder() is None and await cluster.leader.last_token() == 0


async def test_lock_restore_preserves_tokens_and_leases() -> None:
    cluster = FakeCluster(ReplicatedLock)
    for owner in "abc":
        token = await cluster.leader.acquire(owner, 5.0)
        assert token is not None
        await cluster.leader.release(owner, token)
    await cluster.leader.acquire("d", 30.0)
    image = snapshot_bytes(cluster.replicas[2])
    clock = cluster.clock
    clock.advance(10.0)
    after = FakeCluster(lambda: restored(ReplicatedLock, image), clock=clock)
    assert await after.leader.holder() == LockInfo("d", 4, START + 30.0)
    assert await after.leader.acquire("e", 5.0) is None  # d's lease survived the restore
    clock.advance(25.0)
    assert await after.replicas[1].acquire("e", 5.0) == 5  # tokens continue, never reused
    after.assert_agree()


# --- queue ----------------------------------------------------------------------


async def test_queue_is_fifo() -> None:
    cluster = FakeCluster(ReplicatedQueue)
    q = cluster.replicas[1]
    assert await q.pop() is None
    assert await q.put("a") == 1
    assert await q.put({"job": 2}) == 2
    assert await q.put([3]) == 3
    assert await q.size() == 3 and await q.peek() == "a"
    assert await q.items() == ["a", {"job": 2}, [3]]
    assert await q.pop() == "a"
    assert await cluster.leader.pop() == {"job": 2}
    assert await q.pop() == [3]
    assert await q.pop() is None and await q.size() == 0
    cluster.assert_agree()


async def test_queue_refuses_none_items() -> None:
    cluster = FakeCluster(ReplicatedQueue)
    with pytest.raises(ValueError, match="cannot be None"):
        await cluster.leader.put(None)
    assert await cluster.leader.size() == 0


async def test_queue_snapshot_captures_the_items() -> None:
    cluster = FakeCluster(ReplicatedQueue)
    await cluster.leader.put(1)
    snap = cluster.leader.snapshot()
    await cluster.leader.put(2)
    await cluster.leader.pop()
    old = restored(ReplicatedQueue, b"".join(snap.chunks()))
    snap.release()
    assert old.items.local() == [1] and cluster.leader.items.local() == [2]


# --- properties: random operations, a model, snapshot/restore equality -----------

keys = st.sampled_from(["a", "b", "c", "d"])
values = st.one_of(
    st.integers(-100, 100),
    st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=3),
    st.dictionaries(st.sampled_from(["x", "y"]), st.booleans(), max_size=2),
)
dict_ops = st.lists(
    st.one_of(
        st.tuples(st.just("set"), keys, values),
        st.tuples(st.just("delete"), keys),
        st.tuples(st.just("cas"), keys, st.one_of(st.none(), values), st.one_of(st.none(), values)),
        st.tuples(st.just("advance"), st.floats(0, 5)),
    ),
    max_size=30,
)
SETTINGS = settings(max_examples=60, deadline=None)


async def _check_snapshot_restore(
    cluster: FakeCluster[Any], factory: Callable[[], Replicated]
) -> Replicated:
    image = cluster.assert_agree()
    fresh = restored(factory, image)
    assert snapshot_bytes(fresh) == image
    return fresh


@SETTINGS
@given(dict_ops)
async def test_dict_random_ops_match_a_model_and_survive_snapshots(
    ops: list[tuple[Any, ...]],
) -> None:
    cluster = FakeCluster(ReplicatedDict)
    model: dict[str, Any] = {}
    for i, op in enumerate(ops):
        replica = cluster.replicas[i % 3]
        if op[0] == "set":
            assert await replica.set(op[1], op[2]) == model.get(op[1])
            model[op[1]] = op[2]
        elif op[0] == "delete":
            assert await replica.delete(op[1]) == model.pop(op[1], None)
        elif op[0] == "cas":
            _, key, expected, new = op
            swapped = model.get(key) == expected
            assert await replica.cas(key, expected, new) is swapped
            if swapped and new is None:
                model.pop(key, None)
            elif swapped:
                model[key] = new
        else:
            cluster.clock.advance(op[1])
    assert await cluster.leader.items() == list(model.items())
    fresh = await _check_snapshot_restore(cluster, ReplicatedDict)
    assert isinstance(fresh, ReplicatedDict) and fresh.items.local() == list(model.items())


@SETTINGS
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("put"), values),
            st.tuples(st.just("pop")),
        ),
        max_size=30,
    )
)
async def test_queue_random_ops_match_a_model_and_survive_snapshots(
    ops: list[tuple[Any, ...]],
) -> None:
    cluster = FakeCluster(ReplicatedQueue)
    model: deque[Any] = deque()
    for i, op in enumerate(ops):
        replica = cluster.replicas[i % 3]
        if op[0] == "put":
            model.append(op[1])
            assert await replica.put(op[1]) == len(model)
        else:
            assert await replica.pop() == (model.popleft() if model else None)
    assert await cluster.leader.items() == list(model)
    fresh = await _check_snapshot_restore(cluster, ReplicatedQueue)
    assert isinstance(fresh, ReplicatedQueue) and fresh.items.local() == list(model)


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "set"]), st.integers(-(2**40), 2**40)),
        max_size=30,
    )
)
async def test_counter_random_ops_match_a_model_and_survive_snapshots(
    ops: list[tuple[str, int]],
) -> None:
    cluster = FakeCluster(ReplicatedCounter)
    model = 0
    for i, (op, n) in enumerate(ops):
        replica = cluster.replicas[i % 3]
        if op == "add":
            model += n
            assert await replica.add(n) == model
        else:
            assert await replica.set(n) == model
            model = n
    fresh = await _check_snapshot_restore(cluster, ReplicatedCounter)
    assert isinstance(fresh, ReplicatedCounter) and fresh.get.local() == model


@SETTINGS
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("acquire"), st.sampled_from("abc"), st.floats(0.5, 10)),
            st.tuples(st.just("release"), st.sampled_from("abc"), st.integers(0, 8)),
            st.tuples(st.just("refresh"), st.sampled_from("abc"), st.integers(0, 8)),
            st.tuples(st.just("advance"), st.floats(-5, 10)),
        ),
        max_size=30,
    )
)
async def test_lock_random_ops_keep_tokens_monotonic_and_survive_snapshots(
    ops: list[tuple[Any, ...]],
) -> None:
    cluster = FakeCluster(ReplicatedLock)
    issued: list[int] = []
    for i, op in enumerate(ops):
        replica = cluster.replicas[i % 3]
        if op[0] == "acquire":
            token = await replica.acquire(op[1], op[2])
            if token is not None:
                issued.append(token)
        elif op[0] == "release":
            await replica.release(op[1], op[2])
        elif op[0] == "refresh":
            await replica.refresh(op[1], op[2], 1.0)
        else:
            cluster.clock.advance(op[1])  # may go backwards: a leader change
    assert issued == list(range(1, len(issued) + 1))
    fresh = await _check_snapshot_restore(cluster, ReplicatedLock)
    assert isinstance(fresh, ReplicatedLock) and fresh.last_token.local() == len(issued)
