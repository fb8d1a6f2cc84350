"""What a proposal's caller is told must be the truth (docs/runtime.md,
"Outcomes"): ``DroppedError`` and ``StoppedError`` only where the write provably never
was or never will be applied, ``NodeTimeoutError`` (unknown) everywhere else.

Memory transport and a manual clock: every schedule here is deterministic."""

from __future__ import annotations

import asyncio

from liferaft.core import AppendEntries, Message
from liferaft.runtime import DroppedError, Node, NodeTimeoutError, StoppedError
from tests.runtime.cluster import MemCluster


async def _outcome(fut: asyncio.Future[object]) -> BaseException | None:
    """The error ``fut`` ends with (its task needs a few loop turns after stop)."""
    await asyncio.wait({fut}, timeout=5)
    assert fut.done(), "the caller was never answered"
    return fut.exception()


def _appends(frm: str, m: Message) -> bool:
    # Heartbeats still pass, so followers know who leads (and forward to it).
    return isinstance(m, AppendEntries)


async def _figure_8_until_l2(
    c: MemCluster,
) -> tuple[Node, Node, Node, asyncio.Future[int], asyncio.Future[int], int]:
    """The Figure 8 schedule up to its second leader: leader A appends B's
    forwarded writes W0, W1 at j-1, j and replicates nothing, then is cut
    off, and B and C elect L2 (no one replicates: calls and heartbeats still
    pass).  Returns (A, B, L2, W0, W1, j)."""
    a = await c.leader()
    b, other = (n for n in c.nodes.values() if n is not a)
    await c.drive(c.sms[a.id].add(1))
    await c.until(lambda: b.applied == other.applied == a.applied)
    base = a.status().last_log_index
    c.net.drop_if(_appends)
    w0 = asyncio.ensure_future(c.sms[b.id].add(100))
    w1 = asyncio.ensure_future(c.sms[b.id].add(1000))
    await c.until(lambda: a.status().last_log_index >= base + 2, seconds=1)
    c.net.isolate(a.id)
    await c.until(lambda: b.is_leader or other.is_leader, seconds=10)
    return a, b, (b if b.is_leader else other), w0, w1, base + 2


async def test_an_entry_overwritten_on_one_node_can_still_commit_figure_8() -> None:
    """Raft Figure 8 seen from a caller.  Leader A (term t1) appends B's
    forwarded writes W0, W1 at j-1, j but replicates nothing.  B and C elect
    L2, whose entries take j-1 and j (W2 at j) but are never replicated.  L2
    is cut off; A wins the next term with C's vote and commits its old
    entries, W1 included.  B's caller of W1 must not have been told
    "DroppedError" (503, safe to retry) when W2 took index j: the outcome is
    decided by what is *applied* at j."""
    c = MemCluster(3)
    await c.start()
    try:
        a, b, l2, w0, w1, j = await _figure_8_until_l2(c)
        w2 = asyncio.ensure_future(c.sms[b.id].add(10_000))
        await c.until(lambda: l2.status().last_log_index >= j, seconds=2)
        assert l2.status().last_log_index == j  # W2 took index j
        await c.run(0.05)  # give a premature verdict every chance to show
        assert not w1.done(), f"W1 decided before index {j} was applied: {w1!r}"
        # L2 goes away; A and C elect A, which commits (j-1, t1) and (j, t1).
        c.net.heal()
        c.net.isolate(l2.id)
        await c.until(lambda: a.is_leader and a.applied >= j, seconds=30)
        c.net.heal()
        await c.until(lambda: all(n.applied >= a.applied for n in c.nodes.values()), seconds=30)
        assert {c.sms[n]._value for n in c.ids} == {1 + 100 + 1000}
        assert (await w0, await w1) == (101, 1101)
        # W2 was never applied anywhere, and that is what its caller hears.
        await c.until(lambda: w2.done(), seconds=10)
        assert isinstance(w2.exception(), DroppedError)
    finally:
        await c.stop()


