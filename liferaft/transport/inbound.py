"""Inbound connections: accepting, admitting, handshaking and serving them.

At most ``max_inbound`` connections are open at once; when one more
arrives, the oldest that is still in its handshake gives way (or the
newcomer, if every slot holds a proven connection).  With TLS, the socket
is accepted as plain TCP, counted against that cap, and only then upgraded
(:mod:`.tls_listener`) within ``handshake_timeout``: a stranger who opens
connections and never starts TLS holds no more than ``max_inbound`` of them.

Then comes the handshake (HELLO or CALLER -> CHALLENGE -> PROOF -> WELCOME
or REFUSE, :mod:`.greeting`; its rules are :func:`.handshake.check_hello`),
within the same timeout and in frames of at most 4 KiB: nothing more is read
from a dialer that has not proven the cluster secret (or, with mTLS, its
node id).  Then a peer connection's frames are parsed in the socket
callback (:mod:`.framed`) and decoded by :mod:`liferaft.codec`; a caller
connection's are read one by one.  A frame that is oversized, truncated, unknown or
fails validation, or a message whose sender or receiver is not the
handshaken pair, closes that connection with a logged reason; the node
keeps serving everyone else.  A caller connection carries calls only and is
closed once idle.  (docs/architecture.md, "Trust model"; docs/transport.md,
"Handshake" and "Limits".)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import ssl
from collections.abc import Callable, Collection
from typing import Any

from liferaft.codec import DecodeError, decode_message
from liferaft.core.messages import InstallSnapshot, NodeId

from . import greeting, handshake
from ._context import Context, InboundConn, close_writer, small_reads
from ._frames import FrameError, Kind, read_frame
from .base import format_address
from .calls import CallServer
from .framed import PeerProtocol, new_protocol
from .snapshots import SnapshotReceiver
from .tls_listener import TlsListener, upgrade

# Over-capacity connections are logged at most this often (seconds): a
# flood must not flood the log too.
OVER_CAPACITY_LOG_EVERY = 10.0
# Refused handshakes likewise: one WARNING at most this often (seconds),
# the others at DEBUG and counted, since anyone can cause one per connection.
REFUSAL_LOG_EVERY = 10.0
# Peer frames handled in the socket callback; the others go to the task.
_INLINE = frozenset({Kind.MSG, Kind.CALL})


@dataclasses.dataclass(frozen=True)
class InboundSettings:
    """Who may connect and for how long (TcpTransport's arguments)."""

    ssl_server: ssl.SSLContext | None
    secret: bytes | None
    # Mutual TLS: the dialer's certificate must name the id it claims.
    cert_ids: bool
    max_inbound: int
    handshake_timeout: float
    caller_idle_timeout: float


class Inbound:
    """Every inbound connection of one node, from accept to close."""

    def __init__(
        self,
        ctx: Context,
        settings: InboundSettings,
        members: Callable[[], Collection[NodeId]],
        calls: CallServer,
    ) -> None:
        self._ctx = ctx
        self._settings = settings
        # members() -> the peer table's ids, asked at each handshake decision.
        self._members = members
        self._calls = calls
        self._server: asyncio.Server | TlsListener | None = None
        self.conns: set[InboundConn] = set()
        # Connections still in their handshake, oldest first (a dict keeps
        # insertion order): the oldest is the first to give way at the cap.
        self.accepting: dict[asyncio.Task[Any], None] = {}
        self.refused = 0
        self.bad_frames = 0
        self.over_capacity = 0
        self.idle_closed = 0
        self._over_capacity_logged = -OVER_CAPACITY_LOG_EVERY
        self._refusal_logged = -REFUSAL_LOG_EVERY
        self._refusals_unlogged = 0

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Start accepting; returns the bound (host, port).  Without TLS,
        asyncio's stream server; with it, a :class:`~.tls_listener.TlsListener`
        whose raw sockets :meth:`_accept_tls` counts before starting TLS."""
        if self._settings.ssl_server is not None:
            self._server = TlsListener(self._accept_tls, self._ctx.log)
            return await self._server.listen(host, port)
        # asyncio.start_server, with a protocol that can switch to parsing
        # peer frames in the socket callback after the handshake (.framed).
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: new_protocol(greeting.READ_LIMIT, self._accept), host, port
        )
        self._server = server
        sockname = server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    def close(self) -> list[asyncio.Task[Any]]:
        """Stop listening; cancel every connection's task and return them."""
        self.stop_listening()
        tasks = [c.task for c in self.conns] + list(self.accepting)
        for c in self.conns:
            c.end()
        for t in self.accepting:
            t.cancel()
        return tasks

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()

    def drop_peer(self, peer: NodeId) -> None:
        """``peer`` left the peer table: close its peer connections."""
        for conn in list(self.conns):
            if conn.peer == peer and not conn.caller:
                conn.end()

    def local(self) -> handshake.Local:
        """What the handshake's decision needs to know about this node, now."""
        s = self._settings
        return handshake.Local(
            self._ctx.node_id,
            self._ctx.cluster_id,
            self._members(),
            s.secret,
            s.cert_ids,
            self._ctx.epoch.value,
        )

    # -- accepting -------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One accepted plain connection (asyncio's stream server calls this)."""
        peername = writer.get_extra_info("peername")
        where = format_address(*peername[:2]) if peername else "?"
        await self._run(where, (reader, writer), None)

    async def _accept_tls(self, sock: socket.socket) -> None:
        """One accepted socket of the TLS listener: TLS starts after admission."""
        try:
            where = format_address(*sock.getpeername()[:2])
        except OSError:
            where = "?"
        await self._run(where, None, sock)

    async def _run(
        self, where: str, streams: greeting.Streams | None, sock: socket.socket | None
    ) -> None:
        """Admit, start TLS on ``sock`` (if given instead of ``streams``),
        handshake, then serve frames until the connection ends."""
        ctx = self._ctx
        task = asyncio.current_task()
        assert task is not None
        writer = streams[1] if streams is not None else None
        if ctx.closed or not self._admit(where):
            if writer is not None:
                await close_writer(writer)
            if sock is not None:
                sock.close()
            return
        self.accepting[task] = None
        # One deadline for the TLS handshake and ours together.
        deadline = asyncio.get_running_loop().time() + self._settings.handshake_timeout
        conn: InboundConn | None = None
        try:
            if streams is None:
                assert sock is not None
                streams = await self._start_tls(sock, where, deadline)
                if streams is None:
                    return
                writer = streams[1]
            reader, writer = streams
            small_reads(writer)
            peer_caller = await self._greet(reader, writer, where, deadline)
            if peer_caller is None or ctx.closed:
                return
            peer, caller = peer_caller
            conn = InboundConn(peer, where, writer, task, caller=caller)
            if not caller:
                # One connection per dialing peer: a new one replaces a stale one.
                for old in [c for c in self.conns if c.peer == peer and not c.caller]:
                    ctx.log.info("peer %s reconnected; closing its older connection", peer)
                    old.end()
            self.conns.add(conn)
            self.accepting.pop(task, None)
            ctx.log.info("accepted %s from %s", conn.label, where)
            if caller:
                await self._serve_caller(conn, reader)
            else:
                await self._serve(conn)
        except (FrameError, DecodeError) as e:
            self.bad_frames += 1
            ctx.log.warning(
                "closing connection from %s (%s): %s", conn.label if conn else "?", where, e
            )
        except asyncio.IncompleteReadError as e:
            if e.partial:
                self.bad_frames += 1
                ctx.log.warning(
                    "closing connection from %s: stream ended inside a frame (%d of %d bytes)",
                    where,
                    len(e.partial),
                    e.expected,
                )
            else:
                ctx.log.info("connection from %s closed by the peer", where)
        except OSError as e:
            ctx.log.info("connection from %s failed: %r", where, e)
        except asyncio.CancelledError:
            # Only close(), set_peers() or a newer connection of the same peer
            # cancel this task, and nobody awaits its result: end quietly
            # (asyncio's stream callback would log a cancelled task).
            pass
        except Exception:
            ctx.log.exception("unexpected error on the connection from %s", where)
        finally:
            self.accepting.pop(task, None)
            if conn is not None:
                self.conns.discard(conn)
                for t in conn.calls:  # nobody is left to read their replies
                    t.cancel()
            if writer is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await close_writer(writer)
            elif sock is not None:
                sock.close()

    def _admit(self, where: str) -> bool:
        """Make room for one more connection under ``max_inbound``, or refuse it."""
        if len(self.accepting) + len(self.conns) < self._settings.max_inbound:
            return True
        if not self.accepting:  # every slot holds a proven connection
            self._refuse_over_capacity(f"refused connection from {where}")
            return False
        # The oldest connection that has proven nothing yet gives way.
        # Refusing the newcomer instead would let a stranger who keeps
        # max_inbound silent connections open lock every member out; now it
        # must open max_inbound connections within one member's handshake
        # round trip to keep that member out.
        oldest = next(iter(self.accepting))
        del self.accepting[oldest]
        oldest.cancel()
        self._refuse_over_capacity(
            f"closed the oldest connection still in its handshake for one from {where}"
        )
        return True

    async def _start_tls(
        self, sock: socket.socket, where: str, deadline: float
    ) -> greeting.Streams | None:
        """The TLS handshake on an admitted socket, by ``deadline``; None
        after a failure (counted and logged as a refusal)."""
        assert self._settings.ssl_server is not None
        try:
            async with asyncio.timeout_at(deadline):
                return await upgrade(
                    sock, self._settings.ssl_server, self._settings.handshake_timeout
                )
        except (OSError, TimeoutError) as e:  # ssl.SSLError is an OSError
            self.refused += 1
            self._log_refusal(
                "refused connection from %s: TLS handshake %s",
                where,
                "timed out" if isinstance(e, TimeoutError) else f"failed: {e}",
            )
            return None

    async def _greet(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        where: str,
        deadline: float,
    ) -> tuple[NodeId, bool] | None:
        """The handshake, by ``deadline``.  Returns the dialer's id and
        whether it is a caller, or None after refusing it (counted and logged)."""
        try:
            async with asyncio.timeout_at(deadline):
                got = await greeting.answer(reader, writer, self.local, self._ctx.epoch)
        except (FrameError, DecodeError, TimeoutError, asyncio.IncompleteReadError) as e:
            # Whatever went wrong, this dialer proved nothing: refused.
            self.refused += 1
            self._log_refusal(
                "refused connection from %s: %s",
                where,
                "handshake timed out" if isinstance(e, TimeoutError) else _why_frame(e),
            )
            return None
        if got.refusal is not None:
            self.refused += 1
            self._log_refusal(
                "refused %sconnection from %s claiming to be %r: %s",
                "caller " if got.claim.caller else "",
                where,
                got.claim.frm,
                got.refusal,
            )
            return None
        return got.claim.frm, got.claim.caller

    # -- serving -----------------------------------------------------------------------

    async def _serve(self, conn: InboundConn) -> None:
        """Serve a peer connection: messages, snapshot streams and calls.

        Messages and calls are handled in the socket callback as their
        frames complete (.framed); snapshot frames, and whatever arrives
        behind one until it is handled, come to this task in order."""
        ctx = self._ctx
        rx = conn.writer.transport.get_protocol()
        assert isinstance(rx, PeerProtocol), rx  # both listeners make one
        snapshots = SnapshotReceiver(ctx, conn)
        conn.stop_reading = rx.stop
        rx.frames(ctx.max_frame, lambda kind, body: self._frame(conn, kind, body), _INLINE)
        try:
            while True:
                kind, body = await rx.next_frame()
                if kind in _INLINE:
                    self._frame(conn, kind, body)
                elif kind is Kind.SNAP_CHUNK:
                    await snapshots.chunk(body)
                elif kind is Kind.SNAP_BEGIN:
                    snapshots.begin(body)
                elif kind is Kind.SNAP_END:
                    await snapshots.end(body)
                elif kind is Kind.SNAP_ABORT:
                    snapshots.aborted(body)
                else:
                    raise FrameError(f"unexpected {kind.name} frame after the handshake")
        finally:
            rx.stop()
            snapshots.drop("connection closed")

    def _frame(self, conn: InboundConn, kind: Kind, body: memoryview) -> None:
        """A MSG or CALL frame of a peer connection (raises to close it)."""
        if kind is Kind.CALL:
            self._calls.on_call(conn, body)
            return
        msg = decode_message(body)
        conn.check_addressing(msg, self._ctx.node_id)
        if isinstance(msg, InstallSnapshot):
            raise FrameError("InstallSnapshot must be streamed, not sent as MSG")
        self._ctx.deliver(msg)

    async def _serve_caller(self, conn: InboundConn, reader: asyncio.StreamReader) -> None:
        """Serve a caller connection: calls only, closed when idle.

        It is idle while no call of it runs and no frame arrives: a deadline
        ``caller_idle_timeout`` ahead, moved on by every frame, suspended
        while a call runs and set again when the last one ends.  (A timeout
        per read would not do: cancelling a read inside a frame loses its
        header.)
        """
        loop = asyncio.get_running_loop()
        idle = self._settings.caller_idle_timeout
        try:
            async with asyncio.timeout(loop.time() + idle) as deadline:

                def rearm(_: object = None) -> None:
                    # A call may end after the connection did: then do nothing.
                    if conn.on_idle is rearm and not conn.calls and not deadline.expired():
                        deadline.reschedule(loop.time() + idle)

                conn.on_idle = rearm
                while True:
                    kind, body = await read_frame(reader, self._ctx.max_frame)
                    if kind is not Kind.CALL:
                        raise FrameError(
                            f"{kind.name} frame on a caller connection, which carries calls "
                            "only (Raft traffic needs a peer connection)"
                        )
                    self._calls.on_call(conn, body)
                    if conn.calls:
                        deadline.reschedule(None)
                    else:
                        rearm()
        except TimeoutError:
            self.idle_closed += 1
            self._ctx.log.info(
                "closing the idle connection from %s (%s): no call for %.3g s",
                conn.label,
                conn.where,
                idle,
            )
        finally:
            conn.on_idle = None

    # -- log-flood limits --------------------------------------------------------------

    def _refuse_over_capacity(self, what: str) -> None:
        """Count a connection closed for the inbound cap; log now and then."""
        self.over_capacity += 1
        now = asyncio.get_running_loop().time()
        if now - self._over_capacity_logged >= OVER_CAPACITY_LOG_EVERY:
            self._over_capacity_logged = now
            self._ctx.log.warning(
                "%s: %d inbound connections already open (max_inbound); %d so far",
                what,
                self._settings.max_inbound,
                self.over_capacity,
            )

    def _log_refusal(self, fmt: str, *args: object) -> None:
        """A refused handshake's WARNING, at most once per 10 s; the ones in
        between go to DEBUG, and the next WARNING says how many there were."""
        now = asyncio.get_running_loop().time()
        if now - self._refusal_logged < REFUSAL_LOG_EVERY:
            self._refusals_unlogged += 1
            self._ctx.log.debug(fmt, *args)
            return
        self._refusal_logged = now
        held, self._refusals_unlogged = self._refusals_unlogged, 0
        if held:
            fmt += " (and %d more refused since the last such warning; see stats()['refused'])"
            args = (*args, held)
        self._ctx.log.warning(fmt, *args)


def _why_frame(e: BaseException) -> str:
    """Why a handshake failed, for a refusal's log line."""
    if isinstance(e, asyncio.IncompleteReadError):
        if not e.partial:
            return "connection closed during the handshake"
        return f"stream ended inside a frame ({len(e.partial)} of {e.expected} bytes)"
    return str(e) or type(e).__name__
