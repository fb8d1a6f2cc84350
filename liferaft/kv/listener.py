"""The client port's listener: how many connections it holds, and for how long.

The HTTP API is open to anyone who can reach the client port (the token is
checked only once a request has arrived), so the port itself must bound what
a stranger can hold (docs/architecture.md, "Trust model"):

- **Header timeout.** A connection must deliver a complete request head
  within ``header_timeout`` of being accepted (or of its previous response,
  for a kept-alive connection), else it is closed.  aiohttp arms its
  keep-alive timer when a connection is made (3.14+), and that timer closes a
  connection whose handler is still waiting for a request head: exactly a
  header timeout, so :func:`start_client_listener` sets ``keepalive_timeout``
  to it.  A TLS handshake gets the same bound.
- **Body timeout.** A request body must arrive within ``body_timeout``
  (enforced where the body is read: ``KVServer``).  Its 408 is a
  :class:`FinalResponse`: the connection half-closes right after it and is
  gone within :data:`CLOSE_GRACE`, not after aiohttp's 10 s of "lingering"
  (reading a body nobody will use, for a client that sends it slowly by
  definition).  The same bound holds
  for a response: a client that takes no bytes of it for ``body_timeout``
  (its connection's send buffer stays full) is dropped, so a slow reader
  cannot hold a connection and its buffered answers for as long as it likes.
- **Connection cap.** At most ``max_connections`` are open at once, counted
  from accept to close (TLS handshakes included); one more is closed at once
  and counted in ``liferaft_http_connections_refused_total``.
- **Descriptors for storage.** :func:`raise_nofile_limit` lifts the soft
  ``RLIMIT_NOFILE`` to the hard limit, and :func:`connection_cap` keeps
  :data:`FD_RESERVE` descriptors out of the cap (shared with etcd's gRPC
  port when it is served: etcd/grpc_server.py), so client connections can
  never take the descriptor a WAL, snapshot or hard-state write needs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CollectorRegistry, Counter, Gauge

from liferaft.transport.base import limit_reads

from .hot_path import ClientRunner

log = logging.getLogger("liferaft.kv")

# Descriptors kept out of the client connection cap: storage (WAL segments,
# snapshot files and their temp files, the hard-state file and the data
# directory fsyncs), the peer port's connections (capped on its own), the
# leader-proxy client pool, logs and the interpreter's own files.  A node
# uses a few dozen of these in practice; 256 leaves room for a busy one.
FD_RESERVE = 256
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
# How long a connection stays after its FinalResponse: time for the answer
# and our FIN to reach the client and for it to close its end, while what it
# still sends is read and dropped (closing on unread bytes would send a
# reset, which can destroy the answer in flight).  Several round trips on
# any network; short next to the body timeout a stranger has already used.
CLOSE_GRACE = 1.0


@dataclass(frozen=True)
class ClientLimits:
    """What one client connection may hold (seconds, count)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        # A NaN passes "<= 0" (every comparison with it is false) and is no
        # bound: uvloop raises on a timer set with it, asyncio fires it at once.
        for name in ("header_timeout", "body_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {self.max_connections!r}")


