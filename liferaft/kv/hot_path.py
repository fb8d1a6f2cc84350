"""The hot routes of the client port, without aiohttp's router and middleware.

``PUT``, ``GET`` and ``DELETE /v1/kv/{key}`` are most of what a KV client
sends, and at one connection a write's latency is set by CPU (issue 18):
resolving the route, building the middleware chain and running three
middlewares (errors, token, Origin; the console's CORS preflight too) cost
the leader tens of microseconds per request.  :class:`HotPath` is the
request handler of the client port's aiohttp server (``web.Server``, the
low-level server under the application): it answers the hot routes itself
and hands every other request to the application, unchanged.

aiohttp still parses every request, keeps connections alive, pipelines and
applies the header timeout and the body size cap (the request object is
the application's own, so ``client_max_size`` holds); the listener's
connection cap and send timeout are around it as before.  The hot routes
keep every rule of the contract (docs/kv.md, "HTTP API"), in the same code
as the routed handlers: the bearer token (401), percent-decoding of the key
(400 for a bad escape), the body deadline (408, and the connection
closes), the size cap (413), JSON error bodies, the access log when on.

What it leaves to the application, so the rule lives in one place: a
request that carries ``Origin`` (a browser's: the cross-site write check
and the console's CORS headers), ``Expect`` (``100-continue``), or a path
that is not a key.  ``tests/kv/test_hot_path.py`` sends the same requests
down both paths and compares the answers.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import hdrs, web

from .access_log import CLIENT_CLOSED, log_request

_PREFIX = "/v1/kv/"
_KEY_ROUTE = re.compile(r"/v1/kv/.+")  # as "/v1/kv/{key:.+}" (kv/server.py)
_HOT_METHODS = frozenset({"GET", "PUT", "DELETE"})
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
KeyHandler = Callable[[web.Request], Awaitable[web.Response]]


class KVApi(Protocol):
    """What the hot path uses of the KV API (``KVServer``, kv/server.py)."""

    access_log: bool

    def refuse_token(self, request: web.BaseRequest) -> web.Response | None: ...

    def refuse_expect(self, request: web.BaseRequest) -> web.Response | None: ...

    def render_error(self, exc: Exception, request: web.BaseRequest) -> web.Response | None: ...

    async def get(self, request: web.Request) -> web.Response: ...

    async def put(self, request: web.Request) -> web.Response: ...

    async def delete(self, request: web.Request) -> web.Response: ...


#: The KV API an application was built by (``KVServer.app()`` sets it).
KV_API: web.AppKey[KVApi] = web.AppKey("liferaft_kv_api")


class HotPath:
    """The client port's request handler: the hot routes here, the rest to
    ``routed`` (the application's own handler)."""

    def __init__(self, server: KVApi, routed: Handler) -> None:
        self._server = server
        self._routed = routed
        self._handlers: dict[str, KeyHandler] = {
            "GET": server.get,
            "PUT": server.put,
            "DELETE": server.delete,
        }

    def is_hot(self, request: web.BaseRequest) -> bool:
        """Whether ``request`` is answered here (else by the application)."""
        if request.method not in _HOT_METHODS:
            return False
        if not request.raw_path.startswith(_PREFIX):
            return False
        # The key routes' own pattern, matched as the router matches it: the
        # raw target would take a key from behind a "#" ("/v1/kv/#x" has
        # none) or with a newline in it (".+" takes none), which the router
        # answers 404.
        if _KEY_ROUTE.fullmatch(request.rel_url.path_safe) is None:
            return False  # not a key (``/v1/kv/`` alone is not one either)
        headers = request.headers
        return hdrs.ORIGIN not in headers and hdrs.EXPECT not in headers

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        if not self.is_hot(request):
            if hdrs.EXPECT in request.headers:
                # aiohttp's router answers "100 Continue" before the
                # middlewares run, so the token is checked here first.
                refused = self._server.refuse_expect(request)
                if refused is not None:
                    if self._server.access_log:  # as the middleware would
                        log_request(request, refused.status, time.perf_counter())
                    return refused
            return await self._routed(request)
        assert isinstance(request, web.Request)  # made by the application
        if not self._server.access_log:
            return await self._answer(request)
        t0 = time.perf_counter()
        status = 500
        try:
            resp = await self._answer(request)
            status = resp.status
            return resp
        except asyncio.CancelledError:
            status = CLIENT_CLOSED  # as the middleware logs a client gone
            raise
        finally:
            log_request(request, status, t0)

    async def _answer(self, request: web.Request) -> web.Response:
        srv = self._server
        refused = srv.refuse_token(request)
        if refused is not None:
            return refused
        try:
            return await self._handlers[request.method](request)
        except Exception as exc:
            resp = srv.render_error(exc, request)
            if resp is None:
                raise  # aiohttp answers 500, as for a routed handler
            return resp


def client_handler(app: web.Application) -> Handler:
    """The request handler to serve ``app`` with: a :class:`HotPath` when a
    KV API built it (``KV_API``), else the application's own."""
    routed: Handler = app._handle  # type: ignore[assignment]
    server = app.get(KV_API)
    return routed if server is None else HotPath(server, routed)


class ClientRunner(web.AppRunner):
    """``web.AppRunner`` whose server hands requests to :func:`client_handler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.request_handler = client_handler(self.app)
        return server


__all__ = ["KV_API", "ClientRunner", "HotPath", "client_handler"]
