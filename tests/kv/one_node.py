"""One liferaft-kv node in this process (a single-voter cluster over TCP on
127.0.0.1) behind the real client listener, for tests of the client port:
input checks, limits, paging and TLS."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiohttp

from liferaft.kv.listener import ClientLimits, ClientListener, start_client_listener
from liferaft.kv.machine import KVMachine
from liferaft.kv.server import KVServer
from tests.runtime.cluster import TcpCluster


class OneNode:
    """``start()`` it, call ``url(path)``, ``stop()`` it.  ``server_kw`` go to
    KVServer; ``limits`` and ``ssl_context`` to the listener."""

    def __init__(
        self,
        tmp: Path,
        *,
        limits: ClientLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        **server_kw: Any,
    ) -> None:
        self.c = TcpCluster(tmp, 1, sm_at=KVMachine)
        self.limits = limits or ClientLimits()
        self.ssl_context = ssl_context
        self.server_kw = server_kw
        self.listener: ClientListener | None = None
        self.server: KVServer | None = None
        self.port = 0

    async def start(self) -> None:
        await self.c.start()
        node = self.c.nodes["n1"]
        # The port is not known yet; the placeholder is not a usable client
        # address, so it never enters the address book (nothing here needs it).
        self.server = KVServer(node, self.c.sms["n1"], client_addr="127.0.0.1:0", **self.server_kw)
        self.listener = await start_client_listener(
            self.server.app(),
            "127.0.0.1",
            0,
            self.limits,
            ssl_context=self.ssl_context,
            registry=self.server.metrics.registry,
        )
        self.port = self.listener.port
        await self.c.leader()

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.close()
        await self.c.stop()

    def url(self, path: str) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, Any]:
        """One request on a fresh connection (so it holds no slot after)."""
        kw: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
        conn = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=conn) as http,
            http.request(method, self.url(path), **kw) as r,
        ):
            return r.status, await r.json(content_type=None)

    async def raw(self, data: bytes, read_timeout: float = 10.0) -> bytes:
        """Send ``data`` on a new connection; everything the server answers
        until it closes (bounded by ``read_timeout``)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            async with asyncio.timeout(read_timeout):
                return await reader.read()
        finally:
            writer.close()