def raise_nofile_limit() -> int:
    """Lift the soft ``RLIMIT_NOFILE`` to the hard limit (as far as the OS
    lets us) and return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit is not a number we can set; 65536 is plenty.
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, want, exc)
    return soft


def connection_cap(
    requested: int, nofile: int, reserve: int = FD_RESERVE, ports: int = 1
) -> int:
    """The connection cap of each of ``ports`` client ports (the HTTP port,
    and etcd's gRPC port when served): ``requested``, lowered so that
    ``reserve`` descriptors of ``nofile`` stay free for storage and peers
    when every port is full.  ValueError when not even one connection fits."""
    room = (nofile - reserve) // ports
    if room < 1:
        raise ValueError(
            f"the open-file limit is {nofile}, and {reserve} descriptors are kept for "
            "storage and peers: raise `ulimit -n`"
        )
    return min(requested, room)


class _ClientFaults(logging.Filter):
    """Moves aiohttp's log of a request it could not parse (a bad request
    line, an over-long header, Content-Length with chunked, a bad chunk or
    gzip body) from ERROR with a traceback to one DEBUG line.  The client
    already got its 4xx, and a stranger who can write a traceback per
    connection can fill the node's log, and its disk, at the rate it
    connects (docs/kv.md, "Client port limits")."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        # A body that fails to decode reaches the log wrapped
        # (RequestPayloadError, from aiohttp's lingering read of it).
        cause = exc.__cause__ if isinstance(exc, web.RequestPayloadError) else exc
        if record.levelno >= logging.ERROR and isinstance(cause, HttpProcessingError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg, record.args = "%s (a malformed request: %s)", (record.getMessage(), cause)
            record.exc_info = record.exc_text = None
        return True


_CLIENT_FAULTS = _ClientFaults()


def quiet_client_faults() -> None:
    """Install :class:`_ClientFaults` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if _CLIENT_FAULTS not in logger.filters:
        logger.addFilter(_CLIENT_FAULTS)


class ConnectionGate:
    """Counts open client connections and refuses those past the cap."""

    def __init__(self, cap: int, registry: CollectorRegistry | None = None) -> None:
        self.cap = cap
        self.open = 0
        self.refused = 0
        reg = registry if registry is not None else CollectorRegistry()
        self._refused = Counter(
            "liferaft_http_connections_refused",
            "Client connections closed at once because the connection cap was reached.",
            registry=reg,
        )
        self._open = Gauge(
            "liferaft_http_connections_open",
            "Client connections open now (TLS handshakes included).",
            registry=reg,
        )
        Gauge("liferaft_http_connections_max", "The client connection cap.", registry=reg).set(cap)

    def admit(self) -> bool:
        if self.open >= self.cap:
            self.refused += 1
            self._refused.inc()
            return False
        self.open += 1
        self._open.set(self.open)
        return True

    def release(self) -> None:
        self.open -= 1
        self._open.set(self.open)


class _Slot:
    """One admitted connection's place in the gate, given back once."""

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate: ConnectionGate | None = gate

    def release(self) -> None:
        if self._gate is not None:
            self._gate.release()
            self._gate = None


class _Tracked(asyncio.Protocol):
    """Stands between one admitted connection's transport and aiohttp's
    request handler, to give its slot back when the connection ends, and to
    drop a client whose sends stall (aiohttp waits on a full send buffer
    for ever)."""

    def __init__(self, slot: _Slot, inner: asyncio.Protocol, send_timeout: float) -> None:
        self._slot = slot
        self._inner = inner
        self._send_timeout = send_timeout
        # uvloop's transports (what ``liferaft serve`` runs on) are not
        # asyncio.Transport subclasses, but are one: never test for the class
        # (an isinstance check here made the send timeout and the 408's close
        # silently do nothing in production).
        self._transport: asyncio.Transport | None = None
        self._stalled: asyncio.TimerHandle | None = None
        # Set once a FinalResponse went out: the end of the connection.
        self._closing: asyncio.TimerHandle | None = None
        self._on_lost: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        limit_reads(transport)  # under glibc's mmap threshold, as peer links
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._closing is None:
            self._inner.data_received(data)
        # else: the rest of a body already answered, dropped unparsed.

    def eof_received(self) -> bool | None:
        if self._closing is not None:
            return False  # the client closed its end after our answer: close ours
        return self._inner.eof_received()

    def close_after_answer(self, on_lost: Callable[[], None]) -> None:
        """The answer just written is this connection's last: send the end of
        the stream now (FIN; TLS's close_notify), drop what the client still
        sends, and close when it closes its end or after :data:`CLOSE_GRACE`.
        ``on_lost`` runs once the connection is gone."""
        transport = self._transport
        if self._closing is not None or transport is None:
            return
        self._on_lost = on_lost
        self._closing = asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.abort)
        if transport.can_write_eof():
            transport.write_eof()  # after what is buffered: the answer arrives whole
        else:
            transport.close()  # TLS: close_notify after the answer; abort bounds the rest

    def pause_writing(self) -> None:
        # The send buffer is full: the client has this long to take some of it.
        if self._stalled is None:
            loop = asyncio.get_running_loop()
            self._stalled = loop.call_later(self._send_timeout, self._drop)
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._unstall()
        self._inner.resume_writing()

    def _unstall(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _drop(self) -> None:
        self._stalled = None
        log.debug("dropping a client that stopped reading its response")
        if self._transport is not None:
            self._transport.abort()  # connection_lost follows: the slot goes back

    def connection_lost(self, exc: Exception | None) -> None:
        self._unstall()
        if self._closing is not None:
            self._closing.cancel()
        self._slot.release()
        self._inner.connection_lost(exc)
        if self._on_lost is not None:
            self._on_lost()


class FinalResponse(web.Response):
    """A response after which its connection ends at once (the 408 of a body
    that did not arrive: the rest of the connection is that body).

    aiohttp would keep reading the unread body for its ``lingering_time``
    (10 s) before closing; behind the client listener the connection is
    instead half-closed right after this answer and gone within
    :data:`CLOSE_GRACE` (``_Tracked.close_after_answer``).  Served by another
    server (a test's), it is an ordinary response with ``Connection: close``."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.force_close()  # Connection: close, and no keep-alive after it
        self._final_request: web.BaseRequest | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self._final_request = request
        return await super().prepare(request)

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(data)
        request, self._final_request = self._final_request, None
        transport = request.transport if request is not None else None
        tracked = transport.get_protocol() if transport is not None else None
        if request is not None and isinstance(tracked, _Tracked):
            # Once the connection is gone, end the unread body too: aiohttp's
            # lingering wait on it then ends at once, not 10 s later.
            tracked.close_after_answer(request.content.feed_eof)


class ClientListener:
    """The client port: an aiohttp app behind the gate and the timeouts.
    Build it with :func:`start_client_listener`; ``close()`` stops it.

    It runs its own accept loop rather than ``loop.create_server``: a
    connection must be counted from accept, TLS handshake included, and
    ``create_server`` tells the protocol nothing of a handshake that fails.
    ``loop.connect_accepted_socket`` does the handshake (bounded by the header
    timeout) and raises if it fails, so every slot taken is given back."""

    def __init__(
        self,
        runner: web.AppRunner,
        sock: socket.socket,
        gate: ConnectionGate,
        limits: ClientLimits,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.runner = runner
        self.gate = gate
        self._sock = sock
        self._limits = limits
        self._ssl = ssl_context
        self._handshakes: set[asyncio.Task[None]] = set()
        self._accepting = asyncio.ensure_future(self._accept_loop())

    @property
    def port(self) -> int:
        port: int = self._sock.getsockname()[1]
        return port

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:
                # EMFILE and friends: the reserve is for storage, so wait a
                # moment for descriptors to come back rather than spin.
                log.warning("accepting a client connection: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if not self.gate.admit():
                conn.close()
                continue
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                # asyncio's own servers turn Nagle off; a socket we accept
                # ourselves must too, or a response written while the one
                # before is unacknowledged waits for the client's delayed ACK.
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = asyncio.ensure_future(self._start(conn, _Slot(self.gate)))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _start(self, conn: socket.socket, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        make_handler = self.runner.server
        assert make_handler is not None
        try:
            await loop.connect_accepted_socket(
                lambda: _Tracked(slot, make_handler(), self._limits.body_timeout),
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self._limits.header_timeout if self._ssl else None,
            )
        except BaseException as exc:
            # The handshake failed, timed out or was cancelled: the protocol
            # never saw the connection, so its slot is given back here.
            conn.close()
            slot.release()
            if not isinstance(exc, Exception):
                raise
            log.debug("client TLS handshake failed: %s", exc)

    async def close(self) -> None:
        self._accepting.cancel()
        for t in list(self._handshakes):
            t.cancel()
        await asyncio.gather(self._accepting, *self._handshakes, return_exceptions=True)
        self._sock.close()
        await self.runner.cleanup()


async def start_client_listener(
    app: web.Application,
    host: str,
    port: int,
    limits: ClientLimits,
    *,
    ssl_context: ssl.SSLContext | None = None,
    registry: CollectorRegistry | None = None,
) -> ClientListener:
    """Serve ``app`` on ``host:port`` within ``limits`` (OSError if the port
    cannot be bound)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(512)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    # keepalive_timeout is aiohttp's deadline for a request head, from accept
    # or from the previous response (see the module docstring).
    # ClientRunner: the key routes skip the router and middlewares (kv/hot_path.py).
    runner = ClientRunner(app, access_log=None, keepalive_timeout=limits.header_timeout)
    quiet_client_faults()
    try:
        await runner.setup()
    except BaseException:
        sock.close()
        raise
    gate = ConnectionGate(limits.max_connections, registry)
    return ClientListener(runner, sock, gate, limits, ssl_context)


__all__ = [
    "CLOSE_GRACE",
    "ClientLimits",
    "ClientListener",
    "ConnectionGate",
    "FD_RESERVE",
    "FinalResponse",
    "connection_cap",
    "raise_nofile_limit",
    "start_client_listener",
]
