"""The liferaft-kv HTTP API: thin aiohttp adapters over the KV service.

Each handler parses the request (path, query, JSON body), calls one
:class:`~liferaft.kv.service.KVService` method and renders what it returns;
the rules live in the service, so gRPC and the console get the same ones.
The contract is the table in docs/kv.md.  What is HTTP's alone: the bearer
token (401), the body read deadline (408), the body size cap (413 before
parsing), percent-encoded keys, and JSON's null-versus-absent conditions.

Errors render as liferaft/kv/http_util.py says.  The routes of
coordination (ranges, transactions, watch, leases) are in
liferaft/kv/server_coord.py.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgspec
from aiohttp import web

from liferaft.runtime import Node

from .access_log import access_log
from .errors import KVBadRequestError, KVError
from .hot_path import KV_API
from .http_util import (
    ApiError,
    decode_body,
    error_response,
    http_status,
    json_response,
    query_int,
    read_within,
)
from .listener import DEFAULT_BODY_TIMEOUT, FinalResponse
from .machine import KVMachine
from .metrics import Metrics
from .mvcc.codec import SessionRef
from .origins import foreign_write, member_origins
from .server_coord import CoordinationRoutes
from .service import (
    DEFAULT_MAX_LIST_BYTES,
    DEFAULT_MAX_VALUE,
    MAX_SEQ,
    AddMemberRequest,
    DeleteRequest,
    KVService,
    PutRequest,
    session_ref,
)

_OPEN_ROUTES = ("/healthz", "/readyz")
# A "%" not followed by two hex digits: urllib would keep it as a literal
# "%", so "%zz" and "%25zz" would name the same key.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_UNSET = msgspec.UNSET
_json = json_response
_error = error_response
_decode = decode_body


class DeleteBody(msgspec.Struct, forbid_unknown_fields=True):
    """The fields every write may carry: its conditions and its session."""

    # UNSET (absent) is "no condition"; an explicit null is refused, since a
    # client sending "if_value": null may well mean "only if absent".
    if_value: str | None | msgspec.UnsetType = _UNSET
    if_revision: int | None | msgspec.UnsetType = _UNSET
    request_id: str | None = None  # retired: refused with a pointer to sessions
    session: int | None = None
    seq: int | None = None
    lowest_pending: int | None = None


class PutBody(DeleteBody, kw_only=True):
    value: str
    lease: int = 0


class OpenSessionBody(msgspec.Struct, forbid_unknown_fields=True):
    pass


class MemberBody(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    peer_addr: str
    client_addr: str = ""
    voter: bool = True


class TransferBody(msgspec.Struct, forbid_unknown_fields=True):
    to: str | None = None


def _conditions(body: PutBody | DeleteBody) -> tuple[str | None, int | None]:
    """``(if_value, if_revision)``, None where absent.  An explicit null is a
    400: it is not "no condition", and not "only if absent" either."""
    for name in ("if_value", "if_revision"):
        if getattr(body, name) is None:
            raise KVBadRequestError(
                f"{name} is null: leave it out for no condition, or send "
                '"if_revision": 0 to write only if the key does not exist'
            )
    if_value = None if isinstance(body.if_value, msgspec.UnsetType) else body.if_value
    if_revision = None if isinstance(body.if_revision, msgspec.UnsetType) else body.if_revision
    return if_value, if_revision


def _session(body: PutBody | DeleteBody) -> SessionRef | None:
    if body.request_id is not None:
        raise KVBadRequestError(
            "request_id is no longer accepted (a forgotten id could not be told from "
            "a new one): open a session with POST /v1/sessions and send session, seq "
            "and lowest_pending"
        )
    return session_ref(body.session, body.seq, body.lowest_pending)


class FrontEnd(Protocol):
    """Another protocol served over the node's KV service (etcd's v3 API,
    liferaft/etcd/front.py): routes on the client port, and any listener
    of its own.  Built by the caller's factory, so kv never imports it."""

    #: Path prefixes on the client port that authenticate themselves.
    own_auth: tuple[str, ...]

    def add_routes(self, app: web.Application) -> None: ...

    async def start(self) -> None:
        """Start its own listeners; ServeError (one line) if it cannot."""

    async def stop(self) -> None: ...


