"""Listening for TLS connections: accept plain TCP first, start TLS after.

asyncio's ``start_server(ssl=...)`` runs the TLS handshake before our code
sees the connection, so a stranger who opens connections and never starts
TLS would hold a descriptor each outside ``max_inbound``, for the whole
TLS handshake timeout.  Starting TLS on an accepted *stream* does not work
either: the ClientHello may already sit in the plain stream's buffer (under
uvloop it always does: uvloop starts reading right after
``connection_made``, even if the protocol paused), and the handshake stalls.

So :class:`TlsListener` accepts raw sockets itself and hands each to
:mod:`.inbound`, which counts it against the cap and only then calls
:func:`upgrade`: ``loop.connect_accepted_socket`` builds the stream on the
socket with TLS from its first byte, within the handshake timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from .framed import new_protocol
from .greeting import READ_LIMIT, Streams

# Pending connections the kernel queues per listening socket (asyncio's default).
_BACKLOG = 100


class TlsListener:
    """Listening sockets whose accepted connections go to ``on_socket`` raw."""

    def __init__(
        self, on_socket: Callable[[socket.socket], Coroutine[Any, Any, None]], log: logging.Logger
    ) -> None:
        self._on_socket = on_socket
        self._log = log
        self._socks: list[socket.socket] = []
        self._loops: list[asyncio.Task[None]] = []
        # Tasks of accepted sockets, held until they end (the loop keeps only weak references).
        self._conns: set[asyncio.Task[None]] = set()

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Bind every address ``host`` resolves to, as asyncio's
        ``start_server`` does; returns the first bound (host, port)."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        try:
            for family, _, _, _, addr in dict.fromkeys(infos):
                sock = socket.create_server(addr[:2], family=family, backlog=_BACKLOG)
                sock.setblocking(False)
                self._socks.append(sock)
        except BaseException:
            self.close()
            raise
        for sock in self._socks:
            self._loops.append(loop.create_task(self._accept_loop(sock)))
        name = self._socks[0].getsockname()
        return name[0], name[1]

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as e:
                # Out of descriptors, say: keep listening, a little later.
                self._log.warning("accepting a connection failed: %r", e)
                await asyncio.sleep(0.1)
                continue
            _set_nodelay(conn)
            task = loop.create_task(self._on_socket(conn))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (not the accepted ones)."""
        for t in self._loops:
            t.cancel()
        for sock in self._socks:
            sock.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._loops, return_exceptions=True)


def _set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off, as asyncio's own servers do: replies and
    snapshot results are small writes that must not wait for an ACK.
    (asyncio's transports do it only for sockets whose ``proto`` is TCP, and
    ``socket.create_server`` leaves it 0; uvloop does it always.)"""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def upgrade(sock: socket.socket, context: ssl.SSLContext, timeout: float) -> Streams:
    """Server-side TLS on an accepted socket, then asyncio streams over it.
    Raises ``ssl.SSLError``, ``OSError`` or ``TimeoutError`` if the TLS
    handshake fails."""
    loop = asyncio.get_running_loop()
    # The handshake reads a stream; a peer connection then parses its frames
    # in the socket callback (framed.PeerProtocol).
    protocol = new_protocol(READ_LIMIT)
    reader = protocol.handshake_reader
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol, sock, ssl=context, ssl_handshake_timeout=timeout
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)
