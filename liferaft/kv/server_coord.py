"""The HTTP routes of coordination: ranges, transactions, compaction,
watch and leases (docs/kv.md, "HTTP API").  Thin adapters, as in
liferaft/kv/server.py: parse, call one :class:`KVService` method, render.

============================  ==========================================
route                         service call
============================  ==========================================
``GET /v1/kv``                ``range`` (prefix, or start and end;
                              revision, limit, keys_only, count_only)
``POST /v1/txn``              ``txn``
``POST /v1/compact``          ``compact``
``GET /v1/watch``             ``watch``, streamed (liferaft/kv/server_watch.py)
``POST /v1/lease``            ``leases.grant``
``GET /v1/lease``             ``leases.all``
``GET /v1/lease/{id}``        ``leases.info`` (``?keys=true`` lists them)
``POST /v1/lease/{id}/keepalive``  ``leases.keepalive``
``DELETE /v1/lease/{id}``     ``leases.revoke``
============================  ==========================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import msgspec
from aiohttp import web

from . import server_watch
from .errors import KVBadRequestError
from .http_util import decode_body, json_response, query_bool, query_int
from .requests import MAX_LIMIT, KeySpan, TxnRequest
from .service import KVService, RangeRequest
from .watch import Watcher


class CompactBody(msgspec.Struct, forbid_unknown_fields=True):
    revision: int


class GrantBody(msgspec.Struct, forbid_unknown_fields=True):
    ttl: int
    id: int = 0


def span_of(q: Mapping[str, str], *, default_all: bool) -> KeySpan:
    """The keys a query names: ``key``, ``prefix``, or ``start``/``end``."""
    names = ("key", "prefix", "start", "end")
    got = {n: q[n] for n in names if n in q}
    if not got and default_all:
        return KeySpan(prefix="")
    return KeySpan(**got)


class CoordinationRoutes:
    """The routes above, for a server that has ``service`` and ``_body``."""

    service: KVService
    _body: Callable[[web.Request], Awaitable[bytes]]
    _watch_streams: set[Watcher]

    def add_coordination_routes(self, app: web.Application) -> None:
        """The routes, and the shutdown hook that ends open watch streams."""
        self._watch_streams = set()
        app.on_shutdown.append(self._stop_watches)
        r = app.router
        r.add_get("/v1/kv", self.range)
        r.add_post("/v1/txn", self.txn)
        r.add_post("/v1/compact", self.compact)
        r.add_get("/v1/watch", self.watch)
        r.add_post("/v1/lease", self.lease_grant)
        r.add_get("/v1/lease", self.lease_list)
        r.add_get("/v1/lease/{id}", self.lease_info)
        r.add_post("/v1/lease/{id}/keepalive", self.lease_keepalive)
        r.add_delete("/v1/lease/{id}", self.lease_revoke)

    async def range(self, request: web.Request) -> web.Response:
        q = request.query
        limit = query_int(q, "limit", MAX_LIMIT)
        if not 1 <= limit <= MAX_LIMIT:
            raise KVBadRequestError(f"limit must be in 1..{MAX_LIMIT}")
        req = RangeRequest(
            span=span_of(q, default_all=True),
            revision=query_int(q, "revision"),
            limit=limit,
            keys_only=query_bool(q, "keys_only"),
            count_only=query_bool(q, "count_only"),
            consistency=q.get("consistency", "linearizable"),
        )
        return json_response(await self.service.range(req))

    async def txn(self, request: web.Request) -> web.Response:
        req: TxnRequest = decode_body(await self._body(request), TxnRequest)
        return json_response(await self.service.txn(req))

    async def compact(self, request: web.Request) -> web.Response:
        body: CompactBody = decode_body(await self._body(request), CompactBody)
        return json_response(await self.service.compact(body.revision))

    async def watch(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        span = span_of(q, default_all=False)
        watcher, revision = self.service.watch(
            span, query_int(q, "start_revision"), query_bool(q, "prev_kv")
        )
        return await server_watch.stream(request, watcher, revision, self._watch_streams)

    async def _stop_watches(self, app: web.Application) -> None:
        server_watch.stop_all(self._watch_streams)

    # -- leases ---------------------------------------------------------------------------

    @staticmethod
    def _lease_id(request: web.Request) -> int:
        raw = request.match_info["id"]
        try:
            return int(raw)
        except ValueError:
            raise KVBadRequestError(f"a lease id is a decimal integer, not {raw!r}") from None

    async def lease_grant(self, request: web.Request) -> web.Response:
        body: GrantBody = decode_body(await self._body(request), GrantBody)
        return json_response(await self.service.leases.grant(body.ttl, body.id))

    async def lease_list(self, request: web.Request) -> web.Response:
        return json_response({"leases": await self.service.leases.all()})

    async def lease_info(self, request: web.Request) -> web.Response:
        keys = query_bool(request.query, "keys")
        return json_response(await self.service.leases.info(self._lease_id(request), keys))

    async def lease_keepalive(self, request: web.Request) -> web.Response:
        return json_response(await self.service.leases.keepalive(self._lease_id(request)))

    async def lease_revoke(self, request: web.Request) -> web.Response:
        rev = await self.service.leases.revoke(self._lease_id(request))
        return json_response({"revision": rev})
