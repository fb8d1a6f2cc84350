"""Calls over TCP, both directions: a request/response side channel beside
the Raft traffic (docs/transport.md, "Calls").

Outbound (:class:`OutboundCalls`)
    ``call`` puts a CALL frame (call id, payload) into the peer's queue like
    a message (:meth:`~.link.PeerLink.enqueue_call`), but never drops it
    silently: a full queue, a down peer or a lost connection fail it with
    :class:`CallError`.  Replies are matched to waiting futures by call id,
    so many calls are in flight at once.  ``call_address`` dials a one-off
    connection with a CALLER handshake ("I am X, a caller, not a peer"),
    makes one call on it and hangs up.
Inbound (:class:`CallServer`)
    Each CALL runs ``handler.handle_call`` as a task of its own, and its
    REPLY (call id, ok flag, payload or error text) goes back on the
    connection the call came in on.  Closing the transport, or losing that
    connection, cancels the task.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

from liferaft.core.messages import NodeId

from ._context import NET_ERRORS, Context, InboundConn, close_writer, why
from ._frames import (
    CALL_OVERHEAD,
    REPLY_OVERHEAD,
    FrameError,
    Kind,
    call_frame,
    parse_call,
    parse_reply,
    read_frame,
    reply_frame,
)
from .base import CallError, CallNotSentError, parse_address
from .greeting import Dialer

# Calls served at once on one inbound connection; more are answered with an error.
MAX_CALLS_PER_CONNECTION = 1024
# Error text in a REPLY is cut to this many characters.
MAX_ERROR_TEXT = 4000


@dataclasses.dataclass(eq=False)
class OutCall:
    """A call to a peer: queued like a message, then awaiting its REPLY."""

    call_id: int
    payload: bytes
    fut: asyncio.Future[bytes]
    # The waiting-for-a-reply table of the connection it was written on.
    home: dict[int, asyncio.Future[bytes]] | None = None


def fail(fut: asyncio.Future[bytes], exc: CallError) -> None:
    """Fail a waiting call, unless it is already settled."""
    if not fut.done():
        fut.set_exception(exc)


def settle(fut: asyncio.Future[bytes], ok: bool, data: memoryview) -> None:
    """Complete a waiting call with a REPLY's outcome."""
    if fut.done():
        return
    if ok:
        fut.set_result(bytes(data))
    else:
        text = bytes(data).decode("utf-8", "replace")
        fut.set_exception(CallError(f"remote error: {text}"))


class OutboundCalls:
    """Every call this node is waiting on, by call id, and the one-off
    caller connections of ``call_address``."""

    def __init__(self, ctx: Context, dialer: Dialer) -> None:
        self._ctx = ctx
        self._dialer = dialer
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self._ids = itertools.count(1)
        self._oneoffs: set[asyncio.Task[None]] = set()

    def check(self, payload: bytes) -> None:
        """Raise unless a call with ``payload`` can be made at all."""
        ctx = self._ctx
        if ctx.closed:
            raise CallNotSentError("the transport is closed")
        if ctx.handler is None:
            raise CallNotSentError("the transport is not started")
        if len(payload) + CALL_OVERHEAD > ctx.max_frame:
            raise CallError(
                f"a call payload of {len(payload)} bytes exceeds the frame limit of {ctx.max_frame}"
            )

    def new(self, payload: bytes) -> OutCall:
        """A call to queue on a peer's link, registered as pending."""
        item = OutCall(next(self._ids), bytes(payload), _new_future())
        self.pending[item.call_id] = item.fut
        return item

    async def wait(self, item: OutCall, timeout: float) -> bytes:
        """The reply to ``item``, or its CallError, or TimeoutError."""
        try:
            async with asyncio.timeout(timeout):
                return await item.fut
        finally:
            self.pending.pop(item.call_id, None)
            if item.home is not None:
                item.home.pop(item.call_id, None)

    async def call_address(self, address: str, payload: bytes, timeout: float) -> bytes:
        """Call whoever listens at ``address`` over a one-off CALLER connection."""
        self.check(payload)
        try:
            parse_address(address)
        except ValueError as e:
            raise CallError(str(e)) from None
        call_id = next(self._ids)
        fut = _new_future()
        task = asyncio.get_running_loop().create_task(
            self._call_once(address, bytes(payload), call_id, fut),
            name=f"liferaft-call-{self._ctx.node_id}->{address}",
        )
        self.pending[call_id] = fut
        self._oneoffs.add(task)
        task.add_done_callback(self._oneoffs.discard)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self.pending.pop(call_id, None)
            if fut.cancelled() or not fut.done():  # timed out or cancelled: hang up
                task.cancel()

    async def _call_once(
        self, address: str, payload: bytes, call_id: int, fut: asyncio.Future[bytes]
    ) -> None:
        """Dial ``address`` as a caller, make one call, settle ``fut``, hang up."""
        log = self._ctx.log
        writer: asyncio.StreamWriter | None = None
        try:
            host, port = parse_address(address)
            reader, writer = await self._dialer.connect(host, port)
            await self._dialer.greet(reader, writer, Kind.CALLER, "")
            writer.writelines(call_frame(call_id, payload))
            await writer.drain()
            try:
                kind, body = await read_frame(reader, self._ctx.max_frame)
            except asyncio.IncompleteReadError:
                raise ConnectionResetError("closed by the peer") from None
            if kind is not Kind.REPLY:
                raise FrameError(f"unexpected {kind.name} frame on a caller connection")
            cid, ok, data = parse_reply(body)
            if cid != call_id:
                raise FrameError(f"reply to call {cid}, but the call was {call_id}")
            settle(fut, ok, data)
        except (FrameError, *NET_ERRORS) as e:
            reason = str(e) if isinstance(e, FrameError) else why(e)
            log.info("call to %s failed: %s", address, reason)
            fail(fut, CallError(f"call to {address} failed: {reason}"))
        except Exception as e:
            log.exception("call to %s failed unexpectedly", address)
            fail(fut, CallError(f"call to {address} failed: {why(e)}"))
        finally:
            if writer is not None:
                await close_writer(writer)

    def close(self) -> list[asyncio.Task[Any]]:
        """Fail every pending call; cancel the one-off connections and
        return their tasks for the transport to wait on."""
        for fut in list(self.pending.values()):
            fail(fut, CallError("the transport is closed"))
        tasks = list(self._oneoffs)
        for t in tasks:
            t.cancel()
        return tasks