class KVServer(CoordinationRoutes):
    """The HTTP front of one node's :class:`KVService`; ``app()`` builds the
    aiohttp application.

    ``KVServer(service, token=..., body_timeout=...)``.  The older form,
    ``KVServer(node, machine, client_addr=..., ...)``, builds the service
    itself and starts and closes it with the application; it stays for one
    release."""

    def __init__(
        self,
        service: KVService | Node,
        store: KVMachine | None = None,
        *,
        token: str | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        client_addr: str = "",
        max_value: int = DEFAULT_MAX_VALUE,
        timeout: float = 5.0,
        max_list_bytes: int = DEFAULT_MAX_LIST_BYTES,
        ssl_client: Any = None,  # unused: nothing is proxied over HTTP any more
        access_log: bool = False,
        front_ends: Sequence[FrontEnd] = (),
    ) -> None:
        self.front_ends = list(front_ends)
        self._own_auth = tuple(p for f in self.front_ends for p in f.own_auth)
        self._owns_service = not isinstance(service, KVService)
        if not isinstance(service, KVService):
            if store is None:
                raise TypeError("KVServer(node, machine, ...) needs the machine")
            service = KVService(
                service,
                store,
                client_addr=client_addr,
                max_value=max_value,
                timeout=timeout,
                max_list_bytes=max_list_bytes,
            )
        self.service = service
        self.token = token
        self.body_timeout = body_timeout
        self.access_log = access_log  # one line per request (kv/access_log.py)

    @property
    def metrics(self) -> Metrics:
        return self.service.metrics

    @property
    def max_value(self) -> int:
        return self.service.max_value

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[*([access_log] if self.access_log else []), self._errors, self._auth],
            # JSON and escapes cost a value's size again at most: past this the
            # body cannot hold a legal value, and aiohttp answers 413.
            client_max_size=2 * self.max_value + 64 * 1024,
        )
        app[KV_API] = self  # the client port answers the key routes directly
        self.add_coordination_routes(app)
        r = app.router
        r.add_get("/v1/kv/{key:.+}", self.get)
        r.add_put("/v1/kv/{key:.+}", self.put)
        r.add_delete("/v1/kv/{key:.+}", self.delete)
        r.add_post("/v1/sessions", self.open_session)
        r.add_get("/v1/status", self.status)
        r.add_get("/v1/members", self.members)
        r.add_post("/v1/members", self.add_member)
        r.add_delete("/v1/members/{id}", self.remove_member)
        r.add_post("/v1/members/{id}/promote", self.promote_member)
        r.add_post("/v1/leader/transfer", self.transfer)
        r.add_post("/v1/snapshot", self.snapshot)
        r.add_get("/v1/snapshot", self.snapshot_download)
        r.add_get("/metrics", self.metrics_route)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        for front in self.front_ends:
            front.add_routes(app)
        if self._owns_service:
            app.on_startup.append(self._on_startup)
            app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        await self.service.start()

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.service.close()

    # -- middleware ---------------------------------------------------------------------

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            resp = self.render_error(exc, request)
            if resp is None:
                raise
            return resp

    @staticmethod
    def render_error(exc: Exception, request: web.BaseRequest) -> web.Response | None:
        """The JSON answer to ``exc`` raised by a handler (None: not ours to
        render; aiohttp answers 500).  The routed handlers and the hot path
        (liferaft/kv/hot_path.py) both answer through this."""
        if isinstance(exc, KVError):
            return _error(http_status(exc), exc.code, str(exc), **exc.extra)
        if isinstance(exc, ApiError):
            resp = _error(exc.status, exc.code, str(exc), **exc.extra)
            if exc.status == 408:
                # The connection is mid-body: it ends with this answer
                # (kv/listener.py) rather than parse the rest as a new
                # request, or read it for aiohttp's 10 s of lingering.
                return FinalResponse(body=resp.body, status=408, content_type=resp.content_type)
            return resp
        if isinstance(exc, web.HTTPRequestEntityTooLarge):
            return _error(413, "too_large", f"request body too large ({exc.text})")
        if isinstance(exc, web.HTTPNotFound):
            return _error(404, "not_found", f"no route {request.method} {request.path}")
        if isinstance(exc, web.HTTPMethodNotAllowed):
            return _error(405, "bad_request", f"method {request.method} not allowed here")
        if isinstance(exc, web.HTTPException):
            return _error(exc.status, "bad_request", exc.reason)
        return None

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        foreign = foreign_write(request, self._origins)
        if foreign is not None:
            # A web page's write, cross-site (liferaft/kv/origins.py): with
            # no token nothing else would stop it.
            return _error(
                403,
                "forbidden_origin",
                f"refused a {request.method} from the web page at {foreign[:100]!r}: only "
                "the cluster's own pages may change it (docs/console.md, Trust)",
            )
        refused = self.refuse_token(request)
        return refused if refused is not None else await handler(request)

    def refuse_token(self, request: web.BaseRequest) -> web.Response | None:
        """The 401 for a request that needs the bearer token and lacks it;
        None when it may go on."""
        if self.token is None:
            return None
        if request.path in _OPEN_ROUTES or request.path.startswith(self._own_auth):
            return None
        got = request.headers.get("Authorization", "")
        want = "Bearer " + self.token
        # A header that is not UTF-8 arrives with surrogates: never raise on it.
        if not hmac.compare_digest(got.encode(errors="surrogatepass"), want.encode()):
            return _error(401, "unauthorized", "a valid bearer token is required")
        return None

    def refuse_expect(self, request: web.BaseRequest) -> web.Response | None:
        """For a request with ``Expect`` (100-continue), before aiohttp's
        router invites its body: the 401 if it lacks the token, as the last
        answer on its connection (the body it would send next is never
        read), else None."""
        refused = self.refuse_token(request)
        if refused is None:
            return None
        return FinalResponse(body=refused.body, status=401, content_type=refused.content_type)

    def _origins(self) -> set[str]:
        return member_origins(self.service.node, self.service.client_addr)

    # -- parsing ------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        """The request body, read within ``body_timeout`` (a stranger must not
        hold a connection by trickling a body it announced)."""
        try:
            return await read_within(request, self.body_timeout)
        except TimeoutError as exc:
            raise ApiError(
                408,
                "request_timeout",
                f"the request body did not arrive within {self.body_timeout:g} s; nothing applied",
            ) from exc

    @staticmethod
    def _key(request: web.Request) -> str:
        """The key in the path, percent-decoded (the service checks it)."""
        # The request target as sent: yarl's rel_url re-quotes a bad escape
        # ("%zz" becomes "%25zz"), which would hide it.
        target = request.raw_path.split("?", 1)[0]
        if not target.startswith("/v1/kv/"):
            raise KVBadRequestError("the request target must be a path")
        raw = target[len("/v1/kv/") :]
        if _BAD_ESCAPE.search(raw):
            raise KVBadRequestError("malformed percent-encoding in the key")
        try:
            return urllib.parse.unquote(raw, errors="strict")
        except UnicodeDecodeError as exc:
            raise KVBadRequestError("the key is not UTF-8") from exc

    # -- keys ---------------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.Response:
        q = request.query
        c = q.get("consistency", "linearizable")
        return _json(await self.service.get(self._key(request), c, query_int(q, "revision")))

    async def put(self, request: web.Request) -> web.Response:
        key = self._key(request)
        body: PutBody = _decode(await self._body(request), PutBody)
        if_value, if_revision = _conditions(body)
        req = PutRequest(
            key=key,
            value=body.value,
            lease=body.lease,
            if_value=if_value,
            if_revision=if_revision,
            session=_session(body),
        )
        return _json(await self.service.put(req))

    async def delete(self, request: web.Request) -> web.Response:
        key = self._key(request)
        raw = await self._body(request)
        body = _decode(raw, DeleteBody) if raw.strip() else DeleteBody()
        if_value, if_revision = _conditions(body)
        req = DeleteRequest(
            key=key, if_value=if_value, if_revision=if_revision, session=_session(body)
        )
        return _json(await self.service.delete(req))

    async def open_session(self, request: web.Request) -> web.Response:
        raw = await self._body(request)
        if raw.strip():
            _decode(raw, OpenSessionBody)  # no fields: anything else is a 400
        return _json({"session": await self.service.open_session()})

    # -- cluster ------------------------------------------------------------------------

    async def status(self, request: web.Request) -> web.Response:
        return _json(self.service.status())

    async def members(self, request: web.Request) -> web.Response:
        return _json({"members": self.service.members()})

    async def add_member(self, request: web.Request) -> web.Response:
        b: MemberBody = _decode(await self._body(request), MemberBody)
        req = AddMemberRequest(
            id=b.id, peer_addr=b.peer_addr, client_addr=b.client_addr, voter=b.voter
        )
        return _json({"members": await self.service.add_member(req)})

    async def remove_member(self, request: web.Request) -> web.Response:
        return _json({"members": await self.service.remove_member(request.match_info["id"])})

    async def promote_member(self, request: web.Request) -> web.Response:
        return _json({"members": await self.service.promote_member(request.match_info["id"])})

    async def transfer(self, request: web.Request) -> web.Response:
        raw = await self._body(request)
        body = _decode(raw, TransferBody) if raw.strip() else TransferBody()
        return _json({"leader": await self.service.transfer(body.to)})

    async def snapshot(self, request: web.Request) -> web.Response:
        return _json({"index": await self.service.snapshot()})

    async def snapshot_download(self, request: web.Request) -> web.StreamResponse:
        """A consistent copy of this node's store (``liferaft snapshot save``):
        the bytes of ``checkpoint_chunks()``, as Raft sends a follower and as
        etcd's Maintenance.Snapshot streams (liferaft/kv/rebuild.py restores
        it).  Read off the event loop; a client that goes away ends the copy."""
        chunks = self.service.machine.checkpoint_chunks()
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        try:
            await resp.prepare(request)
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                await resp.write(chunk)
            await resp.write_eof()
        finally:
            # Ends the copy (and its read transaction) if the client left.
            close = getattr(chunks, "close", None)
            if close is not None:
                await asyncio.to_thread(close)
        return resp

    # -- operations ---------------------------------------------------------------------

    async def metrics_route(self, request: web.Request) -> web.Response:
        body, ctype = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        why = self.service.readiness()
        if why is not None:
            return _error(503, "not_ready", why)
        return _json({"ok": True})


__all__ = [
    "DEFAULT_MAX_LIST_BYTES",
    "DEFAULT_MAX_VALUE",
    "MAX_SEQ",
    "ApiError",
    "KVServer",
    "http_status",
]