async def test_stop_answers_timeout_for_a_forward_the_leader_appended() -> None:
    """A follower forwards a write; the leader appends it (and will commit
    it); the follower stops.  Its caller must hear NodeTimeoutError (outcome
    unknown), not StoppedError ("never proposed")."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        f = next(n for n in c.nodes.values() if n is not ld)
        await c.drive(c.sms[ld.id].add(1))
        await c.until(lambda: f.applied == ld.applied)
        before = ld.status().last_log_index
        c.net.drop_if(_appends)  # the leader appends, nobody learns of it yet
        fut = asyncio.ensure_future(c.sms[f.id].add(10))
        await c.until(lambda: ld.status().last_log_index > before, seconds=1)
        await f.stop()
        exc = await _outcome(fut)
        c.net.drop_if(None)
        await c.until(lambda: c.sms[ld.id]._value == 11)
        assert isinstance(exc, NodeTimeoutError), f"got {type(exc).__name__}: {exc}"
    finally:
        await c.stop()


async def test_stop_answers_timeout_while_a_forward_is_on_the_wire() -> None:
    """StoppedError while the forward call is out (the leader may have it): NodeTimeoutError."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        f = next(n for n in c.nodes.values() if n is not ld)
        c.net.pause()  # the call leaves f and is held on the wire
        fut = asyncio.ensure_future(c.sms[f.id].add(10))
        for _ in range(50):
            await asyncio.sleep(0)
        assert c.net.held >= 1
        await f.stop()
        exc = await _outcome(fut)
        assert isinstance(exc, NodeTimeoutError), f"got {type(exc).__name__}: {exc}"
        c.net.resume()
    finally:
        await c.stop()


async def test_stop_answers_stopped_when_nothing_left_the_node() -> None:
    """With no leader reachable the forward never leaves: StoppedError is true."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        f: Node = next(n for n in c.nodes.values() if n is not ld)
        c.net.isolate(f.id)
        fut = asyncio.ensure_future(c.sms[f.id].add(10))
        await c.run(0.05)
        await f.stop()
        exc = await _outcome(fut)
        assert isinstance(exc, StoppedError), f"got {type(exc).__name__}: {exc}"
    finally:
        await c.stop()


async def test_an_earlier_waiter_is_settled_when_the_later_one_gave_up() -> None:
    """The Figure 8 schedule again, but the caller of W2 (which took W1's
    index on L2) gives up first.  W1's waiter was set aside for W2's; once
    W2's is gone, the apply of W1's index must still settle W1 with its
    result, not leave it to run into its own timeout ("unknown")."""
    c = MemCluster(3)
    await c.start()
    try:
        a, b, l2, w0, w1, j = await _figure_8_until_l2(c)
        # W2 takes index j on L2, and its caller gives up soon after.
        w2 = asyncio.ensure_future(c.sms[b.id].add.with_timeout(0.5)(10_000))
        await c.until(lambda: l2.status().last_log_index >= j, seconds=2)
        await c.until(lambda: w2.done(), seconds=2)
        assert isinstance(w2.exception(), NodeTimeoutError)
        assert not w1.done()
        c.net.heal()
        c.net.isolate(l2.id)
        await c.until(lambda: a.is_leader and a.applied >= j, seconds=30)
        c.net.heal()
        await c.until(lambda: b.applied >= j, seconds=30)
        # Applied at j on B: W1's outcome is known now (a tick or two for the
        # callbacks), long before W1's own deadline.
        await c.until(lambda: w1.done(), seconds=0.1)
        assert (await w0, await w1) == (101, 1101)
    finally:
        await c.stop()


async def test_stop_answers_a_membership_change_it_never_proposed() -> None:
    """A change queued for the node task when the node stops was never
    proposed: its caller hears StoppedError from stop() itself, not nothing (then
    a NodeTimeoutError, "unknown", once its deadline passes)."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        fut = asyncio.ensure_future(ld.add_learner("n4", "n4"))
        for _ in range(50):
            await asyncio.sleep(0)
            if ld.loop.ops:
                break
        assert ld.loop.ops, "the change never reached the node task's queue"
        await ld.stop()
        # The manual clock stands still: only stop() can answer the caller.
        exc = await _outcome(fut)
        assert isinstance(exc, StoppedError), f"got {type(exc).__name__}: {exc}"
        assert "n4" not in c.nodes[next(i for i in c.ids if i != ld.id)].members
    finally:
        await c.stop()
