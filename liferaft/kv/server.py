"""The liferaft-kv HTTP API (the contract is the table in docs/kv.md).

Every node serves every route.  Writes are proposed through the node, which
forwards them to the leader when this node is a follower; reads run on this
node's state after a ReadIndex round (``linearizable``), a leader lease
(``lease``) or at once (``stale``).

Error mapping, from the runtime's typed errors:

======================  ====  =============  ==========================
runtime error           HTTP  code           meaning
======================  ====  =============  ==========================
NotLeader, Stopped      503   no_leader      not proposed: retry is safe
Dropped                 503   no_leader      proposed, overwritten by a new
                                             leader, never applied: safe
StorageFailed           503   storage_failed not proposed: retry later
Timeout                 504   timeout        outcome unknown: retry with
                                             the same session and ``seq``
======================  ====  =============  ==========================

A write in a session whose outcome or session the store has forgotten is
answered 504 ``session_expired``: not applied now, unknown if an earlier
attempt was (see liferaft.kv.state).  A write whose ``seq`` already holds a
different request's outcome is 409 ``seq_reused``, not applied.

A 503 always carries ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from liferaft.runtime import (
    Dropped,
    MembershipError,
    Node,
    NodeError,
    NotLeader,
    Stopped,
    StorageFailed,
    Timeout,
)

from .listener import DEFAULT_BODY_TIMEOUT
from .metrics import Metrics
from .state import (
    KV,
    MAX_KEY_BYTES,
    Delete,
    KVStore,
    Opened,
    OpenSession,
    Put,
    SessionRef,
    SetAddr,
    WriteResult,
    as_json,
    encode_command,
)

log = logging.getLogger("liferaft.kv")

DEFAULT_MAX_VALUE = 1 << 20
MAX_SEQ = (1 << 63) - 1  # session ids and sequence numbers fit an int64
DEFAULT_MAX_LIST_BYTES = 4 << 20
MAX_LIST = 10_000
_CONSISTENCY = ("linearizable", "lease", "stale")
_OPEN_ROUTES = ("/healthz", "/readyz")
# A "%" not followed by two hex digits: urllib would keep it as a literal
# "%", so "%zz" and "%25zz" would name the same key.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")

# A revision is a log index: an unsigned 64-bit number (msgpack's largest),
# so anything larger is refused as input, never met when encoding.  (Checked
# by hand: msgspec's bounds stop at int64.)
MAX_REVISION = 2**64 - 1
_UNSET = msgspec.UNSET


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


class OpenSessionBody(msgspec.Struct, forbid_unknown_fields=True):
    pass


class MemberBody(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    peer_addr: str
    client_addr: str = ""
    voter: bool = True


class TransferBody(msgspec.Struct, forbid_unknown_fields=True):
    to: str | None = None


class ApiError(Exception):
    """An error answer: status, code and message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return _json({"error": code, "message": message, **extra}, status, headers)


def _text(value: Any) -> str:
    """A committed member field as the string the API promises: a raw change
    can commit any JSON value there (reported in /v1/status), and clients
    (the CLI, `serve --join`) must not fail on it."""
    if value is None:
        return ""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _decode(body: bytes, typ: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body, type=typ)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ApiError(400, "bad_request", f"bad JSON body: {exc}") from exc


def _node_error(exc: NodeError) -> ApiError:
    if isinstance(exc, NotLeader):
        return ApiError(503, "no_leader", f"no leader: {exc}; not proposed, safe to retry")
    if isinstance(exc, Dropped):
        return ApiError(503, "no_leader", f"{exc}; not applied, safe to retry")
    if isinstance(exc, StorageFailed):
        return ApiError(503, "storage_failed", f"{exc}; not proposed")
    if isinstance(exc, Stopped):
        return ApiError(503, "no_leader", f"{exc}; not proposed")
    if isinstance(exc, Timeout):
        return ApiError(504, "timeout", f"{exc}; the outcome is unknown")
    if isinstance(exc, MembershipError):
        return ApiError(409, "conflict", str(exc))
    return ApiError(400, "bad_request", str(exc))


