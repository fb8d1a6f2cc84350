"""asyncio TCP transport: length-prefixed frames, optional TLS/mTLS.

Theory of operation
-------------------
Every node listens on one address and dials every peer once: a connection
carries traffic from the dialer to the listener, so a pair of nodes shares
two connections, one per direction (etcd's rafthttp does the same with its
stream pair).  Frames are ``length u32 | kind u8 | body`` (see
:mod:`._frames` and docs/transport.md).

Outbound, per peer (:class:`_Link`)
    ``send`` appends to a bounded deque and wakes the peer's writer task; it
    never blocks.  The writer takes everything queued (up to a batch limit),
    encodes each message into a frame, writes them all and then awaits one
    ``drain``: many AppendEntries ride on one system call and one wait, which
    is the pipelining.  A link is *connecting* (queue), *connected* (queue and
    write) or *down* (drop and report unreachable).  A failed dial or a lost
    connection marks it down, drops what is queued, reports the peer
    unreachable and retries after an exponential backoff with jitter drawn
    from a ``random.Random``.
Snapshots
    An InstallSnapshot is streamed by its own task on the peer's connection:
    SNAP_BEGIN (the message with empty data), SNAP_CHUNKs pulled one at a time
    from ``handler.snapshot_source`` in a worker thread, then SNAP_END with
    the byte count and CRC-32.  The writer task keeps sending other messages
    in between, so a large snapshot never starves heartbeats.  The receiver
    answers SNAP_RESULT once its sink committed (or failed), and only that
    answer turns into ``snapshot_status(peer, True)``; a lost connection
    turns into ``False``.  One snapshot per peer is in flight; another
    InstallSnapshot to the same peer meanwhile is dropped.
Calls
    A request/response side channel beside the Raft traffic.  ``call`` puts
    a CALL frame (call id, payload) into the peer's queue like a message, but
    never drops it silently: a full queue, a down peer or a lost connection
    fail it with :class:`CallError`.  The listener runs
    ``handler.handle_call`` as a task per call and writes a REPLY frame (call
    id, ok flag, payload or error text) back on the connection the call came
    in on; the dialer matches replies to waiting futures by call id, so many
    calls are in flight at once.  ``call_address`` dials a one-off connection
    with a CALLER handshake ("I am X, a caller, not a peer"): the listener
    accepts it from any node id of the same cluster that passes the same
    proof and TLS checks as a peer, serves only calls on it (a Raft frame
    there closes it with a WARNING) and closes it once idle.
Inbound, per connection
    At most ``max_inbound`` at once (the oldest unproven one gives way to a
    newcomer).  A handshake (HELLO or CALLER ->
    CHALLENGE -> PROOF -> WELCOME or REFUSE; its rules are the pure
    functions of :mod:`.handshake`) comes first, within a timeout, in frames
    of at most 4 KiB: nothing more is read from a dialer that has not
    proven the cluster secret (or, with mTLS, its node id).  Then frames
    are read one by one and decoded by :mod:`liferaft.codec`.  A frame that
    is oversized, truncated, unknown or fails validation, or a message whose
    sender or receiver is not the handshaken pair, closes that connection
    with a logged reason; the node keeps serving everyone else.

Logging goes to the ``liferaft.transport`` logger (or the one passed in):
WARNING for refusals (at most one per 10 s: strangers can cause them at
will) and protocol violations, INFO for connections made and
lost, DEBUG for failed dials (which repeat while a peer is down).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import enum
import itertools
import logging
import random
import secrets
import ssl
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from liferaft.codec import DecodeError, EncodeError, decode_message, encode_message
from liferaft.core.messages import InstallSnapshot, Message, NodeId

from . import handshake
from ._frames import (
    CALL_OVERHEAD,
    DEFAULT_MAX_FRAME,
    HEADER,
    MAGIC,
    MAX_HANDSHAKE_FRAME,
    PROTOCOL_VERSION,
    REPLY_OVERHEAD,
    SNAPSHOT_CHUNK,
    Challenge,
    FrameError,
    Hello,
    HelloHead,
    Kind,
    Proof,
    Reason,
    SnapEnd,
    SnapResult,
    Welcome,
    call_frame,
    control,
    frame,
    parse,
    parse_call,
    parse_reply,
    read_frame,
    reply_frame,
)
from .base import (
    CallError,
    CallNotSent,
    SnapshotSink,
    TransportHandler,
    check_tcp_address,
    format_address,
    parse_address,
)

__all__ = ["TcpTransport"]

_LOG = logging.getLogger("liferaft.transport")
_T = TypeVar("_T")

# Errors that mean "this connection is unusable", as opposed to bugs.
_NET_ERRORS = (OSError, EOFError, asyncio.IncompleteReadError, TimeoutError)
# Over-capacity connections are logged at most this often (seconds): a
# flood must not flood the log too.
_OVER_CAPACITY_LOG_EVERY = 10.0
# Refused handshakes likewise: one WARNING at most this often (seconds),
# the others at DEBUG and counted, since anyone can cause one per connection.
_REFUSAL_LOG_EVERY = 10.0
_READ_LIMIT = 256 * 1024
# Calls served at once on one inbound connection; more are answered with an error.
_MAX_CALLS_PER_CONNECTION = 1024
# send() writes straight to the socket while less than this is buffered
# (asyncio's default high-water mark); past it, the write loop drains.
_DIRECT_LIMIT = 64 * 1024
# Error text in a REPLY is cut to this many characters.
_MAX_ERROR_TEXT = 4000


class _LinkState(enum.Enum):
    CONNECTING = "connecting"  # before the first dial: queue
    CONNECTED = "connected"  # queue and write
    DOWN = "down"  # the last dial failed or the connection was lost: drop


class _Serial:
    """Runs blocking calls of one snapshot source or sink in a worker thread,
    one at a time and in order, even across a cancellation of the awaiting task."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self._pool = pool
        self._last: concurrent.futures.Future[Any] | None = None

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        cf = self._pool.submit(fn, *args)
        self._last = cf
        return await asyncio.wrap_future(cf)

    def then(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` (errors logged) after the call in flight, or now if none."""

        def run(_: object = None) -> None:
            try:
                fn()
            except Exception:
                _LOG.exception("snapshot cleanup failed")

        if self._last is not None and not self._last.done():
            self._last.add_done_callback(run)
        else:
            run()


@dataclasses.dataclass(eq=False)
class _OutCall:
    """A call to a peer: queued like a message, then awaiting its REPLY."""

    call_id: int
    payload: bytes
    fut: asyncio.Future[bytes]
    # The waiting-for-a-reply table of the connection it was written on.
    home: dict[int, asyncio.Future[bytes]] | None = None


class _Link:
    """The outbound side of one peer: queue, connection state and counters."""

    def __init__(self, peer: NodeId, address: str) -> None:
        self.peer = peer
        self.address = address
        self.state = _LinkState.CONNECTING
        self.queue: deque[Message | _OutCall] = deque()
        # Calls written on the current connection, awaiting their REPLY.
        self.calls: dict[int, asyncio.Future[bytes]] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.stream: asyncio.Task[None] | None = None
        # The connection's writer while its write loop is idle (nothing
        # queued, no drain pending): send() may then write at once.
        self.direct: asyncio.StreamWriter | None = None
        self.snap_result: asyncio.Future[tuple[bool, str]] | None = None
        # An InstallSnapshot waiting for the stream in flight (the newest wins).
        self.pending_snapshot: InstallSnapshot | None = None
        self.ever_connected = False
        self.sent = 0
        self.dropped = 0
        self.reconnects = 0
        self.dial_failures = 0
        self.snapshots_sent = 0
        self.snapshots_failed = 0
        self.calls_sent = 0

    def stats(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "state": self.state.value,
            "connected": self.state is _LinkState.CONNECTED,
            "queued": len(self.queue),
            "sent": self.sent,
            "dropped": self.dropped,
            "reconnects": self.reconnects,
            "dial_failures": self.dial_failures,
            "snapshots_sent": self.snapshots_sent,
            "snapshots_failed": self.snapshots_failed,
            "streaming": self.stream is not None,
            "snapshot_waiting": self.pending_snapshot is not None,
            "calls_sent": self.calls_sent,
            "calls_waiting": len(self.calls),
        }


@dataclasses.dataclass(eq=False)
class _InStream:
    """A snapshot being received on one inbound connection."""

    header: InstallSnapshot
    sink: SnapshotSink | None  # None once it failed (the rest is discarded)
    serial: _Serial
    total: int = 0
    crc: int = 0


@dataclasses.dataclass(eq=False)
class _Inbound:
    peer: NodeId
    where: str
    writer: asyncio.StreamWriter
    task: asyncio.Task[Any]
    stream: _InStream | None = None
    # A CALLER connection: calls only, from a node id that need not be a peer.
    caller: bool = False
    # handle_call tasks serving calls that came in on this connection.
    calls: set[asyncio.Task[None]] = dataclasses.field(default_factory=set)
    # A caller connection's idle timer: re-armed when one of its calls ends.
    on_idle: Callable[[object], None] | None = None

    @property
    def label(self) -> str:
        return f"caller {self.peer}" if self.caller else self.peer


class TcpTransport:
    """The production :class:`~liferaft.transport.base.Transport`: asyncio TCP.

    ``node_id`` and ``cluster_id`` go into the handshake; a peer must know
    both.  ``listen_addr`` is ``"host:port"``; port 0 picks a free port and
    :attr:`address` tells which after :meth:`start`.  ``ssl_server`` turns on
    TLS for accepted connections (set ``verify_mode = CERT_REQUIRED`` on it
    for mutual TLS) and ``ssl_client`` for dialed ones; the server's
    certificate is checked against the host part of the peer's address.

    ``max_frame`` bounds every frame (and so every message, call and reply)
    in both directions; a message that would exceed it is dropped at the
    sender, a call payload raises :class:`CallError`.  Use one value across
    a cluster: a receiver closes a connection that sends it a larger frame.
    ``queue_size`` bounds each peer's outbound queue.  With
    ``direct_writes`` (the default) a message to an idle, connected peer is
    written to its socket at once and queues only while the socket is backed
    up (over 64 KiB buffered), so memory stays bounded either way.  ``rng``
    draws the reconnect jitter; pass a seeded one for reproducible timing.

    Who may connect (docs/transport.md, "Handshake" and "Limits"):
    ``peer_secret`` is the cluster secret every member holds; with it, a
    dialer must prove it holds the same one (HMAC challenge-response, both
    ways) before anything but the handshake is read from it.  With mutual
    TLS (``ssl_server.verify_mode == CERT_REQUIRED``) the certificate each
    side presents must also name the node id it claims.  With neither, the
    handshake authenticates nobody: keep such a node on loopback.  At most
    ``max_inbound`` connections are open at once (one more closes the
    oldest that is still in its handshake, or itself if none is; counted);
    the handshake must complete within
    ``handshake_timeout``; a caller connection with no call running and no
    frame arriving for ``caller_idle_timeout`` seconds is closed.
    """

    def __init__(
        self,
        node_id: NodeId,
        cluster_id: str,
        listen_addr: str,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        queue_size: int = 4096,
        logger: logging.Logger | None = None,
        *,
        rng: random.Random | None = None,
        snapshot_chunk: int = SNAPSHOT_CHUNK,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
        connect_timeout: float = 5.0,
        handshake_timeout: float = 5.0,
        max_batch: int = 512,
        direct_writes: bool = True,
        peer_secret: bytes | None = None,
        max_inbound: int = 128,
        caller_idle_timeout: float = 10.0,
    ) -> None:
        if not node_id:
            raise ValueError("node_id must not be empty")
        if max_frame < 1024:
            raise ValueError("max_frame must be at least 1024 bytes")
        if queue_size < 1 or max_batch < 1 or snapshot_chunk < 1:
            raise ValueError("queue_size, max_batch and snapshot_chunk must be positive")
        if not 0 < min_backoff <= max_backoff:
            raise ValueError("need 0 < min_backoff <= max_backoff")
        if max_inbound < 1 or caller_idle_timeout <= 0 or handshake_timeout <= 0:
            raise ValueError("max_inbound and the timeouts must be positive")
        if peer_secret is not None and not peer_secret:
            raise ValueError("peer_secret must not be empty (None turns it off)")
        self.node_id = node_id
        self.cluster_id = cluster_id
        self._listen = parse_address(listen_addr)
        self.address = listen_addr
        self._ssl_server = ssl_server
        self._ssl_client = ssl_client
        self._max_frame = max_frame
        self._queue_size = queue_size
        self._direct_writes = direct_writes
        self._log = logger or _LOG
        self._rng = rng or random.Random()
        # A chunk frame carries one kind byte besides the chunk.
        self._chunk = min(snapshot_chunk, max_frame - 1)
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._connect_timeout = connect_timeout
        self._handshake_timeout = handshake_timeout
        self._max_batch = max_batch
        self._secret = peer_secret
        self._max_inbound = max_inbound
        self._caller_idle_timeout = caller_idle_timeout
        # Mutual TLS: certificates name node ids, checked both ways.
        self._cert_ids = ssl_server is not None and ssl_server.verify_mode == ssl.CERT_REQUIRED

        self._handler: TransportHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._links: dict[NodeId, _Link] = {}
        self._inbound: set[_Inbound] = set()
        # Connections still in their handshake, oldest first (a dict keeps
        # insertion order): the oldest is the first to give way at the cap.
        self._accepting: dict[asyncio.Task[Any], None] = {}
        self._unreachable_pending: set[NodeId] = set()
        # Every call and call_address waiting for its reply, by call id.
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._call_ids = itertools.count(1)
        self._oneoffs: set[asyncio.Task[None]] = set()  # call_address connections
        self._serving: set[asyncio.Task[None]] = set()  # handle_call tasks
        self._calls_served = 0
        self._closed = False
        # Node-wide counters.
        self._received = 0
        self._refused = 0
        self._bad_frames = 0
        self._unknown_dropped = 0
        self._over_capacity = 0
        self._over_capacity_logged = -_OVER_CAPACITY_LOG_EVERY
        self._idle_closed = 0
        self._refusal_logged = -_REFUSAL_LOG_EVERY
        self._refusals_unlogged = 0

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, handler: TransportHandler) -> None:
        """Listen on ``listen_addr`` and start dialing every known peer."""
        if self._handler is not None:
            raise RuntimeError("transport already started")
        if self._closed:
            raise RuntimeError("transport is closed")
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix=f"liferaft-transport-{self.node_id}"
        )
        host, port = self._listen
        self._server = await asyncio.start_server(
            self._accept,
            host,
            port,
            ssl=self._ssl_server,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_server else None,
            limit=_READ_LIMIT,
        )
        sockname = self._server.sockets[0].getsockname()
        self.address = format_address(sockname[0], sockname[1])
        self._log.info("node %s listening on %s", self.node_id, self.address)
        for link in self._links.values():
            self._start_link(link)

    async def close(self) -> None:
        """Stop listening, close every connection and cancel every task.

        Every pending call fails with :class:`CallError`."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for fut in list(self._pending.values()):
            _fail(fut, CallError("the transport is closed"))
        tasks: list[asyncio.Task[Any]] = []
        for t in [*self._oneoffs, *self._serving]:
            t.cancel()
            tasks.append(t)
        for link in self._links.values():
            if link.task is not None:
                link.task.cancel()
                tasks.append(link.task)
        for conn in list(self._inbound):
            conn.task.cancel()
            tasks.append(conn.task)
        for t in list(self._accepting):
            t.cancel()
            tasks.append(t)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            if pending:  # never expected: every task honours cancellation
                self._log.error("%d transport tasks ignored cancellation", len(pending))
        if self._server is not None:
            await self._server.wait_closed()
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    # -- peers -----------------------------------------------------------------------

    def check_address(self, address: str) -> None:
        """Raise ``ValueError`` unless ``address`` is a usable "host:port"."""
        check_tcp_address(address)

    def set_peers(self, peers: Mapping[NodeId, str]) -> None:
        """Replace the peer table (id -> "host:port"); our own id is ignored.

        New peers are dialed, removed ones disconnected (both directions), and
        a peer whose address changed is redialed.  Raises ``ValueError`` for a
        malformed address, before changing anything.
        """
        table = {pid: addr for pid, addr in peers.items() if pid != self.node_id}
        for addr in table.values():
            check_tcp_address(addr)
        for pid in list(self._links):
            if pid not in table:
                self._stop_link(self._links.pop(pid))
                for conn in list(self._inbound):
                    if conn.peer == pid and not conn.caller:
                        conn.task.cancel()
        for pid, addr in table.items():
            link = self._links.get(pid)
            if link is None:
                link = self._links[pid] = _Link(pid, addr)
                if self._handler is not None and not self._closed:
                    self._start_link(link)
            elif link.address != addr:
                self._stop_link(link)
                link.address = addr
                link.state = _LinkState.CONNECTING
                if self._handler is not None and not self._closed:
                    self._start_link(link)

    def _start_link(self, link: _Link) -> None:
        link.task = asyncio.get_running_loop().create_task(
            self._run_link(link), name=f"liferaft-link-{self.node_id}->{link.peer}"
        )

    def _stop_link(self, link: _Link) -> None:
        if link.task is not None:
            link.task.cancel()
            link.task = None
        link.state = _LinkState.DOWN
        self._drop_queue(link, "the peer table changed")

    # -- sending ---------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.to``; drop and count it if that cannot be done."""
        link = self._links.get(msg.to)
        if link is None or self._closed or self._handler is None:
            self._unknown_dropped += 1
            if not self._closed and self._handler is not None:
                self._log.debug("dropped %s to unknown peer %r", type(msg).__name__, msg.to)
                self._report_unreachable(msg.to)
                if isinstance(msg, InstallSnapshot):
                    self._snapshot_failed_soon(msg.to)
            return
        if link.state is _LinkState.DOWN or len(link.queue) >= self._queue_size:
            self._dropped(link, msg)
            self._report_unreachable(link.peer)
            return
        w = link.direct
        if (
            w is not None
            and not isinstance(msg, InstallSnapshot)
            and not w.transport.is_closing()
            and w.transport.get_write_buffer_size() < _DIRECT_LIMIT
        ):
            # The fast path: no hop through the write loop's task, which cost
            # a loop iteration per message and peer on the commit path.
            frame = self._frame(link, msg)
            if frame is not None:
                try:
                    w.writelines(frame)
                except (RuntimeError, OSError) as e:
                    # The connection died under us (uvloop raises where
                    # asyncio only logs).  A lost message is Raft's daily
                    # bread; the caller must never see this.  Found by the
                    # chaos soak: it used to kill the node task.
                    self._log.debug("direct write to %s failed: %s", link.peer, e)
                    link.direct = None
                    self._dropped(link, msg)
                    self._report_unreachable(link.peer)
                    return
                link.sent += 1
            return
        link.queue.append(msg)
        link.wake.set()

    def _frame(self, link: _Link, msg: Message) -> list[bytes] | None:
        """Header and payload of ``msg``, or None (logged, counted) if it
        cannot be sent."""
        try:
            payload = encode_message(msg)
        except EncodeError as e:
            self._log.error("cannot encode %s to %s: %s", type(msg).__name__, link.peer, e)
            link.dropped += 1
            return None
        if len(payload) >= self._max_frame:
            self._log.error(
                "dropped %s to %s: %d bytes exceed max_frame",
                type(msg).__name__,
                link.peer,
                len(payload),
            )
            link.dropped += 1
            return None
        return [HEADER.pack(len(payload) + 1, Kind.MSG), payload]

    # -- calls -------------------------------------------------------------------------

    def _check_call(self, payload: bytes) -> None:
        if self._closed:
            raise CallNotSent("the transport is closed")
        if self._handler is None:
            raise CallNotSent("the transport is not started")
        if len(payload) + CALL_OVERHEAD > self._max_frame:
            raise CallError(
                f"a call payload of {len(payload)} bytes exceeds the frame limit of "
                f"{self._max_frame}"
            )

    async def call(self, peer: NodeId, payload: bytes, timeout: float) -> bytes:
        """Send ``payload`` to ``peer`` on its connection; return the reply.

        Raises :class:`CallError` or ``TimeoutError`` (see
        :meth:`~liferaft.transport.base.Transport.call`).  A peer that is
        still being dialed for the first time is waited for; one whose
        connection is down fails at once.
        """
        self._check_call(payload)
        link = self._links.get(peer)
        if link is None:
            raise CallNotSent(f"unknown peer {peer!r}")
        if link.state is _LinkState.DOWN:
            raise CallNotSent(f"peer {peer} is unreachable: its connection is down")
        if len(link.queue) >= self._queue_size:
            raise CallNotSent(f"the queue to peer {peer} is full")
        item = _OutCall(next(self._call_ids), bytes(payload), self._new_future())
        self._pending[item.call_id] = item.fut
        link.queue.append(item)
        link.wake.set()
        try:
            async with asyncio.timeout(timeout):
                return await item.fut
        finally:
            self._pending.pop(item.call_id, None)
            if item.home is not None:
                item.home.pop(item.call_id, None)

    async def call_address(self, address: str, payload: bytes, timeout: float) -> bytes:
        """Call whoever listens at ``address`` over a one-off CALLER connection.

        The other node need not know us, nor we its id; it must be in the same
        cluster (and pass the TLS checks).  Raises :class:`CallError` or
        ``TimeoutError``.
        """
        self._check_call(payload)
        try:
            parse_address(address)
        except ValueError as e:
            raise CallError(str(e)) from None
        call_id = next(self._call_ids)
        fut = self._new_future()
        task = asyncio.get_running_loop().create_task(
            self._call_once(address, bytes(payload), call_id, fut),
            name=f"liferaft-call-{self.node_id}->{address}",
        )
        self._pending[call_id] = fut
        self._oneoffs.add(task)
        task.add_done_callback(self._oneoffs.discard)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.pop(call_id, None)
            if fut.cancelled() or not fut.done():  # timed out or cancelled: hang up
                task.cancel()

    def _new_future(self) -> asyncio.Future[bytes]:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        return fut

    async def _call_once(
        self, address: str, payload: bytes, call_id: int, fut: asyncio.Future[bytes]
    ) -> None:
        """Dial ``address`` as a caller, make one call, settle ``fut``, hang up."""
        writer: asyncio.StreamWriter | None = None
        try:
            host, port = parse_address(address)
            reader, writer = await self._connect(host, port)
            await self._greet(reader, writer, Kind.CALLER, "")
            writer.writelines(call_frame(call_id, payload))
            await writer.drain()
            while True:
                try:
                    kind, body = await read_frame(reader, self._max_frame)
                except asyncio.IncompleteReadError:
                    raise ConnectionResetError("closed by the peer") from None
                if kind is not Kind.REPLY:
                    raise FrameError(f"unexpected {kind.name} frame on a caller connection")
                cid, ok, data = parse_reply(body)
                if cid != call_id:
                    raise FrameError(f"reply to call {cid}, but the call was {call_id}")
                _settle(fut, ok, data)
                return
        except (FrameError, *_NET_ERRORS) as e:
            why = str(e) if isinstance(e, FrameError) else _why(e)
            self._log.info("call to %s failed: %s", address, why)
            _fail(fut, CallError(f"call to {address} failed: {why}"))
        except Exception as e:
            self._log.exception("call to %s failed unexpectedly", address)
            _fail(fut, CallError(f"call to {address} failed: {_why(e)}"))
        finally:
            if writer is not None:
                await _close_writer(writer)

    def _report_unreachable(self, peer: NodeId) -> None:
        """Tell the handler, once per loop iteration at most, outside ``send``."""
        if peer in self._unreachable_pending or self._loop is None:
            return
        self._unreachable_pending.add(peer)
        self._loop.call_soon(self._fire_unreachable, peer)

    def _fire_unreachable(self, peer: NodeId) -> None:
        self._unreachable_pending.discard(peer)
        if not self._closed and self._handler is not None:
            self._call_handler(self._handler.unreachable, peer)

    def _call_handler(self, fn: Callable[..., object], *args: Any) -> None:
        """A broken handler must not take the transport down with it."""
        try:
            fn(*args)
        except Exception:
            self._log.exception("transport handler %s raised", getattr(fn, "__name__", fn))

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random."""
        ceiling = min(self._max_backoff, self._min_backoff * float(1 << min(attempt - 1, 30)))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    async def _run_link(self, link: _Link) -> None:
        """Dial, pump, and redial with backoff, until cancelled."""
        me = asyncio.current_task()
        attempt = 0
        # Belt and braces: a replaced or closed link stops even if a
        # cancellation got lost somewhere below.
        while not self._closed and link.task is me:
            try:
                conn = await self._dial(link)
                if conn is None:
                    link.dial_failures += 1
                    self._link_down(link, "it cannot be dialed")
                    attempt += 1
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                reader, writer = conn
                if link.ever_connected:
                    link.reconnects += 1
                link.ever_connected = True
                link.state = _LinkState.CONNECTED
                attempt = 1
                self._log.info("connected to peer %s at %s", link.peer, link.address)
                try:
                    reason = await self._pump(link, reader, writer)
                finally:
                    # A cancelled task of a replaced link must not touch the new one.
                    if not self._closed and link.task is me:
                        self._link_down(link, "connection lost")
                    await _close_writer(writer)
                self._log.info("connection to peer %s lost: %s", link.peer, reason)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._log.exception("link to peer %s failed unexpectedly", link.peer)
                self._link_down(link, "its link failed")
            await asyncio.sleep(self._backoff(attempt))

    def _link_down(self, link: _Link, why: str) -> None:
        link.state = _LinkState.DOWN
        self._drop_queue(link, why)
        self._report_unreachable(link.peer)

    def _dropped(self, link: _Link, msg: Message) -> None:
        """Count a dropped message.  A dropped InstallSnapshot still gets its
        ``snapshot_status(peer, False)``: the leader waits for one (etcd's rule)."""
        link.dropped += 1
        if isinstance(msg, InstallSnapshot):
            link.snapshots_failed += 1
            self._snapshot_failed_soon(link.peer)

    def _drop_queue(self, link: _Link, why: str) -> None:
        """Drop every queued message; fail every queued call with ``why``."""
        for item in link.queue:
            if isinstance(item, _OutCall):
                _fail(item.fut, CallNotSent(f"peer {link.peer} is unreachable: {why}"))
            else:
                self._dropped(link, item)
        link.queue.clear()

    def _snapshot_failed_soon(self, peer: NodeId) -> None:
        if not self._closed and self._loop is not None and self._handler is not None:
            self._loop.call_soon(self._call_handler, self._handler.snapshot_status, peer, False)

    async def _connect(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open a connection (TLS if ``ssl_client``), within ``connect_timeout``."""
        # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a
        # cancellation that races with completion, and close() would hang.
        async with asyncio.timeout(self._connect_timeout):
            return await asyncio.open_connection(
                host,
                port,
                ssl=self._ssl_client,
                server_hostname=host if self._ssl_client else None,
                ssl_handshake_timeout=self._handshake_timeout if self._ssl_client else None,
                limit=_READ_LIMIT,
            )

    async def _greet(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: Kind, to: str
    ) -> Welcome:
        """Our side of the handshake as the dialer: HELLO (or CALLER), answer
        the CHALLENGE with our PROOF, check the WELCOME (see
        :mod:`.handshake`).  FrameError if refused or if the listener is not
        who it should be."""
        writer.write(
            control(kind, Hello(MAGIC, PROTOCOL_VERSION, self.cluster_id, self.node_id, to))
        )
        async with asyncio.timeout(self._handshake_timeout):
            challenge = parse(Challenge, await self._handshake_reply(reader, Kind.CHALLENGE))
            claim = handshake.Claim(
                MAGIC,
                PROTOCOL_VERSION,
                self.cluster_id,
                self.node_id,
                to,
                caller=kind is Kind.CALLER,
                dialer_nonce=secrets.token_bytes(handshake.NONCE_SIZE),
                listener_nonce=challenge.nonce,
            )
            proof = b""
            if self._secret is not None:
                proof = handshake.prove(self._secret, handshake.DIALER, claim, challenge.node_id)
            writer.write(control(Kind.PROOF, Proof(claim.dialer_nonce, proof)))
            w = parse(Welcome, await self._handshake_reply(reader, Kind.WELCOME))
        reason = handshake.check_welcome(
            claim,
            challenge.node_id,
            w.version,
            w.cluster_id,
            w.node_id,
            w.proof,
            self._secret,
            handshake.cert_names(writer.get_extra_info("peercert")),
            self._cert_ids,
        )
        if reason is not None:
            raise FrameError(reason)
        return w

    async def _handshake_reply(self, reader: asyncio.StreamReader, want: Kind) -> memoryview:
        """The body of the listener's next handshake frame, which must be ``want``."""
        try:
            kind, body = await read_frame(reader, MAX_HANDSHAKE_FRAME)
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("closed by the peer during the handshake") from None
        if kind is Kind.REFUSE:
            raise FrameError(f"refused by the peer: {parse(Reason, body).reason}")
        if kind is not want:
            raise FrameError(f"expected {want.name}, got {kind.name}")
        return body

    async def _dial(self, link: _Link) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Connect and handshake; None (and a log line) if either fails."""
        host, port = parse_address(link.address)
        try:
            reader, writer = await self._connect(host, port)
        except ssl.SSLError as e:
            # A certificate problem will not go away by retrying: say so loudly.
            self._log.warning(
                "TLS handshake with peer %s at %s failed: %s", link.peer, link.address, _why(e)
            )
            return None
        except _NET_ERRORS as e:
            self._log.debug("cannot connect to peer %s at %s: %r", link.peer, link.address, e)
            return None
        try:
            await self._greet(reader, writer, Kind.HELLO, link.peer)
        except (FrameError, *_NET_ERRORS) as e:
            self._log.warning(
                "handshake with peer %s at %s failed: %s", link.peer, link.address, _why(e)
            )
            await _close_writer(writer)
            return None
        except BaseException:  # cancelled mid-handshake: do not leak the socket
            await _close_writer(writer)
            raise
        return reader, writer

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> str:
        """Run one connection until it breaks; returns why it ended."""
        loop = asyncio.get_running_loop()
        # Calls written on this connection and waiting for their REPLY.
        calls: dict[int, asyncio.Future[bytes]] = {}
        link.calls = calls
        results = loop.create_task(self._read_results(link, reader, calls))
        writes = loop.create_task(self._write_loop(link, writer, calls))
        reason = "closed"
        try:
            done, _ = await asyncio.wait({results, writes}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc is not None:
                    if not isinstance(exc, (FrameError, *_NET_ERRORS)):
                        self._log.error("peer %s link failed", link.peer, exc_info=exc)
                    reason = _why(exc)
                    break
            return reason
        finally:
            for fut in list(calls.values()):
                _fail(fut, CallError(f"connection to peer {link.peer} lost: {reason}"))
            calls.clear()
            if link.calls is calls:
                link.calls = {}
            tasks = [results, writes]
            if link.stream is not None:
                tasks.append(link.stream)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if link.pending_snapshot is not None:
                self._dropped(link, link.pending_snapshot)
                link.pending_snapshot = None

    async def _write_loop(
        self,
        link: _Link,
        writer: asyncio.StreamWriter,
        calls: dict[int, asyncio.Future[bytes]],
    ) -> None:
        """Drain the queue in batches: write many frames, then one drain."""
        queue = link.queue
        try:
            while True:
                if not queue:
                    link.wake.clear()
                    if self._direct_writes:
                        link.direct = writer
                    try:
                        await link.wake.wait()
                    finally:
                        link.direct = None
                    continue
                await self._write_batch(link, writer, calls)
        finally:
            link.direct = None

    async def _write_batch(
        self,
        link: _Link,
        writer: asyncio.StreamWriter,
        calls: dict[int, asyncio.Future[bytes]],
    ) -> None:
        queue = link.queue
        parts: list[bytes | memoryview] = []
        n = msgs = 0
        while queue and n < self._max_batch:
            msg = queue.popleft()
            if isinstance(msg, _OutCall):
                if msg.fut.done():  # timed out or cancelled while queued
                    continue
                calls[msg.call_id] = msg.fut
                msg.home = calls
                parts.extend(call_frame(msg.call_id, msg.payload))
                link.calls_sent += 1
                n += 1
                continue
            if isinstance(msg, InstallSnapshot):
                self._start_stream(link, msg, writer)
                continue
            frame = self._frame(link, msg)
            if frame is None:
                continue
            parts.extend(frame)
            n += 1
            msgs += 1
        if parts:
            writer.writelines(parts)
            link.sent += msgs
            await writer.drain()

    async def _read_results(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        calls: dict[int, asyncio.Future[bytes]],
    ) -> None:
        """The only frames a listener sends back after the handshake: snapshot
        results and call replies."""
        while True:
            try:
                kind, body = await read_frame(reader, self._max_frame)
            except asyncio.IncompleteReadError:
                raise ConnectionResetError("closed by the peer") from None
            if kind is Kind.REPLY:
                call_id, ok, data = parse_reply(body)
                waiting = calls.pop(call_id, None)
                if waiting is None or waiting.done():
                    self._log.debug("late reply to call %d from %s ignored", call_id, link.peer)
                else:
                    _settle(waiting, ok, data)
                continue
            if kind is not Kind.SNAP_RESULT:
                raise FrameError(f"unexpected {kind.name} frame from the listener")
            r = parse(SnapResult, body)
            fut = link.snap_result
            if fut is not None and not fut.done():
                fut.set_result((r.ok, r.reason))
            else:
                self._log.warning("unexpected snapshot result from %s", link.peer)

    # -- snapshot streaming, sender side ---------------------------------------------

    def _start_stream(
        self, link: _Link, msg: InstallSnapshot, writer: asyncio.StreamWriter
    ) -> None:
        if link.stream is not None:
            # One stream per peer at a time; the newest waiting one goes next.
            if link.pending_snapshot is not None:
                self._log.info("a newer snapshot for %s supersedes a waiting one", link.peer)
                self._dropped(link, link.pending_snapshot)
            link.pending_snapshot = msg
            return
        loop = asyncio.get_running_loop()
        link.snap_result = loop.create_future()
        link.stream = loop.create_task(
            self._stream_snapshot(link, msg, writer),
            name=f"liferaft-snapshot-{self.node_id}->{link.peer}",
        )

    async def _stream_snapshot(
        self, link: _Link, msg: InstallSnapshot, writer: asyncio.StreamWriter
    ) -> None:
        assert self._handler is not None and self._pool is not None
        ok, reason = False, "connection lost"
        cancelled = False
        serial = _Serial(self._pool)
        source: Iterator[bytes] | None = None
        try:
            header = dataclasses.replace(msg, snapshot=dataclasses.replace(msg.snapshot, data=b""))
            try:
                source = iter(self._handler.snapshot_source(msg))
            except Exception as e:
                self._log.exception("snapshot_source for %s failed", link.peer)
                reason = f"snapshot source failed: {e!r}"
                return
            writer.write(frame(Kind.SNAP_BEGIN, encode_message(header)))
            total, crc = 0, 0
            while True:
                try:
                    chunk = await serial.call(next, source, None)
                except Exception as e:
                    reason = f"snapshot source failed: {e!r}"
                    self._log.error("snapshot to %s: %s", link.peer, reason)
                    writer.write(control(Kind.SNAP_ABORT, Reason(reason[:1000])))
                    return
                if chunk is None:
                    break
                view = memoryview(chunk)
                for off in range(0, len(view), self._chunk):
                    piece = view[off : off + self._chunk]
                    crc = zlib.crc32(piece, crc)
                    total += len(piece)
                    writer.write(frame(Kind.SNAP_CHUNK, piece))
                    await writer.drain()
                assert link.snap_result is not None
                if link.snap_result.done():  # the receiver gave up early
                    writer.write(control(Kind.SNAP_ABORT, Reason("the receiver failed")))
                    ok, reason = link.snap_result.result()
                    return
            writer.write(control(Kind.SNAP_END, SnapEnd(total, crc)))
            await writer.drain()
            assert link.snap_result is not None
            ok, reason = await link.snap_result
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as e:  # the connection broke, or the header cannot be encoded
            reason = _why(e)
        finally:
            if source is not None:
                close = getattr(source, "close", None)
                if close is not None:
                    serial.then(close)
            mine = link.stream is asyncio.current_task()
            if mine:
                link.stream = None
                link.snap_result = None
            if ok:
                link.snapshots_sent += 1
                self._log.info("snapshot %d streamed to %s", msg.snapshot.index, link.peer)
            else:
                link.snapshots_failed += 1
                self._log.warning(
                    "snapshot %d to %s failed: %s", msg.snapshot.index, link.peer, reason
                )
            if not self._closed and self._loop is not None:
                self._loop.call_soon(
                    self._call_handler, self._handler.snapshot_status, link.peer, ok
                )
            nxt = link.pending_snapshot
            if mine and nxt is not None and not cancelled and not writer.is_closing():
                link.pending_snapshot = None
                self._start_stream(link, nxt, writer)

    # -- inbound -----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One accepted connection: handshake, then serve frames until it ends."""
        task = asyncio.current_task()
        assert task is not None
        if self._closed:
            await _close_writer(writer)
            return
        peername = writer.get_extra_info("peername")
        where = format_address(*peername[:2]) if peername else "?"
        if len(self._accepting) + len(self._inbound) >= self._max_inbound:
            if not self._accepting:  # every slot holds a proven connection
                self._refuse_over_capacity(f"refused connection from {where}")
                await _close_writer(writer)
                return
            # The oldest connection that has proven nothing yet gives way.
            # Refusing the newcomer instead would let a stranger who keeps
            # max_inbound silent connections open lock every member out;
            # now it must open max_inbound connections within one member's
            # handshake round trip to keep that member out.
            oldest = next(iter(self._accepting))
            del self._accepting[oldest]
            oldest.cancel()
            self._refuse_over_capacity(
                f"closed the oldest connection still in its handshake for one from {where}"
            )
        self._accepting[task] = None
        conn: _Inbound | None = None
        try:
            try:
                async with asyncio.timeout(self._handshake_timeout):
                    greeted = await self._handshake(reader, writer, where)
            except (FrameError, DecodeError, TimeoutError, asyncio.IncompleteReadError) as e:
                # Whatever went wrong, this dialer proved nothing: refused.
                self._refused += 1
                self._log_refusal(
                    "refused connection from %s: %s",
                    where,
                    "handshake timed out" if isinstance(e, TimeoutError) else _why_frame(e),
                )
                return
            if greeted is None or self._closed:
                return
            peer, caller = greeted
            conn = _Inbound(peer, where, writer, task, caller=caller)
            if not caller:
                # One connection per dialing peer: a new one replaces a stale one.
                for old in [c for c in self._inbound if c.peer == peer and not c.caller]:
                    self._log.info("peer %s reconnected; closing its older connection", peer)
                    old.task.cancel()
            self._inbound.add(conn)
            self._accepting.pop(task, None)
            self._log.info("accepted %s from %s", "caller " + peer if caller else peer, where)
            if caller:
                await self._serve_caller(conn, reader)
            else:
                await self._serve(conn, reader)
        except (FrameError, DecodeError) as e:
            self._bad_frames += 1
            self._log.warning(
                "closing connection from %s (%s): %s", conn.label if conn else "?", where, e
            )
        except asyncio.IncompleteReadError as e:
            if e.partial:
                self._bad_frames += 1
                self._log.warning(
                    "closing connection from %s: stream ended inside a frame (%d of %d bytes)",
                    where,
                    len(e.partial),
                    e.expected,
                )
            else:
                self._log.info("connection from %s closed by the peer", where)
        except OSError as e:
            self._log.info("connection from %s failed: %r", where, e)
        except asyncio.CancelledError:
            # Only close(), set_peers() or a newer connection of the same peer
            # cancel this task, and nobody awaits its result: end quietly
            # (asyncio's stream callback would log a cancelled task).
            pass
        except Exception:
            self._log.exception("unexpected error on the connection from %s", where)
        finally:
            self._accepting.pop(task, None)
            if conn is not None:
                self._inbound.discard(conn)
                self._drop_stream(conn, "connection closed")
                for t in conn.calls:  # nobody is left to read their replies
                    t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await _close_writer(writer)

    def _refuse_over_capacity(self, what: str) -> None:
        """Count a connection closed for the inbound cap; log now and then."""
        self._over_capacity += 1
        now = asyncio.get_running_loop().time()
        if now - self._over_capacity_logged >= _OVER_CAPACITY_LOG_EVERY:
            self._over_capacity_logged = now
            self._log.warning(
                "%s: %d inbound connections already open (max_inbound); %d so far",
                what,
                self._max_inbound,
                self._over_capacity,
            )

    def _log_refusal(self, fmt: str, *args: object) -> None:
        """A refused handshake's WARNING, at most once per 10 s; the ones in
        between go to DEBUG, and the next WARNING says how many there were."""
        now = asyncio.get_running_loop().time()
        if now - self._refusal_logged < _REFUSAL_LOG_EVERY:
            self._refusals_unlogged += 1
            self._log.debug(fmt, *args)
            return
        self._refusal_logged = now
        held, self._refusals_unlogged = self._refusals_unlogged, 0
        if held:
            fmt += " (and %d more refused since the last such warning; see stats()['refused'])"
            args = (*args, held)
        self._log.warning(fmt, *args)

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str
    ) -> tuple[NodeId, bool] | None:
        """The listener's side: read HELLO or CALLER, CHALLENGE it, read its
        PROOF, and WELCOME or REFUSE it by :func:`.handshake.check`.
        Returns the dialer's node id and whether it is a caller, or None
        after refusing it.  Every frame is read with the handshake's small
        size limit.

        A caller need not be in the peer table, and may leave ``to`` empty;
        everything else (cluster id, proof, certificate) is checked all the same.
        """
        kind, body = await read_frame(reader, MAX_HANDSHAKE_FRAME)
        if kind is not Kind.HELLO and kind is not Kind.CALLER:
            raise FrameError(f"expected HELLO, got {kind.name}")
        caller = kind is Kind.CALLER
        head = parse(HelloHead, body)
        if head.magic == MAGIC and head.version == PROTOCOL_VERSION:
            hello = parse(Hello, body)
            claim = handshake.Claim(
                hello.magic,
                hello.version,
                hello.cluster_id,
                hello.frm,
                hello.to,
                caller=caller,
                cert=handshake.cert_names(writer.get_extra_info("peercert")),
            )
        else:  # another version's HELLO: only its magic and version are read
            claim = handshake.Claim(head.magic, head.version, "", "?", "", caller=caller)
        local = handshake.Local(
            self.node_id, self.cluster_id, self._links.keys(), self._secret, self._cert_ids
        )
        reason = handshake.check_hello(claim, local)
        if reason is None:
            nonce = secrets.token_bytes(handshake.NONCE_SIZE)
            writer.write(control(Kind.CHALLENGE, Challenge(self.node_id, nonce)))
            kind, body = await read_frame(reader, MAX_HANDSHAKE_FRAME)
            if kind is not Kind.PROOF:
                raise FrameError(f"expected PROOF from {claim.frm!r}, got {kind.name}")
            proof = parse(Proof, body)
            claim = dataclasses.replace(
                claim, dialer_nonce=proof.nonce, listener_nonce=nonce, proof=proof.proof
            )
            # The peer table may have changed meanwhile: check it all again.
            local = dataclasses.replace(local, members=self._links.keys())
            reason = handshake.check(claim, local)
        if reason is not None:
            self._refused += 1
            self._log_refusal(
                "refused %sconnection from %s claiming to be %r: %s",
                "caller " if caller else "",
                where,
                claim.frm,
                reason,
            )
            writer.write(control(Kind.REFUSE, Reason(reason[:1000])))
            with contextlib.suppress(*_NET_ERRORS):
                await writer.drain()
            return None
        mine = b""
        if self._secret is not None:
            mine = handshake.prove(self._secret, handshake.LISTENER, claim, self.node_id)
        writer.write(
            control(Kind.WELCOME, Welcome(PROTOCOL_VERSION, self.cluster_id, self.node_id, mine))
        )
        await writer.drain()
        return claim.frm, caller

    def _check_addressing(self, conn: _Inbound, msg: Message) -> None:
        if msg.frm != conn.peer or msg.to != self.node_id:
            raise FrameError(
                f"message {msg.frm!r} -> {msg.to!r} on the connection {conn.peer!r} -> "
                f"{self.node_id!r}"
            )

    async def _serve_caller(self, conn: _Inbound, reader: asyncio.StreamReader) -> None:
        """Serve a caller connection: calls only, closed when idle.

        It is idle while no call of it runs and no frame arrives: a deadline
        ``caller_idle_timeout`` ahead, moved on by every frame, suspended
        while a call runs and set again when the last one ends.  (A timeout
        per read would not do: cancelling a read inside a frame loses its
        header.)
        """
        loop = asyncio.get_running_loop()
        idle = self._caller_idle_timeout
        try:
            async with asyncio.timeout(loop.time() + idle) as deadline:

                def rearm(_: object = None) -> None:
                    # A call may end after the connection did: then do nothing.
                    if conn.on_idle is rearm and not conn.calls and not deadline.expired():
                        deadline.reschedule(loop.time() + idle)

                conn.on_idle = rearm
                while True:
                    kind, body = await read_frame(reader, self._max_frame)
                    if kind is not Kind.CALL:
                        raise FrameError(
                            f"{kind.name} frame on a caller connection, which carries calls "
                            "only (Raft traffic needs a peer connection)"
                        )
                    self._on_call(conn, body)
                    if conn.calls:
                        deadline.reschedule(None)
                    else:
                        rearm()
        except TimeoutError:
            self._idle_closed += 1
            self._log.info(
                "closing the idle connection from %s (%s): no call for %.3g s",
                conn.label,
                conn.where,
                idle,
            )
        finally:
            conn.on_idle = None

    async def _serve(self, conn: _Inbound, reader: asyncio.StreamReader) -> None:
        assert self._handler is not None
        handler = self._handler
        while True:
            kind, body = await read_frame(reader, self._max_frame)
            if kind is Kind.CALL:
                self._on_call(conn, body)
                continue
            if kind is Kind.MSG:
                msg = decode_message(body)
                self._check_addressing(conn, msg)
                if isinstance(msg, InstallSnapshot):
                    raise FrameError("InstallSnapshot must be streamed, not sent as MSG")
                self._received += 1
                self._call_handler(handler.deliver, msg)
            elif kind is Kind.SNAP_CHUNK:
                await self._on_chunk(conn, body)
            elif kind is Kind.SNAP_BEGIN:
                self._on_begin(conn, body)
            elif kind is Kind.SNAP_END:
                await self._on_end(conn, parse(SnapEnd, body))
            elif kind is Kind.SNAP_ABORT:
                if conn.stream is None:
                    raise FrameError("SNAP_ABORT outside a snapshot stream")
                self._drop_stream(conn, f"sender aborted: {parse(Reason, body).reason}")
            else:
                raise FrameError(f"unexpected {kind.name} frame after the handshake")

    # -- calls, receiver side --------------------------------------------------------------

    def _on_call(self, conn: _Inbound, body: memoryview) -> None:
        call_id, payload = parse_call(body)
        if len(conn.calls) >= _MAX_CALLS_PER_CONNECTION:
            self._log.warning("too many calls in flight from %s; refusing one", conn.label)
            conn.writer.writelines(
                reply_frame(call_id, False, b"CallError: too many calls in flight")
            )
            return
        task = asyncio.get_running_loop().create_task(
            self._serve_call(conn, call_id, bytes(payload)),
            name=f"liferaft-call-{conn.peer}->{self.node_id}",
        )
        conn.calls.add(task)
        self._serving.add(task)
        task.add_done_callback(conn.calls.discard)
        task.add_done_callback(self._serving.discard)
        if conn.on_idle is not None:
            task.add_done_callback(conn.on_idle)

    async def _serve_call(self, conn: _Inbound, call_id: int, payload: bytes) -> None:
        """Run ``handle_call`` and write its REPLY on the connection the call came in on."""
        assert self._handler is not None
        ok = False
        try:
            result = await self._handler.handle_call(conn.peer, payload, conn.peer in self._links)
            if not isinstance(result, bytes | bytearray | memoryview):
                raise TypeError(f"handle_call returned {type(result).__name__}, not bytes")
            data: bytes | bytearray | memoryview = result
            ok = True
        except Exception as e:
            self._log.debug("call %d from %s raised %r", call_id, conn.label, e)
            data = f"{type(e).__name__}: {e}"[:_MAX_ERROR_TEXT].encode("utf-8", "replace")
        if len(data) + REPLY_OVERHEAD > self._max_frame:
            self._log.error(
                "reply to a call from %s: %d bytes exceed max_frame", conn.label, len(data)
            )
            ok = False
            data = (
                f"CallError: a reply of {len(data)} bytes exceeds the frame limit of "
                f"{self._max_frame}"
            ).encode()
        if conn.writer.is_closing():
            return
        conn.writer.writelines(reply_frame(call_id, ok, data))
        self._calls_served += 1
        with contextlib.suppress(*_NET_ERRORS):
            await conn.writer.drain()

    # -- snapshot streaming, receiver side ---------------------------------------------

    def _on_begin(self, conn: _Inbound, body: memoryview) -> None:
        assert self._handler is not None and self._pool is not None
        if conn.stream is not None:
            raise FrameError("SNAP_BEGIN while a snapshot stream is open")
        msg = decode_message(body)
        self._check_addressing(conn, msg)
        if not isinstance(msg, InstallSnapshot):
            raise FrameError(f"SNAP_BEGIN carries {type(msg).__name__}, not InstallSnapshot")
        if msg.snapshot.data:
            raise FrameError("SNAP_BEGIN must carry an empty snapshot.data")
        stream = _InStream(msg, None, _Serial(self._pool))
        try:
            stream.sink = self._handler.snapshot_sink(msg)
        except Exception as e:
            self._log.exception("snapshot_sink for the snapshot from %s failed", conn.peer)
            self._send_result(conn, False, f"no sink: {e!r}")
        conn.stream = stream

    async def _on_chunk(self, conn: _Inbound, body: memoryview) -> None:
        stream = conn.stream
        if stream is None:
            raise FrameError("SNAP_CHUNK outside a snapshot stream")
        stream.total += len(body)
        stream.crc = zlib.crc32(body, stream.crc)
        sink = stream.sink
        if sink is None:
            return  # failed earlier: discard until SNAP_END
        try:
            await stream.serial.call(sink.write, bytes(body))
        except Exception as e:
            self._log.exception("writing the snapshot from %s failed", conn.peer)
            self._fail_stream(conn, stream, f"sink write failed: {e!r}")

    async def _on_end(self, conn: _Inbound, end: SnapEnd) -> None:
        assert self._handler is not None
        stream = conn.stream
        if stream is None:
            raise FrameError("SNAP_END outside a snapshot stream")
        conn.stream = None
        sink = stream.sink
        if sink is None:
            return  # its failure was already reported
        if (end.total, end.crc32) != (stream.total, stream.crc):
            self._fail_stream(conn, stream, "checksum mismatch")
            raise FrameError(
                f"snapshot stream corrupt: {stream.total} bytes crc {stream.crc:08x}, "
                f"sender says {end.total} bytes crc {end.crc32:08x}"
            )
        try:
            await stream.serial.call(sink.commit)
        except Exception as e:
            self._log.exception("committing the snapshot from %s failed", conn.peer)
            self._fail_stream(conn, stream, f"sink commit failed: {e!r}")
            return
        stream.sink = None
        self._log.info(
            "snapshot %d from %s received (%d bytes)",
            stream.header.snapshot.index,
            conn.peer,
            stream.total,
        )
        self._received += 1
        self._call_handler(self._handler.deliver, stream.header)
        self._send_result(conn, True, "")

    def _fail_stream(self, conn: _Inbound, stream: _InStream, reason: str) -> None:
        sink, stream.sink = stream.sink, None
        if sink is not None:
            stream.serial.then(sink.abort)
        self._send_result(conn, False, reason)

    def _drop_stream(self, conn: _Inbound, reason: str) -> None:
        """The stream will not finish: abort its sink (no result: the sender knows)."""
        stream, conn.stream = conn.stream, None
        if stream is not None and stream.sink is not None:
            self._log.warning(
                "snapshot %d from %s aborted: %s", stream.header.snapshot.index, conn.peer, reason
            )
            sink, stream.sink = stream.sink, None
            stream.serial.then(sink.abort)

    def _send_result(self, conn: _Inbound, ok: bool, reason: str) -> None:
        conn.writer.write(control(Kind.SNAP_RESULT, SnapResult(ok, reason[:1000])))

    # -- introspection ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``{"peers": {id: {connected, sent, dropped, reconnects, ...}}, ...node-wide...}``."""
        return {
            "node_id": self.node_id,
            "address": self.address,
            "peers": {pid: link.stats() for pid, link in self._links.items()},
            "inbound": sorted(c.peer for c in self._inbound if not c.caller),
            "callers": sum(1 for c in self._inbound if c.caller),
            "calls_pending": len(self._pending),
            "calls_served": self._calls_served,
            "received": self._received,
            "refused": self._refused,
            "bad_frames": self._bad_frames,
            "handshaking": len(self._accepting),
            "over_capacity": self._over_capacity,
            "idle_closed": self._idle_closed,
            "authentication": self._authentication(),
            "unknown_dropped": self._unknown_dropped,
        }

    def _authentication(self) -> str:
        """How this node's peers prove who they are, for stats and logs."""
        ways = [w for w, on in (("secret", self._secret), ("mtls", self._cert_ids)) if on]
        return "+".join(ways) or "none"

    def __repr__(self) -> str:
        return f"TcpTransport({self.node_id!r}, {self.address!r})"


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    """Close and wait (briefly) until the socket is really closed.

    Closing only schedules the socket's release on the loop; waiting for it
    keeps a transport that is closed and then dropped with its loop from
    leaking sockets.  Safe to call while the calling task is being cancelled
    (a cancellation *during* the wait propagates).
    """
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


def _fail(fut: asyncio.Future[bytes], exc: CallError) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _settle(fut: asyncio.Future[bytes], ok: bool, data: memoryview) -> None:
    """Complete a waiting call with a REPLY's outcome."""
    if fut.done():
        return
    if ok:
        fut.set_result(bytes(data))
    else:
        text = bytes(data).decode("utf-8", "replace")
        fut.set_exception(CallError(f"remote error: {text}"))


def _why_frame(e: BaseException) -> str:
    """Why a handshake failed, for a refusal's log line."""
    if isinstance(e, asyncio.IncompleteReadError):
        if not e.partial:
            return "connection closed during the handshake"
        return f"stream ended inside a frame ({len(e.partial)} of {e.expected} bytes)"
    return str(e) or type(e).__name__


def _why(e: BaseException) -> str:
    """A short reason for a log line."""
    if isinstance(e, asyncio.IncompleteReadError):
        return "connection closed" if not e.partial else "connection closed inside a frame"
    if isinstance(e, TimeoutError):
        return "timed out"
    text = str(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
