"""The slow path of a write: to the leader, wherever it is.

Theory of operation
-------------------
A write that cannot go straight into the leader's next batch (this node is
a follower, or a leader that stepped down before the batch) is routed
(:meth:`Router.route`): wait for a leader; if that is this node, propose
locally; else forward the request to it over the peer RPC
(liferaft/runtime/peer_rpc.py) and get back the (index, term) its entry got.
Then the caller waits for this node's *own* apply of that index
(:meth:`Router.submit`): the result comes from the local state machine,
which is the same as the leader's (State Machine Safety, §5.4.3), so results
never cross the wire.

What a caller is told is the truth (docs/architecture.md, "Outcomes"): a
forward that never left this node (``CallNotSentError``), or that the leader
refused because it no longer leads, proposed nothing, so it is retried like
"no leader"; any other failure after the request left is ``NodeTimeoutError``
(outcome unknown).  ``sent`` reports which side of that line a write is on,
so stopping the node answers ``StoppedError`` only for writes that never left.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from liferaft.core import Role
from liferaft.transport.base import CallNotSentError, Transport

from . import peer_rpc
from ._futures import _fail, bounded
from .clock import Clock
from .config import NodeConfig
from .errors import NodeTimeoutError, NotLeaderError, StoppedError, StorageFailedError
from .loop import RaftLoop
from .proposals import ProposalTracker, _Prop

log = logging.getLogger("liferaft.runtime")
#: Refusals after which the forward is retried through whoever leads next.
_MOVED_ON = (peer_rpc.Refusal.NOT_LEADER, peer_rpc.Refusal.NO_LEADER)


class Router:
    """Forwarding to the leader, and waiting for the local apply."""

    def __init__(
        self,
        loop: RaftLoop,
        tracker: ProposalTracker,
        transport: Transport,
        clock: Clock,
        config: NodeConfig,
        applied: Callable[[], int],
    ) -> None:
        self._loop = loop
        self._applied = applied
        self._tracker = tracker
        self._transport = transport
        self._clock = clock
        self._config = config
        self.id = loop.id

    def reroute(self, p: _Prop) -> None:
        """Propose ``p`` the slow way: wait for a leader, forward if need be."""
        left = max(0.0, p.deadline - self._clock.monotonic())

        def sent(maybe: bool) -> None:
            p.sent = maybe

        async def go() -> Any:
            return await self.submit(lambda: self.route_propose(p.data, p.stamp, left, sent), left)

        task = self._loop.spawn(go())

        def done(t: asyncio.Task[Any]) -> None:
            if p.fut.done():
                return
            if t.cancelled() and p.sent:
                _fail(
                    p.fut, NodeTimeoutError(f"node {self.id} stopped; the write may be in the log")
                )
            elif t.cancelled():
                _fail(p.fut, StoppedError(f"node {self.id} stopped"))
            elif t.exception() is not None:
                _fail(p.fut, t.exception())  # type: ignore[arg-type]
            else:
                p.fut.set_result(t.result())

        def cancel(f: asyncio.Future[Any]) -> None:
            if f.cancelled():
                task.cancel()

        task.add_done_callback(done)
        p.fut.add_done_callback(cancel)

    async def submit(self, start: Callable[[], Awaitable[tuple[int, int]]], t: float) -> Any:
        """Get an (index, term) from ``start``, then wait for that apply."""
        self._loop.check_running()
        tracker = self._tracker
        deadline = self._clock.monotonic() + t
        tracker.forwarding += 1
        try:
            # The route keeps its own deadline and tells "not proposed"
            # (NotLeaderError) from "unknown" (NodeTimeoutError); this bound is a backstop.
            index, term = await bounded(
                self._clock,
                start(),
                t + self._config.tick_interval,
                "no leader accepted the proposal",
            )
        finally:
            tracker.forwarding -= 1
        if index <= self._applied():
            return tracker.recent_outcome(index, term)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        p = _Prop(b"", False, fut)
        p.index, p.term = index, term
        tracker.wait(p)
        left = max(0.0, deadline - self._clock.monotonic())
        try:
            return await bounded(self._clock, fut, left, f"entry {index} not applied in time")
        finally:
            tracker.unwait(p)

    async def route_propose(
        self, data: bytes, stamp: bool, t: float, sent: Callable[[bool], None] | None = None
    ) -> tuple[int, int]:
        """Propose ``data`` through whoever leads; its (index, term)."""
        req = peer_rpc.Propose(data, stamp)
        return await self.route(lambda: self.propose_local(data, stamp), req, t, sent)

    async def route(
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
        rn = self._loop.rn
        assert rn is not None
        deadline = self._clock.monotonic() + t
        while True:
            self._loop.check_running()
            leader = rn.leader
            if rn.role is Role.LEADER:
                # Marked before: a cancel that lands just after the batch
                # proposed it would otherwise be taken for "never proposed".
                mark(True)
                try:
                    return await local()
                except NotLeaderError:
                    leader = None  # stepped down or transferring: wait and retry
                    mark(False)
            elif leader is not None and leader != self.id:
                mark(True)
                got = await self._forward(leader, req, deadline)
                if got is not None:
                    return got
                # Nothing was proposed; try again.
                mark(False)
            left = deadline - self._clock.monotonic()
            if left <= 0:
                raise NotLeaderError(f"no leader (node {self.id} knows of {rn.leader})", rn.leader)
            await self._loop.wait_leader_change(
                min(left, self._config.tick_interval * self._config.election_ticks)
            )

    async def _forward(
        self, leader: str, req: peer_rpc.Request, deadline: float
    ) -> tuple[int, int] | None:
        """Send ``req`` to ``leader``: its (index, term), or None if it
        provably proposed nothing and the leader moved on."""
        try:
            raw = await self._transport.call(
                leader,
                peer_rpc.encode(req),
                max(0.01, deadline - self._clock.monotonic()),
            )
        except CallNotSentError as exc:
            # Nothing left this node, so nothing was proposed: wait for a
            # reachable leader like when none is known.
            log.debug("node %s: cannot reach leader %s: %s", self.id, leader, exc)
            return None
        except TimeoutError as exc:
            raise NodeTimeoutError(f"forwarding to {leader} timed out; outcome unknown") from exc
        except Exception as exc:
            raise NodeTimeoutError(
                f"forwarding to {leader} failed: {exc}; outcome unknown"
            ) from exc
        rep = peer_rpc.reply_of(raw, leader, peer_rpc.Accepted)
        if isinstance(rep, peer_rpc.Accepted):
            return rep.index, rep.term
        if rep.code not in _MOVED_ON:
            raise peer_rpc.error_of(rep, leader)
        return None  # the leader moved on

    async def propose_local(self, data: bytes, stamp: bool) -> tuple[int, int]:
        """Propose ``data`` on this node (the leader); its (index, term)."""
        self._loop.check_running()
        if not self._loop.storage_ok:
            raise StorageFailedError("the disk refused the last write; not taking writes")
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._tracker.enqueue_forwarded(_Prop(data, stamp, fut, want_index=True))
        self._loop.wake()
        return await fut