class KVServer:
    """The HTTP front of one node.  ``app()`` builds the aiohttp application."""

    def __init__(
        self,
        node: Node,
        store: KVStore,
        *,
        client_addr: str,
        token: str | None = None,
        max_value: int = DEFAULT_MAX_VALUE,
        timeout: float = 5.0,
        ssl_client: Any = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        max_list_bytes: int = DEFAULT_MAX_LIST_BYTES,
    ) -> None:
        self.node = node
        self.store = store
        self.client_addr = client_addr
        self.token = token
        self.max_value = max_value
        self.timeout = timeout
        self.body_timeout = body_timeout
        self.max_list_bytes = max_list_bytes
        self.metrics = Metrics(node, store)
        self._ssl_client = ssl_client
        self._session: aiohttp.ClientSession | None = None
        self._announce: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors, self._auth],
            # JSON and escapes cost a value's size again at most: past this the
            # body cannot hold a legal value, and aiohttp answers 413.
            client_max_size=2 * self.max_value + 64 * 1024,
        )
        r = app.router
        r.add_get("/v1/kv", self.list_keys)
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
        r.add_get("/metrics", self.metrics_route)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._announce = asyncio.create_task(self._announce_addr())

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._announce is not None:
            self._announce.cancel()
            await asyncio.gather(self._announce, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _announce_addr(self) -> None:
        """Make our client address part of the replicated state (once it is
        not already), so every node can point clients at the leader."""
        delay = 0.2
        while self.store.addrs.get(self.node.id) != self.client_addr:
            if self.node.id in self.node.members:
                try:
                    await self.node.propose(encode_command(SetAddr(self.node.id, self.client_addr)))
                    continue
                except NodeError as exc:
                    log.debug("announcing the client address: %s", exc)
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)

    # -- middleware ---------------------------------------------------------------------

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            resp = _error(e.status, e.code, str(e), **e.extra)
            if e.status == 408:
                # The connection is mid-body: close it after this answer
                # rather than parse the rest as a new request.
                resp.force_close()
            return resp
        except NodeError as exc:
            err = _node_error(exc)
            return _error(err.status, err.code, str(err))
        except web.HTTPRequestEntityTooLarge as exc:
            return _error(413, "too_large", f"request body too large ({exc.text})")
        except web.HTTPNotFound:
            return _error(404, "not_found", f"no route {request.method} {request.path}")
        except web.HTTPMethodNotAllowed:
            return _error(405, "bad_request", f"method {request.method} not allowed here")
        except web.HTTPException as exc:
            return _error(exc.status, "bad_request", exc.reason)

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if self.token is not None and request.path not in _OPEN_ROUTES:
            got = request.headers.get("Authorization", "")
            want = "Bearer " + self.token
            if not hmac.compare_digest(got.encode(), want.encode()):
                return _error(401, "unauthorized", "a valid bearer token is required")
        return await handler(request)

    # -- keys ---------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> bytes:
        """The request body, read within ``body_timeout`` (a stranger must not
        hold a connection by trickling a body it announced)."""
        if request.content.is_eof():
            # Already here in full (the common case: a small body arrives
            # with its head): no timer to arm and cancel.
            return await request.read()
        try:
            async with asyncio.timeout(self.body_timeout):
                return await request.read()
        except TimeoutError as exc:
            raise ApiError(
                408,
                "request_timeout",
                f"the request body did not arrive within {self.body_timeout:g} s; nothing applied",
            ) from exc

    def _key(self, request: web.Request) -> str:
        # The request target as sent: yarl's rel_url re-quotes a bad escape
        # ("%zz" becomes "%25zz"), which would hide it.
        target = request.raw_path.split("?", 1)[0]
        if not target.startswith("/v1/kv/"):
            raise ApiError(400, "bad_request", "the request target must be a path")
        raw = target[len("/v1/kv/") :]
        if _BAD_ESCAPE.search(raw):
            raise ApiError(400, "bad_request", "malformed percent-encoding in the key")
        try:
            key = urllib.parse.unquote(raw, errors="strict")
        except UnicodeDecodeError as exc:
            raise ApiError(400, "bad_request", "the key is not UTF-8") from exc
        if not key:
            raise ApiError(400, "bad_request", "empty key")
        if len(key.encode()) > MAX_KEY_BYTES:
            raise ApiError(400, "bad_request", f"key longer than {MAX_KEY_BYTES} bytes")
        return key

    def _consistency(self, request: web.Request) -> str:
        c = request.query.get("consistency", "linearizable")
        if c not in _CONSISTENCY:
            choices = ", ".join(_CONSISTENCY)
            raise ApiError(400, "bad_request", f"consistency must be one of {choices}")
        return c

    async def get(self, request: web.Request) -> web.Response:
        key = self._key(request)
        c = self._consistency(request)
        kv = await self.node.read(lambda: self.store.get(key), consistency=c, timeout=self.timeout)
        if kv is None:
            raise ApiError(404, "not_found", f"no key {key!r}")
        return _json({"key": key, "value": kv.value, "revision": kv.revision})

    async def list_keys(self, request: web.Request) -> web.Response:
        """One page of keys under ``prefix``, from ``start`` (inclusive) on.
        A page stops at ``limit`` items or about ``max_list_bytes`` of keys
        and values; then ``next`` is the ``start`` of the following page."""
        prefix = request.query.get("prefix", "")
        start = request.query.get("start", "")
        try:
            limit = int(request.query.get("limit", str(MAX_LIST)))
        except ValueError as exc:
            raise ApiError(400, "bad_request", "limit must be an integer") from exc
        if not 1 <= limit <= MAX_LIST:
            raise ApiError(400, "bad_request", f"limit must be in 1..{MAX_LIST}")
        c = self._consistency(request)
        items, nxt, rev = await self.node.read(
            lambda: self.store.page(prefix, start, limit, self.max_list_bytes),
            consistency=c,
            timeout=self.timeout,
        )
        out: dict[str, Any] = {
            "items": [{"key": k, "value": v.value, "revision": v.revision} for k, v in items],
            "revision": rev,
        }
        if nxt is not None:
            out["next"] = nxt
        return _json(out)

    def _conditions(self, body: PutBody | DeleteBody) -> tuple[str | None, int | None]:
        """``(if_value, if_revision)``, None where absent.  An explicit null is
        a 400: it is not "no condition", and not "only if absent" either."""
        for name in ("if_value", "if_revision"):
            if getattr(body, name) is None:
                raise ApiError(
                    400,
                    "bad_request",
                    f"{name} is null: leave it out for no condition, or send "
                    '"if_revision": 0 to write only if the key does not exist',
                )
        if_value = None if body.if_value is _UNSET else body.if_value
        if_revision = None if body.if_revision is _UNSET else body.if_revision
        assert not isinstance(if_value, msgspec.UnsetType)
        assert not isinstance(if_revision, msgspec.UnsetType)
        if if_revision is not None and not 0 <= if_revision <= MAX_REVISION:
            raise ApiError(400, "bad_request", "if_revision must be in 0..2^64-1")
        return if_value, if_revision

    @staticmethod
    def _session_ref(body: PutBody | DeleteBody) -> SessionRef | None:
        """The write's session fields: all three or none (a plain write)."""
        if body.request_id is not None:
            raise ApiError(
                400,
                "bad_request",
                "request_id is no longer accepted (a forgotten id could not be told from "
                "a new one): open a session with POST /v1/sessions and send session, seq "
                "and lowest_pending",
            )
        fields = (body.session, body.seq, body.lowest_pending)
        if all(f is None for f in fields):
            return None
        if any(f is None for f in fields):
            raise ApiError(
                400, "bad_request", "session, seq and lowest_pending come together, or none"
            )
        sid, seq, lowest = body.session, body.seq, body.lowest_pending
        assert sid is not None and seq is not None and lowest is not None
        if not (0 < sid <= MAX_SEQ and 0 < lowest <= seq <= MAX_SEQ):
            raise ApiError(
                400,
                "bad_request",
                f"need 1 <= session, 1 <= lowest_pending <= seq, all <= {MAX_SEQ}",
            )
        return SessionRef(sid, seq, lowest)

    async def open_session(self, request: web.Request) -> web.Response:
        """Open a client session: one committed entry, whose index is its id."""
        raw = await self._body(request)
        if raw.strip():
            _decode(raw, OpenSessionBody)  # no fields: anything else is a 400
        opened: Opened = await self._write(OpenSession())
        return _json({"session": opened.session})

    async def _write(self, cmd: Put | Delete | OpenSession) -> Any:
        t0 = time.perf_counter()
        try:
            res = await self.node.propose(encode_command(cmd), timeout=self.timeout)
        except NodeError as exc:
            self.metrics.proposal_failed(type(exc).__name__)
            raise
        self.metrics.commit_latency.observe(time.perf_counter() - t0)
        return res

    @staticmethod
    def _outcome(res: WriteResult) -> web.Response:
        if res.outcome == "ok":
            return _json({"revision": res.revision, "prev": as_json(res.prev)})
        if res.outcome == "not_found":
            raise ApiError(404, "not_found", "no such key")
        if res.outcome == "session_expired":
            raise ApiError(
                504,
                "session_expired",
                "the session or this request's outcome is no longer held: not applied "
                "now; if an earlier attempt was, the outcome is unknown",
            )
        if res.outcome == "seq_reused":
            raise ApiError(
                409,
                "seq_reused",
                "this session's seq already holds the outcome of a different request: "
                "not applied (is another client using this session?)",
            )
        raise ApiError(
            412, "precondition_failed", "the condition did not hold", current=as_json(res.current)
        )

    async def put(self, request: web.Request) -> web.Response:
        key = self._key(request)
        body: PutBody = _decode(await self._body(request), PutBody)
        if len(body.value.encode()) > self.max_value:
            raise ApiError(413, "too_large", f"value larger than {self.max_value} bytes")
        if_value, if_revision = self._conditions(body)
        session = self._session_ref(body)
        cmd = Put(key, body.value, if_value, if_revision, session=session)
        return self._outcome(await self._write(cmd))

    async def delete(self, request: web.Request) -> web.Response:
        key = self._key(request)
        raw = await self._body(request)
        body = _decode(raw, DeleteBody) if raw.strip() else DeleteBody()
        if_value, if_revision = self._conditions(body)
        session = self._session_ref(body)
        cmd = Delete(key, if_value, if_revision, session=session)
        return self._outcome(await self._write(cmd))

    # -- cluster ------------------------------------------------------------------------

    def _members(self) -> list[dict[str, Any]]:
        st = self.node.status()
        voters = set(st.voters)
        out = []
        for nid in sorted(set(st.voters) | set(st.learners)):
            info = st.members.get(nid, {})
            out.append(
                {
                    "id": nid,
                    "peer_addr": _text(info.get("addr")),
                    "client_addr": _text(self.store.addrs.get(nid, info.get("client_addr"))),
                    "voter": nid in voters,
                }
            )
        return out

    async def status(self, request: web.Request) -> web.Response:
        st = self.node.status()
        return _json(
            {
                "id": st.id,
                "role": st.role,
                "term": st.term,
                "leader": st.leader,
                "leader_client_addr": self.store.addrs.get(st.leader or "", ""),
                "commit_index": st.commit_index,
                "applied_index": st.applied_index,
                "last_log_index": st.last_log_index,
                "snapshot_index": st.snapshot_index,
                "members": self._members(),
                "peers": {
                    nid: {"match": p.match, "lag": p.lag, "active": p.active}
                    for nid, p in st.peers.items()
                },
                "storage_ok": st.storage_ok,
                "bad_peer_addresses": st.bad_peer_addresses,
            }
        )

    async def members(self, request: web.Request) -> web.Response:
        return _json({"members": self._members()})

    async def add_member(self, request: web.Request) -> web.Response:
        b: MemberBody = _decode(await self._body(request), MemberBody)
        if not b.id or not b.peer_addr:
            raise ApiError(400, "bad_request", "id and peer_addr are required")
        info = {"client_addr": b.client_addr} if b.client_addr else {}
        if b.voter:
            await self.node.add_voter(b.id, b.peer_addr, catch_up_timeout=60.0, **info)
        else:
            await self.node.add_learner(b.id, b.peer_addr, **info)
        return _json({"members": self._members()})

    def _member_id(self, request: web.Request) -> str:
        nid = request.match_info["id"]
        if not any(m["id"] == nid for m in self._members()):
            raise ApiError(404, "not_found", f"no member {nid!r}")
        return nid

    async def remove_member(self, request: web.Request) -> web.Response:
        await self.node.remove(self._member_id(request))
        return _json({"members": self._members()})

    async def promote_member(self, request: web.Request) -> web.Response:
        await self.node.promote(self._member_id(request))
        return _json({"members": self._members()})

    async def transfer(self, request: web.Request) -> web.Response:
        raw = await self._body(request)
        body = _decode(raw, TransferBody) if raw.strip() else TransferBody()
        if not self.node.is_leader:
            return await self._to_leader(request, raw)
        new = await self.node.transfer_leadership(body.to, timeout=self.timeout)
        return _json({"leader": new})

    async def _to_leader(self, request: web.Request, body: bytes) -> web.Response:
        """Proxy an admin request that only the leader can serve."""
        leader = self.node.leader
        addr = self.store.addrs.get(leader or "")
        if leader is None or not addr:
            raise ApiError(503, "no_leader", "no leader known (or its client address is not)")
        if self._session is None:
            # Idle connections go before the leader's header timeout closes them.
            conn = aiohttp.TCPConnector(keepalive_timeout=5.0)
            self._session = aiohttp.ClientSession(connector=conn)
        scheme = "https" if self._ssl_client is not None else "http"
        headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        try:
            async with self._session.request(
                request.method,
                f"{scheme}://{addr}{request.rel_url}",
                data=body,
                headers=headers,
                ssl=self._ssl_client if self._ssl_client is not None else True,
                timeout=aiohttp.ClientTimeout(total=self.timeout * 2),
            ) as resp:
                return web.Response(
                    body=await resp.read(),
                    status=resp.status,
                    content_type="application/json",
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(503, "no_leader", f"the leader at {addr} did not answer: {exc}") from exc

    async def snapshot(self, request: web.Request) -> web.Response:
        return _json({"index": await self.node.snapshot()})

    # -- operations ---------------------------------------------------------------------

    async def metrics_route(self, request: web.Request) -> web.Response:
        body, ctype = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"ok": True})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready: a leader is known, the disk takes writes, and this node has
        applied what it knew to be committed."""
        try:
            st = self.node.status()
        except NodeError:
            return _error(503, "not_ready", "the node is not running")
        why = []
        if st.leader is None:
            why.append("no leader")
        if not st.storage_ok:
            why.append("storage failed")
        if st.applied_index < st.commit_index:
            why.append(f"applying ({st.applied_index}/{st.commit_index})")
        if why:
            return _error(503, "not_ready", "; ".join(why))
        return _json({"ok": True})


__all__ = ["KVServer", "ApiError", "KV"]
