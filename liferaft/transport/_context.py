"""What the parts of one :class:`~liferaft.transport.tcp.TcpTransport` share.

The TCP transport is built from parts that each own one protocol
(docs/architecture.md, "Who owns what"): :mod:`.link` (outbound links),
:mod:`.inbound` (accepting and serving connections), :mod:`.snapshots`
(snapshot streams), :mod:`.calls` (calls both ways) and :mod:`.greeting`
(the handshake's frames).  They meet only here: a :class:`Context` holds
the node's identity and frame limit, the handler and loop once started, the
worker pool for snapshot I/O, and the three ways any part talks back to the
handler.  :class:`InboundConn` is the record of one accepted connection,
shared by the parts that serve it.  Nothing here imports a part, so the
parts import no circle.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from liferaft.core.messages import Message, NodeId

from ._frames import FrameError
from .base import TransportHandler, limit_reads
from .epoch import Epoch

# Errors that mean "this connection is unusable", as opposed to bugs.
NET_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError)
# A reason in a REFUSE, SNAP_ABORT or SNAP_RESULT frame is cut to this.
MAX_REASON = 1000
# Bytes a connection asks of its socket per read (see small_reads).  Under
# glibc's smallest mmap threshold, 128 KiB, with room for the bytes header.
READ_SIZE = 64 * 1024


class Context:
    """Identity, limits and handler plumbing of one TCP transport.

    ``handler``, ``loop`` and ``pool`` are None until
    :meth:`~liferaft.transport.tcp.TcpTransport.start`; ``closed`` turns
    True once, in ``close``, after which no handler method is called.
    """

    def __init__(
        self, node_id: NodeId, cluster_id: str, max_frame: int, log: logging.Logger
    ) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.max_frame = max_frame
        self.log = log
        self.handler: TransportHandler | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.closed = False
        # Messages handed to the handler (node-wide, for stats()).
        self.received = 0
        # The cluster epoch (TcpTransport sets its own); once stale, deaf and mute.
        self.epoch = Epoch()
        self._unreachable_pending: set[NodeId] = set()

    @property
    def running(self) -> bool:
        """Started and not closed: handler callbacks may be made."""
        return self.handler is not None and not self.closed

    def call_handler(self, fn: Callable[..., object], *args: Any) -> None:
        """A broken handler must not take the transport down with it."""
        try:
            fn(*args)
        except Exception:
            self.log.exception("transport handler %s raised", getattr(fn, "__name__", fn))

    def deliver(self, msg: Message) -> None:
        """Hand a validated incoming message to the handler, and count it;
        nothing once this node is stale (of a history the cluster left)."""
        assert self.handler is not None
        if self.epoch.stale is not None:
            return
        self.received += 1
        self.call_handler(self.handler.deliver, msg)

    def report_unreachable(self, peer: NodeId) -> None:
        """Tell the handler, once per loop iteration at most, never inside
        ``send`` (docs/transport.md, "Transport contract")."""
        if peer in self._unreachable_pending or self.loop is None:
            return
        self._unreachable_pending.add(peer)
        self.loop.call_soon(self._fire_unreachable, peer)

    def _fire_unreachable(self, peer: NodeId) -> None:
        self._unreachable_pending.discard(peer)
        if self.running:
            assert self.handler is not None
            self.call_handler(self.handler.unreachable, peer)

    def snapshot_status_soon(self, peer: NodeId, ok: bool) -> None:
        """Report a snapshot's outcome on the next loop iteration (never from
        inside ``send``); nothing once closed."""
        if self.running and self.loop is not None:
            assert self.handler is not None
            self.loop.call_soon(self.call_handler, self.handler.snapshot_status, peer, ok)


@dataclasses.dataclass(eq=False)
class InboundConn:
    """One accepted connection after its handshake: who is on it, where its
    replies go, and the calls it is being served."""

    peer: NodeId
    where: str
    writer: asyncio.StreamWriter
    task: asyncio.Task[Any]
    # A CALLER connection: calls only, from a node id that need not be a peer.
    caller: bool = False
    # handle_call tasks serving calls that came in on this connection.
    calls: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)
    # A caller connection's idle timer: re-armed when one of its calls ends.
    on_idle: Callable[[object], None] | None = None
    # Stops the frames parsed in the socket callback (framed.PeerProtocol.stop).
    stop_reading: Callable[[], None] | None = None

    def end(self) -> None:
        """Close this connection: nothing more is handled from now on, and
        its task (which closes the socket) is cancelled."""
        if self.stop_reading is not None:
            self.stop_reading()
        self.task.cancel()

    @property
    def label(self) -> str:
        return f"caller {self.peer}" if self.caller else self.peer

    def check_addressing(self, msg: Message, node_id: NodeId) -> None:
        """A message must come from the handshaken peer, to this node."""
        if msg.frm != self.peer or msg.to != node_id:
            raise FrameError(
                f"message {msg.frm!r} -> {msg.to!r} on the connection {self.peer!r} -> {node_id!r}"
            )


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close and wait (briefly) until the socket is really closed.

    Closing only schedules the socket's release on the loop; waiting for it
    keeps a transport that is closed and then dropped with its loop from
    leaking sockets.  A socket that has not closed within the wait is
    aborted, its unsent bytes dropped: closing waits for them to be sent,
    and a peer that reads nothing (frozen, stopped) would keep the socket
    open for as long as it stays so.  Safe to call while the calling task is
    being cancelled (a cancellation *during* the wait propagates, after the
    abort).
    """
    writer.close()
    closed = False
    try:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
                closed = True
    finally:
        if not closed:
            writer.transport.abort()


def small_reads(writer: asyncio.StreamWriter) -> None:
    """Make the connection read at most :data:`READ_SIZE` bytes at a time.

    asyncio's selector transport reads with ``sock.recv(256 KiB)`` (its TLS
    protocol with ``SSLObject.read(256 KiB)``): a fresh bytes object of that
    size per read, cut down to what arrived.  glibc serves a request that
    large (over its 128 KiB mmap threshold) from a free heap chunk if one
    happens to exist, and otherwise maps fresh pages and unmaps them again:
    an mmap, about two page faults and a munmap for every message read.
    Whether such a chunk exists depends on everything the process allocated
    before, so an unrelated refactor can flip it: after issue 13 none was
    left, and each write at 100/s cost 0.1 ms more (docs/transport.md,
    "Reads").  Below the threshold every read comes from the heap.  uvloop
    reads into a buffer of its own and has no such attribute: left alone.
    """
    limit_reads(writer.transport, READ_SIZE)


def why(e: BaseException) -> str:
    """A short reason for a log line."""
    if isinstance(e, asyncio.IncompleteReadError):
        return "connection closed" if not e.partial else "connection closed inside a frame"
    if isinstance(e, TimeoutError):
        return "timed out"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