class CallServer:
    """The ``handle_call`` tasks this node runs for its callers."""

    def __init__(self, ctx: Context, is_member: Callable[[NodeId], bool]) -> None:
        self._ctx = ctx
        # is_member(node_id) -> bool: is it in the peer table (``known_peer``)?
        self._is_member = is_member
        self._serving: set[asyncio.Task[None]] = set()
        self.served = 0

    def on_call(self, conn: InboundConn, body: memoryview) -> None:
        """A CALL frame arrived on ``conn``: serve it in a task of its own."""
        call_id, payload = parse_call(body)
        if len(conn.calls) >= MAX_CALLS_PER_CONNECTION:
            self._ctx.log.warning("too many calls in flight from %s; refusing one", conn.label)
            conn.writer.writelines(
                reply_frame(call_id, False, b"CallError: too many calls in flight")
            )
            return
        task = asyncio.get_running_loop().create_task(
            self._serve(conn, call_id, bytes(payload)),
            name=f"liferaft-call-{conn.peer}->{self._ctx.node_id}",
        )
        conn.calls.add(task)
        self._serving.add(task)
        task.add_done_callback(conn.calls.discard)
        task.add_done_callback(self._serving.discard)
        if conn.on_idle is not None:
            task.add_done_callback(conn.on_idle)

    async def _serve(self, conn: InboundConn, call_id: int, payload: bytes) -> None:
        """Run ``handle_call`` and write its REPLY on the connection the call came in on."""
        ctx = self._ctx
        assert ctx.handler is not None
        ok = False
        try:
            if ctx.epoch.stale is not None:
                # Its history is not the cluster's: no join, no forwarded proposal.
                raise CallNotSentError(f"this node is stale: {ctx.epoch.stale}")
            result = await ctx.handler.handle_call(conn.peer, payload, self._is_member(conn.peer))
            if not isinstance(result, bytes | bytearray | memoryview):
                raise TypeError(f"handle_call returned {type(result).__name__}, not bytes")
            data: bytes | bytearray | memoryview = result
            ok = True
        except Exception as e:
            ctx.log.debug("call %d from %s raised %r", call_id, conn.label, e)
            data = f"{type(e).__name__}: {e}"[:MAX_ERROR_TEXT].encode("utf-8", "replace")
        if len(data) + REPLY_OVERHEAD > ctx.max_frame:
            ctx.log.error(
                "reply to a call from %s: %d bytes exceed max_frame", conn.label, len(data)
            )
            ok = False
            data = (
                f"CallError: a reply of {len(data)} bytes exceeds the frame limit of "
                f"{ctx.max_frame}"
            ).encode()
        if conn.writer.is_closing():
            return
        conn.writer.writelines(reply_frame(call_id, ok, data))
        self.served += 1
        with contextlib.suppress(*NET_ERRORS):
            await conn.writer.drain()

    def close(self) -> list[asyncio.Task[Any]]:
        """Cancel every call being served; return the tasks to wait on."""
        tasks = list(self._serving)
        for t in tasks:
            t.cancel()
        return tasks

    @property
    def serving(self) -> int:
        return len(self._serving)


def _new_future() -> asyncio.Future[bytes]:
    fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    return fut
