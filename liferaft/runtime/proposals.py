"""Proposals of a running node (part of :class:`~liferaft.runtime.Node`).

A write on the leader takes the fast path: :meth:`ProposalsMixin.submit`
queues it with its future, the node task proposes everything queued as one
batch (:meth:`ProposalsMixin._propose_batch`), and the future resolves when
the entry is applied.  Deadlines are checked once a tick by the ticker
(:meth:`ProposalsMixin._expire`), not by a timer per write.  Anywhere else
(a follower, a leader that stepped down before the batch) a write takes the
slow path, :meth:`ProposalsMixin._route`: wait for a leader, forward the
bytes to it with a transport call, then wait for this node's own apply of
the (index, term) it answered.  A forward that never left this node
(``CallNotSent``) proposed nothing, so it is retried like "no leader".

Outcomes are decided by what is applied, never earlier.  Two waiters can
hold one index (a later leader reused it), but an entry that one node saw
overwritten can still be committed by yet another leader (Raft Figure 8), so
an earlier waiter is only set aside (``_displaced``) and settled by the
apply of that index: same term, its result; another term, ``Dropped``.
Likewise ``Stopped`` means "never left this node": once a forward may have
reached the leader (``_Prop.sent``), stopping answers ``Timeout``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import struct
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from liferaft.core import RaftError, RawNode, Role
from liferaft.transport.base import CallNotSent, Transport

from . import peer_rpc
from ._futures import _fail
from .clock import Clock, SystemClock
from .errors import (
    BadConfig,
    Dropped,
    NotLeader,
    Stopped,
    StorageFailed,
    Timeout,
)

if TYPE_CHECKING:
    from .node import NodeConfig

T = TypeVar("T")
log = logging.getLogger("liferaft.runtime")
#: Refusals after which the forward is retried through whoever leads next.
_MOVED_ON = (peer_rpc.Refusal.NOT_LEADER, peer_rpc.Refusal.NO_LEADER)
_STAMP = struct.Struct("<d")


class _Prop:
    """A proposal on its way: queued for the node task, then (once it has an
    index) awaiting its apply.  ``want_index``: the caller wants (index, term)
    rather than the result (a proposal forwarded by a follower)."""

    __slots__ = ("data", "stamp", "fut", "deadline", "term", "index", "want_index", "sent")

    def __init__(
        self,
        data: bytes,
        stamp: bool,
        fut: asyncio.Future[Any],
        deadline: float = float("inf"),
        want_index: bool = False,
    ) -> None:
        self.data = data
        self.stamp = stamp
        self.fut = fut
        self.deadline = deadline
        self.want_index = want_index
        self.term = 0
        self.index = 0
        #: The slow path's forward may have reached a leader's log.
        self.sent = False


class ProposalsMixin:
    """propose / submit, batching, deadlines and forwarding."""

    if TYPE_CHECKING:  # provided by Node
        id: str
        config: NodeConfig
        clock: Clock
        rn: RawNode | None
        transport: Transport
        applied: int
        _props: deque[_Prop]
        _deadlines: deque[_Prop]
        _late: list[tuple[float, int, _Prop]]
        _seq: itertools.count[int]
        _forwarding: int
        _pending: dict[int, _Prop]
        _displaced: dict[int, list[_Prop]]
        _recent: OrderedDict[int, tuple[int, bool, Any]]
        _leader_waiters: list[asyncio.Future[None]]
        _wake: asyncio.Event
        _bg: set[asyncio.Task[Any]]
        _storage_ok: bool

        def _check_running(self) -> None: ...

    def _expire(self, now: float) -> None:
        """Fail proposals past their deadline.  Run by the ticker, not the node
        task, so a node stuck on a failing disk still times its callers out.
        One check per tick instead of a timer per proposal: profiling showed
        the timers costing more than the core."""
        dq = self._deadlines
        while dq and (dq[0].deadline <= now or dq[0].fut.done()):
            self._time_out(dq.popleft())
        late = self._late
        while late and (late[0][0] <= now or late[0][2].fut.done()):
            self._time_out(heapq.heappop(late)[2])
        # Most proposals finish long before their deadline: drop them now and
        # then so the queue holds about what is still outstanding.
        if len(dq) > 4096 and len(dq) > 4 * (len(self._pending) + len(self._props)):
            self._deadlines = deque(p for p in dq if not p.fut.done())

    def _time_out(self, p: _Prop) -> None:
        if p.fut.done():
            return
        if p.index:
            self._unwait(p)
            _fail(p.fut, Timeout(f"entry {p.index} not applied in time; outcome unknown"))
        else:
            _fail(p.fut, Timeout("the proposal was not accepted in time"))

    def _propose_batch(self) -> None:
        rn = self.rn
        assert rn is not None
        props = self._props
        n = min(len(props), self.config.max_batch)
        live = [p for p in (props.popleft() for _ in range(n)) if not p.fut.done()]
        if not live:
            return
        if not self._storage_ok:
            for p in live:
                _fail(p.fut, StorageFailed("the disk refused the last write; not taking writes"))
            return
        now = self.clock.wall()
        datas = [_STAMP.pack(now) + p.data[8:] if p.stamp else p.data for p in live]
        try:
            last = rn.propose_many(datas)
        except RaftError as exc:
            # Not leader, or a leadership transfer in progress: nothing was
            # proposed, so the caller may retry.  Forwarded ones are told so;
            # our own callers go the slow way (wait for a leader, forward).
            for p in live:
                if p.want_index:
                    _fail(p.fut, NotLeader(str(exc), rn.leader))
                else:
                    self._reroute(p)
            return
        index = last - len(live)
        term = rn.term
        pending = self._pending
        for p in live:
            index += 1
            if p.want_index:
                p.fut.set_result((index, term))
                continue
            p.index = index
            p.term = term
            old = pending.get(index)
            if old is not None:
                self._displaced.setdefault(index, []).append(old)
            pending[index] = p

    def _unwait(self, p: _Prop) -> None:
        """Forget ``p`` as a waiter for its index (it timed out or gave up)."""
        if self._pending.get(p.index) is p:
            del self._pending[p.index]
        others = self._displaced.get(p.index)
        if others and p in others:
            others.remove(p)
            if not others:
                del self._displaced[p.index]

    async def propose(
        self, data: bytes, *, stamp_time: bool = False, timeout: float | None = None
    ) -> Any:
        """Replicate ``data``; returns what the state machine's ``apply`` returned.

        Works on any node: a follower forwards to the leader.  Raises
        :class:`NotLeader` (no leader reachable; nothing proposed),
        :class:`Timeout` (outcome unknown), :class:`Dropped`,
        :class:`StorageFailed` or :class:`Stopped`.  ``stamp_time``: the
        leader writes its wall clock into ``data[0:8]`` (see statemachine.py).
        """
        return await self.submit(data, stamp_time=stamp_time, timeout=timeout)

    def submit(
        self, data: bytes, *, stamp_time: bool = False, timeout: float | None = None
    ) -> asyncio.Future[Any]:
        """:meth:`propose` without a coroutine: returns a future of the result
        at once (hashicorp/raft's ``Apply`` returns an ApplyFuture likewise).
        Many writes in flight then cost one future each, and no task.
        Cancelling the future before the entry is proposed withdraws it."""
        if not isinstance(data, bytes | bytearray | memoryview) or not data:
            raise BadConfig("data must be non-empty bytes")
        if stamp_time and len(data) < 8:
            raise BadConfig("stamp_time needs at least 8 bytes of data to overwrite")
        self._check_running()
        t = self.config.commit_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        p = _Prop(bytes(data), stamp_time, fut, self.clock.monotonic() + t)
        rn = self.rn
        assert rn is not None
        if rn.role is Role.LEADER and self._storage_ok:
            # The fast path: straight into the next batch, one deadline check
            # per tick (see _expire) rather than a timer per proposal.
            self._props.append(p)
            dq = self._deadlines
            # Deadlines are checked once a tick anyway, so one that is at most
            # a tick earlier than the last may queue behind it.
            if not dq or dq[-1].deadline - self.config.tick_interval <= p.deadline:
                dq.append(p)
            else:
                heapq.heappush(self._late, (p.deadline, next(self._seq), p))
            self._wake.set()
        else:
            self._reroute(p)
        return fut

    def _reroute(self, p: _Prop) -> None:
        """Propose ``p`` the slow way: wait for a leader, forward if need be."""
        left = max(0.0, p.deadline - self.clock.monotonic())

        def sent(maybe: bool) -> None:
            p.sent = maybe

        async def go() -> Any:
            return await self._submit(
                lambda: self._route_propose(p.data, p.stamp, left, sent), left
            )

        task = asyncio.get_running_loop().create_task(go())
        self._bg.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._bg.discard(t)
            if p.fut.done():
                return
            if t.cancelled() and p.sent:
                _fail(p.fut, Timeout(f"node {self.id} stopped; the write may be in the log"))
            elif t.cancelled():
                _fail(p.fut, Stopped(f"node {self.id} stopped"))
            elif t.exception() is not None:
                _fail(p.fut, t.exception())  # type: ignore[arg-type]
            else:
                p.fut.set_result(t.result())

        def cancel(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                task.cancel()

        task.add_done_callback(done)
        p.fut.add_done_callback(cancel)

    async def _submit(self, start: Callable[[], Awaitable[tuple[int, int]]], t: float) -> Any:
        """Get an (index, term) from ``start``, then wait for that apply."""
        self._check_running()
        deadline = self.clock.monotonic() + t
        self._forwarding += 1
        try:
            # The route keeps its own deadline and tells "not proposed"
            # (NotLeader) from "unknown" (Timeout); this bound is a backstop.
            index, term = await self._bounded(
                start(), t + self.config.tick_interval, "no leader accepted the proposal"
            )
        finally:
            self._forwarding -= 1
        if index <= self.applied:
            rec = self._recent.get(index)
            if rec is None:
                raise Timeout(f"entry {index} was applied long ago; outcome unknown")
            rterm, ok, result = rec
            if rterm != term:
                raise Dropped(f"entry {index} was overwritten by term {rterm}")
            if not ok:
                raise result
            return result
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        p = _Prop(b"", False, fut)
        p.index, p.term = index, term
        old = self._pending.get(index)
        if old is not None:
            self._displaced.setdefault(index, []).append(old)
        self._pending[index] = p
        left = max(0.0, deadline - self.clock.monotonic())
        try:
            return await self._bounded(fut, left, f"entry {index} not applied in time")
        finally:
            self._unwait(p)

    async def _route_propose(
        self, data: bytes, stamp: bool, t: float, sent: Callable[[bool], None] | None = None
    ) -> tuple[int, int]:
        req = peer_rpc.Propose(data, stamp)
        return await self._route(lambda: self._propose_local(data, stamp), req, t, sent)

    async def _route(
        self,
        local: Callable[[], Awaitable[tuple[int, int]]],
        req: peer_rpc.Request,
        t: float,
        sent: Callable[[bool], None] | None = None,
    ) -> tuple[int, int]:
        """Propose through whoever leads.  ``sent(True)`` is called before
        the proposal may reach a log (a forward goes out, or a local proposal
        is made) and ``sent(False)`` once it provably did not (the call was
        never sent, or the leader answered that it is not the leader)."""
        mark = sent or (lambda _: None)
        rn = self.rn
        assert rn is not None
        deadline = self.clock.monotonic() + t
        while True:
            self._check_running()
            leader = rn.leader
            if rn.role is Role.LEADER:
                # Marked before: a cancel that lands just after the batch
                # proposed it would otherwise be taken for "never proposed".
                mark(True)
                try:
                    return await local()
                except NotLeader:
                    leader = None  # stepped down or transferring: wait and retry
                    mark(False)
            elif leader is not None and leader != self.id:
                mark(True)
                try:
                    raw = await self.transport.call(
                        leader,
                        peer_rpc.encode(req),
                        max(0.01, deadline - self.clock.monotonic()),
                    )
                except CallNotSent as exc:
                    # Nothing left this node, so nothing was proposed: wait
                    # for a reachable leader like when none is known.
                    log.debug("node %s: cannot reach leader %s: %s", self.id, leader, exc)
                    mark(False)
                except TimeoutError as exc:
                    raise Timeout(f"forwarding to {leader} timed out; outcome unknown") from exc
                except Exception as exc:
                    raise Timeout(f"forwarding to {leader} failed: {exc}; outcome unknown") from exc
                else:
                    try:
                        rep = peer_rpc.decode_reply(raw)
                    except peer_rpc.RpcError as exc:
                        raise Timeout(f"{leader}: {exc}; outcome unknown") from exc
                    if isinstance(rep, peer_rpc.Accepted):
                        return rep.index, rep.term
                    if not isinstance(rep, peer_rpc.Refused):
                        raise Timeout(f"{leader} answered {rep!r}; outcome unknown")
                    if rep.code not in _MOVED_ON:
                        raise peer_rpc.error_of(rep, leader)
                    # The leader moved on: nothing was proposed; try again.
                    mark(False)
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise NotLeader(f"no leader (node {self.id} knows of {rn.leader})", rn.leader)
            await self._wait_leader_change(
                min(left, self.config.tick_interval * self.config.election_ticks)
            )

    async def _propose_local(self, data: bytes, stamp: bool) -> tuple[int, int]:
        self._check_running()
        if not self._storage_ok:
            raise StorageFailed("the disk refused the last write; not taking writes")
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._props.append(_Prop(data, stamp, fut, want_index=True))
        self._wake.set()
        return await fut

    async def _wait_leader_change(self, t: float) -> None:
        f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leader_waiters.append(f)
        try:
            await self._bounded(f, t, "")
        except Timeout:
            pass
        finally:
            if f in self._leader_waiters:
                self._leader_waiters.remove(f)

    async def _bounded(self, aw: Awaitable[T], t: float, what: str) -> T:
        """Await ``aw`` for at most ``t`` seconds of this node's clock."""
        if isinstance(self.clock, SystemClock):
            # The fast path (one timer handle, no extra tasks): profiling the
            # leader showed the generic path below costing more than the core.
            try:
                async with asyncio.timeout(t):
                    return await aw
            except TimeoutError:
                raise Timeout(what or "timed out") from None
        fut = asyncio.ensure_future(aw)
        sleeper = asyncio.ensure_future(self.clock.sleep(t))
        try:
            done, _ = await asyncio.wait({fut, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        finally:
            sleeper.cancel()
        if fut in done:
            return fut.result()
        fut.cancel()
        raise Timeout(what or "timed out")
