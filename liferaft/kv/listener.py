"""The client port's listener: how many connections it holds, and for how long.

The HTTP API is open to anyone who can reach the client port (the token is
checked only once a request has arrived), so the port itself must bound what
a stranger can hold (DESIGN.md, "Trust model"):

- **Header timeout.** A connection must deliver a complete request head
  within ``header_timeout`` of being accepted (or of its previous response,
  for a kept-alive connection), else it is closed.  aiohttp arms its
  keep-alive timer when a connection is made (3.14+), and that timer closes a
  connection whose handler is still waiting for a request head: exactly a
  header timeout, so :func:`start_client_listener` sets ``keepalive_timeout``
  to it.  A TLS handshake gets the same bound.
- **Body timeout.** A request body must arrive within ``body_timeout``
  (enforced where the body is read: ``KVServer``).
- **Connection cap.** At most ``max_connections`` are open at once, counted
  from accept to close (TLS handshakes included); one more is closed at once
  and counted in ``liferaft_http_connections_refused_total``.
- **Descriptors for storage.** :func:`raise_nofile_limit` lifts the soft
  ``RLIMIT_NOFILE`` to the hard limit, and :func:`connection_cap` keeps
  :data:`FD_RESERVE` descriptors out of the cap, so client connections can
  never take the descriptor a WAL, snapshot or hard-state write needs.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

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


@dataclass(frozen=True)
class ClientLimits:
    """What one client connection may hold (seconds, count)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


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


def connection_cap(requested: int, nofile: int, reserve: int = FD_RESERVE) -> int:
    """The client connection cap: ``requested``, lowered so that ``reserve``
    descriptors of ``nofile`` stay free for storage and peers.  ValueError
    when not even one connection fits."""
    room = nofile - reserve
    if room < 1:
        raise ValueError(
            f"the open-file limit is {nofile}, and {reserve} descriptors are kept for "
            "storage and peers: raise `ulimit -n`"
        )
    return min(requested, room)


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


class _Gated(asyncio.Protocol):
    """Stands between one accepted socket and aiohttp's request handler: it
    holds a slot of the gate from accept to close, and does the TLS handshake
    itself (``loop.start_tls``), so a handshake that never finishes holds a
    slot too, and for at most ``handshake_timeout``."""

    def __init__(
        self,
        gate: ConnectionGate,
        make_handler: Callable[[], asyncio.Protocol],
        tls: ssl.SSLContext | None,
        handshake_timeout: float,
    ) -> None:
        self._gate = gate
        self._make_handler = make_handler
        self._tls = tls
        self._handshake_timeout = handshake_timeout
        self._inner: asyncio.Protocol | None = None
        self._admitted = False
        self._lost = False
        self._early: list[bytes] = []  # decrypted before the handler existed
        self._handshake: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._gate.admit():
            transport.abort()  # type: ignore[attr-defined]
            return
        self._admitted = True
        if self._tls is None:
            self._open(transport)
            return
        # Nothing may be read before start_tls takes the transport over.
        transport.pause_reading()  # type: ignore[attr-defined]
        self._handshake = asyncio.ensure_future(self._start_tls(transport))

    async def _start_tls(self, raw: Any) -> None:
        loop = asyncio.get_running_loop()
        assert self._tls is not None
        try:
            tls_transport = await loop.start_tls(
                raw,
                self,
                self._tls,
                server_side=True,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            log.debug("client TLS handshake failed: %s", exc)
            raw.abort()
            self._release()
            return
        if tls_transport is None or self._lost:
            # Closed during the handshake without an error.
            raw.abort()
            self._release()
            return
        self._open(tls_transport)

    def _open(self, transport: asyncio.BaseTransport) -> None:
        self._inner = self._make_handler()
        self._inner.connection_made(transport)
        for data in self._early:
            self._inner.data_received(data)
        self._early.clear()

    def _release(self) -> None:
        if self._admitted:
            self._admitted = False
            self._gate.release()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            self._early.append(data)
        else:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._release()
        if self._inner is not None:
            self._inner.connection_lost(exc)


class ClientListener:
    """The client port: an aiohttp app behind the gate and the timeouts.
    Build it with :func:`start_client_listener`; ``close()`` stops it."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server, gate: ConnectionGate):
        self.runner = runner
        self.server = server
        self.gate = gate

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self.server.close()
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
    # keepalive_timeout is aiohttp's deadline for a request head, from accept
    # or from the previous response (see the module docstring).
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=limits.header_timeout)
    await runner.setup()
    handler_factory = runner.server
    assert handler_factory is not None
    gate = ConnectionGate(limits.max_connections, registry)
    loop = asyncio.get_running_loop()
    try:
        server = await loop.create_server(
            lambda: _Gated(gate, handler_factory, ssl_context, limits.header_timeout),
            host,
            port,
            reuse_address=True,
        )
    except BaseException:
        await runner.cleanup()
        raise
    return ClientListener(runner, server, gate)


__all__ = [
    "ClientLimits",
    "ClientListener",
    "ConnectionGate",
    "FD_RESERVE",
    "connection_cap",
    "raise_nofile_limit",
    "start_client_listener",
]
