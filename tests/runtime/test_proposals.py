"""The proposal tracker on its own: no Node, no loop task, a fake core.

Each test pins one rule of liferaft/runtime/proposals.py: outcomes are
decided by the apply of an index (the displaced rule, Raft Figure 8),
deadlines fire in deadline order, a refused batch reroutes, recent results
answer a forward that learned its index late, and stopping tells "proposed"
(NodeTimeoutError) from "never proposed" (StoppedError).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from liferaft.core import Entry
from liferaft.core import NotLeaderError as CoreNotLeaderError
from liferaft.runtime import (
    DroppedError,
    NodeTimeoutError,
    NotLeaderError,
    StoppedError,
    StorageFailedError,
    entry_format,
)
from liferaft.runtime.proposals import ProposalTracker, _Prop

TICK = 0.05


class FakeCore:
    """Appends proposals to a list; refuses them when not leading."""

    def __init__(self, term: int = 1, last: int = 0) -> None:
        self.term = term
        self.leader: str | None = "n1"
        self.last = last
        self.refuse = False
        self.proposed: list[bytes] = []

    def propose_many(self, datas: list[bytes]) -> int:
        if self.refuse:
            raise CoreNotLeaderError("not the leader")
        self.proposed.extend(datas)
        self.last += len(datas)
        return self.last


def prop(data: bytes = b"x" * 9, deadline: float = 100.0, **kw: Any) -> _Prop:
    return _Prop(data, False, asyncio.get_running_loop().create_future(), deadline, **kw)


def waiting(t: ProposalTracker, index: int, term: int) -> _Prop:
    """A caller waiting for the apply of ``index``, proposed in ``term``."""
    p = prop()
    p.index, p.term = index, term
    t.wait(p)
    return p


def tracker(rerouted: list[_Prop] | None = None) -> ProposalTracker:
    sink = rerouted if rerouted is not None else []
    return ProposalTracker(sink.append, TICK)


def batch(
    t: ProposalTracker, core: FakeCore, storage_ok: bool = True, entry_format: int = 2
) -> None:
    t.propose_batch(
        core, now=1.7e9, storage_ok=storage_ok, max_batch=4096, entry_format=entry_format
    )


def apply(t: ProposalTracker, *entries: tuple[int, int, Any]) -> bool:
    ents = [Entry(i, term, b"d") for i, term, _ in entries]
    results = [(False, r) if isinstance(r, BaseException) else (True, r) for _, _, r in entries]
    return t.settle_applied(ents, results)


async def test_a_batch_gets_consecutive_indexes_and_each_caller_its_result() -> None:
    t, core = tracker(), FakeCore(term=3, last=10)
    ps = [prop() for _ in range(3)]
    for p in ps:
        t.enqueue(p)
    batch(t, core)
    assert not t.queue and [(p.index, p.term) for p in ps] == [(11, 3), (12, 3), (13, 3)]
    assert apply(t, (11, 3, "a"), (12, 3, ValueError("no")), (13, 3, "c"))
    assert ps[0].fut.result() == "a" and ps[2].fut.result() == "c"
    assert isinstance(ps[1].fut.exception(), ValueError)
    assert not t.pending and not t.displaced


async def test_an_overwritten_waiter_is_settled_by_the_apply_of_its_index() -> None:
    """Figure 8: the entry a node saw overwritten can still commit, so the
    first waiter is set aside, not failed, and the apply decides both."""
    t = tracker()
    first = waiting(t, 5, 1)
    later = waiting(t, 5, 2)
    assert t.pending[5] is later and t.displaced[5] == [first]
    assert not first.fut.done()
    apply(t, (5, 1, "old"))  # the first term's entry is the one committed
    assert first.fut.result() == "old"
    assert isinstance(later.fut.exception(), DroppedError)
    assert not t.pending and not t.displaced


async def test_a_set_aside_waiter_is_settled_even_after_the_later_one_left() -> None:
    t = tracker()
    first = waiting(t, 7, 1)
    later = waiting(t, 7, 2)
    t.unwait(later)  # the later caller gave up
    later.fut.cancel()
    apply(t, (7, 2, "new"))
    assert isinstance(first.fut.exception(), DroppedError)
    assert not t.displaced


async def test_deadlines_fire_in_deadline_order_and_leave_nothing_behind() -> None:
    t, core = tracker(), FakeCore()
    slow = prop(deadline=3.0)
    fast = prop(deadline=0.3)  # earlier than the last by more than a tick: the heap
    t.enqueue(slow)
    t.enqueue(fast)
    assert len(t.deadlines) == 1 and len(t.late) == 1
    batch(t, core)
    t.expire(0.5)
    assert isinstance(fast.fut.exception(), NodeTimeoutError)
    assert "outcome unknown" in str(fast.fut.exception())
    assert not slow.fut.done()
    t.expire(3.0)
    assert isinstance(slow.fut.exception(), NodeTimeoutError)
    assert not t.pending and not t.deadlines and not t.late


async def test_a_write_never_proposed_times_out_as_not_accepted() -> None:
    t = tracker()
    p = prop(deadline=1.0)
    t.enqueue(p)
    t.expire(2.0)
    assert "not accepted" in str(p.fut.exception())


async def test_a_refused_batch_reroutes_local_writes_and_refuses_forwarded_ones() -> None:
    rerouted: list[_Prop] = []
    t, core = tracker(rerouted), FakeCore()
    core.refuse = True
    mine = prop()
    theirs = prop(want_index=True)
    t.enqueue(mine)
    t.enqueue_forwarded(theirs)
    batch(t, core)
    assert rerouted == [mine] and not mine.fut.done()
    assert isinstance(theirs.fut.exception(), NotLeaderError)


async def test_a_forwarded_write_gets_its_index_and_term() -> None:
    t, core = tracker(), FakeCore(term=4, last=2)
    p = prop(want_index=True)
    t.enqueue_forwarded(p)
    batch(t, core)
    assert p.fut.result() == (3, 4) and not t.pending


async def test_a_failed_disk_fails_the_batch_with_storage_failed() -> None:
    t, core = tracker(), FakeCore()
    p = prop()
    t.enqueue(p)
    batch(t, core, storage_ok=False)
    assert isinstance(p.fut.exception(), StorageFailedError) and not core.proposed


async def test_in_format_1_stamped_writes_carry_the_leader_clock_in_their_first_8_bytes() -> None:
    t, core = tracker(), FakeCore()
    loop = asyncio.get_running_loop()
    p = _Prop(b"\0" * 8 + b"rest", True, loop.create_future())
    q = _Prop(b"unstamped", False, loop.create_future())
    t.enqueue(p)
    t.enqueue(q)
    batch(t, core, entry_format=1)
    (stamp,) = struct.unpack("<d", core.proposed[0][:8])
    assert stamp == 1.7e9 and core.proposed[0][8:] == b"rest"
    assert core.proposed[1] == b"unstamped"


async def test_in_format_2_every_write_is_enveloped_and_its_bytes_kept() -> None:
    t, core = tracker(), FakeCore()
    loop = asyncio.get_running_loop()
    t.enqueue(_Prop(b"\0" * 8 + b"rest", True, loop.create_future()))
    t.enqueue(_Prop(b"unstamped", False, loop.create_future()))
    batch(t, core, entry_format=2)
    assert [entry_format.decode(d) for d in core.proposed] == [
        (1.7e9, b"\0" * 8 + b"rest"),
        (1.7e9, b"unstamped"),
    ]


async def test_recent_results_answer_a_forward_that_learned_its_index_late() -> None:
    t = tracker()
    apply(t, (1, 1, "unseen"))
    with pytest.raises(NodeTimeoutError):  # nobody was forwarding: not kept
        t.recent_outcome(1, 1)
    t.forwarding = 1
    apply(t, (2, 1, "two"), (3, 1, KeyError("k")))
    assert t.recent_outcome(2, 1) == "two"
    with pytest.raises(DroppedError):
        t.recent_outcome(2, 9)
    with pytest.raises(KeyError):
        t.recent_outcome(3, 1)


async def test_a_snapshot_covering_an_index_makes_its_outcome_unknown() -> None:
    t = tracker()
    below, above = waiting(t, 4, 1), waiting(t, 9, 1)
    t.fail_covered(5)
    assert isinstance(below.fut.exception(), NodeTimeoutError) and not above.fut.done()
    assert list(t.pending) == [9]


async def test_stop_tells_proposed_writes_from_queued_ones() -> None:
    t, core = tracker(), FakeCore()
    proposed, queued = prop(), prop()
    t.enqueue(proposed)
    batch(t, core)
    t.enqueue(queued)
    t.stop("n1")
    assert isinstance(proposed.fut.exception(), NodeTimeoutError)
    assert isinstance(queued.fut.exception(), StoppedError)
    assert not t.pending and not t.queue and not t.deadlines and not t.late
