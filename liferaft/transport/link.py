"""The outbound side of one peer: :class:`PeerLink`.

``send`` appends to a bounded deque and wakes the link's writer task; it
never blocks.  The writer takes everything queued (up to a batch limit),
encodes each message into a frame, writes them all and then awaits one
``drain``: many AppendEntries ride on one system call and one wait, which is
the pipelining.  While the writer is idle (nothing queued, no drain
pending) ``send`` writes straight to the socket instead (the direct-write
handoff), which saves a loop iteration per message on the commit path.

A link is *connecting* (queue), *connected* (queue and write) or *down*
(drop and report unreachable).  A failed dial or a lost connection marks it
down, drops what is queued, reports the peer unreachable and retries after
an exponential backoff with jitter drawn from a ``random.Random``.

The link owns its tasks: the dial-and-pump task, and per connection a
writer, a reader of the listener's answers (snapshot results and call
replies) and its :class:`~.snapshots.SnapshotSender`'s stream.
:meth:`PeerLink.close` ends them all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import random
import ssl
from collections import deque
from typing import Any

from liferaft.codec import EncodeError, encode_message
from liferaft.core.messages import InstallSnapshot, Message, NodeId

from ._context import NET_ERRORS, Context, close_writer, why
from ._frames import (
    HEADER,
    FrameError,
    Kind,
    SnapResult,
    call_frame,
    parse,
    parse_reply,
    read_frame,
)
from .base import CallError, CallNotSentError, format_address, parse_address
from .calls import OutCall, fail, settle
from .greeting import Dialer, Streams
from .snapshots import SnapshotSender

# send() writes straight to the socket while less than this is buffered
# (asyncio's default high-water mark); past it, the write loop drains.
DIRECT_LIMIT = 64 * 1024


class LinkState(enum.Enum):
    CONNECTING = "connecting"  # before the first dial: queue
    CONNECTED = "connected"  # queue and write
    DOWN = "down"  # the last dial failed or the connection was lost: drop


@dataclasses.dataclass(frozen=True)
class LinkSettings:
    """How every link of one transport behaves (TcpTransport's arguments)."""

    queue_size: int
    max_batch: int
    direct_writes: bool
    snapshot_chunk: int
    min_backoff: float
    max_backoff: float
    rng: random.Random

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random."""
        ceiling = min(self.max_backoff, self.min_backoff * float(1 << min(attempt - 1, 30)))
        return ceiling * (0.5 + 0.5 * self.rng.random())


class PeerLink:
    """Queue, connection, tasks and counters of the link to one peer."""

    def __init__(
        self,
        ctx: Context,
        dialer: Dialer,
        settings: LinkSettings,
        peer: NodeId,
        address: str,
    ) -> None:
        self.peer = peer
        self.address = address
        # The "ip:port" the last connection reached ("" before the first).
        self.remote = ""
        self._ctx = ctx
        self._dialer = dialer
        self._settings = settings
        self.state = LinkState.CONNECTING
        self.queue: deque[Message | OutCall] = deque()
        # Calls written on the current connection, awaiting their REPLY.
        self.calls: dict[int, asyncio.Future[bytes]] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        # The connection's writer while its write loop is idle (nothing
        # queued, no drain pending): send() may then write at once.
        self.direct: asyncio.StreamWriter | None = None
        self.snapshots = SnapshotSender(ctx, peer, settings.snapshot_chunk, self._dropped)
        self.ever_connected = False
        self.sent = 0
        self.dropped = 0
        self.reconnects = 0
        self.dial_failures = 0
        self.calls_sent = 0

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start dialing (once the transport runs)."""
        if self._ctx.running:
            self.task = asyncio.get_running_loop().create_task(
                self._run(), name=f"liferaft-link-{self._ctx.node_id}->{self.peer}"
            )

    def stop(self, why: str) -> asyncio.Task[None] | None:
        """Cancel the link's task and drop what is queued; the link is down.
        Returns the cancelled task (it ends its connection's tasks as it
        unwinds), for a caller that can wait."""
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
        self.state = LinkState.DOWN
        self._drop_queue(why)
        return task

    async def close(self) -> None:
        """Stop the link and wait until its tasks have ended."""
        task = self.stop("the transport is closed")
        if task is not None:
            await asyncio.wait([task], timeout=5.0)

    def readdress(self, address: str) -> None:
        """The peer moved: hang up and dial the new address."""
        self.stop("the peer table changed")
        self.address = address
        self.state = LinkState.CONNECTING
        self.start()

    # -- sending -----------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        """Write, queue or drop ``msg`` (see the module docstring)."""
        if self.state is LinkState.DOWN or len(self.queue) >= self._settings.queue_size:
            self._dropped(msg)
            self._ctx.report_unreachable(self.peer)
            return
        w = self.direct
        if (
            w is not None
            and not isinstance(msg, InstallSnapshot)
            and not w.transport.is_closing()
            and w.transport.get_write_buffer_size() < DIRECT_LIMIT
        ):
            # The fast path: no hop through the write loop's task, which cost
            # a loop iteration per message and peer on the commit path.
            frame = self._frame(msg)
            if frame is not None:
                try:
                    w.writelines(frame)
                except (RuntimeError, OSError) as e:
                    # The connection died under us (uvloop raises where
                    # asyncio only logs).  A lost message is Raft's daily
                    # bread; the caller must never see this.  Found by the
                    # chaos soak: it used to kill the node task.
                    self._ctx.log.debug("direct write to %s failed: %s", self.peer, e)
                    self.direct = None
                    self._dropped(msg)
                    self._ctx.report_unreachable(self.peer)
                    return
                self.sent += 1
            return
        self.queue.append(msg)
        self.wake.set()

    def check_call(self) -> None:
        """:class:`CallNotSentError` unless the link can take a call now."""
        if self.state is LinkState.DOWN:
            raise CallNotSentError(f"peer {self.peer} is unreachable: its connection is down")
        if len(self.queue) >= self._settings.queue_size:
            raise CallNotSentError(f"the queue to peer {self.peer} is full")

    def enqueue_call(self, item: OutCall) -> None:
        """Queue a call (after :meth:`check_call`)."""
        self.queue.append(item)
        self.wake.set()

    def _frame(self, msg: Message) -> list[bytes] | None:
        """Header and payload of ``msg``, or None (logged, counted) if it
        cannot be sent."""
        try:
            payload = encode_message(msg)
        except EncodeError as e:
            self._ctx.log.error("cannot encode %s to %s: %s", type(msg).__name__, self.peer, e)
            self.dropped += 1
            return None
        if len(payload) >= self._ctx.max_frame:
            self._ctx.log.error(
                "dropped %s to %s: %d bytes exceed max_frame",
                type(msg).__name__,
                self.peer,
                len(payload),
            )
            self.dropped += 1
            return None
        return [HEADER.pack(len(payload) + 1, Kind.MSG), payload]

    def _dropped(self, msg: Message) -> None:
        """Count a dropped message.  A dropped InstallSnapshot still gets its
        ``snapshot_status(peer, False)``: the leader waits for one (etcd's rule)."""
        self.dropped += 1
        if isinstance(msg, InstallSnapshot):
            self.snapshots.failed += 1
            self._ctx.snapshot_status_soon(self.peer, False)

    def _drop_queue(self, why: str) -> None:
        """Drop every queued message; fail every queued call with ``why``."""
        for item in self.queue:
            if isinstance(item, OutCall):
                fail(item.fut, CallNotSentError(f"peer {self.peer} is unreachable: {why}"))
            else:
                self._dropped(item)
        self.queue.clear()

    def _down(self, why: str) -> None:
        self.state = LinkState.DOWN
        self._drop_queue(why)
        self._ctx.report_unreachable(self.peer)

    # -- the link's task ---------------------------------------------------------------

    async def _run(self) -> None:
        """Dial, pump, and redial with backoff, until cancelled."""
        me = asyncio.current_task()
        log = self._ctx.log
        attempt = 0
        # Belt and braces: a replaced or closed link stops even if a
        # cancellation got lost somewhere below.
        while not self._ctx.closed and self.task is me:
            try:
                conn = await self._dial()
                if conn is None:
                    self.dial_failures += 1
                    self._down("it cannot be dialed")
                    attempt += 1
                    await asyncio.sleep(self._settings.backoff(attempt))
                    continue
                reader, writer = conn
                if self.ever_connected:
                    self.reconnects += 1
                self.ever_connected = True
                self.state = LinkState.CONNECTED
                attempt = 1
                # The IP the name resolved to this time (docs/transport.md,
                # "Addresses and DNS"): names are resolved on every dial.
                where = writer.get_extra_info("peername")
                self.remote = format_address(*where[:2]) if where else ""
                log.info("connected to peer %s at %s (%s)", self.peer, self.address, self.remote)
                try:
                    reason = await self._pump(reader, writer)
                finally:
                    # A cancelled task of a replaced link must not touch the new one.
                    if not self._ctx.closed and self.task is me:
                        self._down("connection lost")
                    await close_writer(writer)
                log.info("connection to peer %s lost: %s", self.peer, reason)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("link to peer %s failed unexpectedly", self.peer)
                self._down("its link failed")
            await asyncio.sleep(self._settings.backoff(attempt))

    async def _dial(self) -> Streams | None:
        """Connect and handshake; None (and a log line) if either fails."""
        log = self._ctx.log
        host, port = parse_address(self.address)
        try:
            reader, writer = await self._dialer.connect(host, port)
        except ssl.SSLError as e:
            # A certificate problem will not go away by retrying: say so loudly.
            log.warning(
                "TLS handshake with peer %s at %s failed: %s", self.peer, self.address, why(e)
            )
            return None
        except NET_ERRORS as e:
            log.debug("cannot connect to peer %s at %s: %r", self.peer, self.address, e)
            return None
        try:
            await self._dialer.greet(reader, writer, Kind.HELLO, self.peer)
        except (FrameError, *NET_ERRORS) as e:
            log.warning("handshake with peer %s at %s failed: %s", self.peer, self.address, why(e))
            await close_writer(writer)
            return None
        except BaseException:  # cancelled mid-handshake: do not leak the socket
            await close_writer(writer)
            raise
        return reader, writer

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """Run one connection until it breaks; returns why it ended."""
        loop = asyncio.get_running_loop()
        # Calls written on this connection and waiting for their REPLY.
        calls: dict[int, asyncio.Future[bytes]] = {}
        self.calls = calls
        if self._settings.direct_writes and not self.queue:
            # Connected from this moment (the state says so already): a send
            # before the write loop's first turn writes at once rather than
            # queueing behind nothing (and dropping past queue_size).
            self.direct = writer
        results = loop.create_task(self._read_answers(reader, calls))
        writes = loop.create_task(self._write_loop(writer, calls))
        reason = "closed"
        try:
            done, _ = await asyncio.wait({results, writes}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc is not None:
                    if not isinstance(exc, (FrameError, *NET_ERRORS)):
                        self._ctx.log.error("peer %s link failed", self.peer, exc_info=exc)
                    reason = why(exc)
                    break
            return reason
        finally:
            for fut in list(calls.values()):
                fail(fut, CallError(f"connection to peer {self.peer} lost: {reason}"))
            calls.clear()
            if self.calls is calls:
                self.calls = {}
            for t in (results, writes):
                t.cancel()
            await asyncio.gather(results, writes, return_exceptions=True)
            await self.snapshots.end()

    async def _write_loop(
        self, writer: asyncio.StreamWriter, calls: dict[int, asyncio.Future[bytes]]
    ) -> None:
        """Drain the queue in batches: write many frames, then one drain."""
        queue = self.queue
        direct = self._settings.direct_writes
        try:
            while True:
                if not queue:
                    self.wake.clear()
                    if direct:
                        self.direct = writer
                    try:
                        await self.wake.wait()
                    finally:
                        self.direct = None
                    continue
                await self._write_batch(writer, calls)
        finally:
            self.direct = None

    async def _write_batch(
        self, writer: asyncio.StreamWriter, calls: dict[int, asyncio.Future[bytes]]
    ) -> None:
        queue = self.queue
        if self._ctx.epoch.stale is not None:
            # Queued before this node turned stale (while the link was still
            # dialing): nothing leaves a stale node (docs/transport.md, "Epochs").
            self._drop_queue("this node is stale")
            return
        parts: list[bytes | memoryview] = []
        n = msgs = 0
        max_batch = self._settings.max_batch
        while queue and n < max_batch:
            msg = queue.popleft()
            if isinstance(msg, OutCall):
                if msg.fut.done():  # timed out or cancelled while queued
                    continue
                calls[msg.call_id] = msg.fut
                msg.home = calls
                parts.extend(call_frame(msg.call_id, msg.payload))
                self.calls_sent += 1
                n += 1
                continue
            if isinstance(msg, InstallSnapshot):
                self.snapshots.offer(msg, writer)
                continue
            frame = self._frame(msg)
            if frame is None:
                continue
            parts.extend(frame)
            n += 1
            msgs += 1
        if parts:
            writer.writelines(parts)
            self.sent += msgs
            await writer.drain()

    async def _read_answers(
        self, reader: asyncio.StreamReader, calls: dict[int, asyncio.Future[bytes]]
    ) -> None:
        """The only frames a listener sends back after the handshake: snapshot
        results and call replies."""
        while True:
            try:
                kind, body = await read_frame(reader, self._ctx.max_frame)
            except asyncio.IncompleteReadError:
                raise ConnectionResetError("closed by the peer") from None
            if kind is Kind.REPLY:
                call_id, ok, data = parse_reply(body)
                waiting = calls.pop(call_id, None)
                if waiting is None or waiting.done():
                    self._ctx.log.debug("late reply to call %d from %s ignored", call_id, self.peer)
                else:
                    settle(waiting, ok, data)
                continue
            if kind is not Kind.SNAP_RESULT:
                raise FrameError(f"unexpected {kind.name} frame from the listener")
            self.snapshots.on_result(parse(SnapResult, body))

    # -- introspection -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "remote": self.remote,
            "state": self.state.value,
            "connected": self.state is LinkState.CONNECTED,
            "queued": len(self.queue),
            "sent": self.sent,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "dial_failures": self.dial_failures,
            "snapshots_sent": self.snapshots.sent,
            "snapshots_failed": self.snapshots.failed,
            "streaming": self.snapshots.task is not None,
            "snapshot_waiting": self.snapshots.waiting is not None,
            "calls_sent": self.calls_sent,
            "calls_waiting": len(self.calls),
        }
