"""Python client for liferaft-kv, async (:class:`AsyncClient`) and sync
(:class:`Client`).

Give it any members' client addresses; it finds the leader itself (through
``/v1/status``) and sends writes there, since a follower would only forward
them.  Writes go through a client session (Raft thesis §6.3): the first
write opens one (``POST /v1/sessions``, one committed entry), and every write
names it with its sequence number and the lowest sequence number still
awaiting an answer.  So a write whose outcome is unknown (a 504, a dropped
connection) is retried safely until the deadline: the cluster applies it at
most once.  All tasks of a client share its session, and at most
:data:`SESSION_WINDOW` of its writes are ever unresolved (the cluster keeps
that many outcomes per session): a write past the window waits for the
lowest one to resolve.  If the cluster has forgotten the session, a write it
refused without applying is sent again in a new session; one that may have
applied earlier raises :class:`SessionExpiredError`.

Errors are typed, and every one is a :class:`ClientError`:
:class:`NotFoundError`, :class:`PreconditionFailedError` (with the key's
``current`` value), :class:`BadRequestError`, :class:`UnauthorizedError`,
:class:`TooLargeError`, :class:`UnavailableError` (no leader until the
deadline; nothing was applied), :class:`ClientTimeoutError` (the deadline
passed with the outcome unknown), :class:`SessionExpiredError` (a
ClientTimeoutError: the cluster forgot the outcome of a write that may have
applied) and :class:`TLSError`.  Names follow docs/architecture.md, "Names";
the old names (``NotFound``, ``PreconditionFailed``, ``BadRequest``,
``Unauthorized``, ``TooLarge``, ``Unavailable``, ``Timeout``,
``SessionExpired``) are aliases of the same classes until 0.2.0.

A write no attempt could have delivered (none got a connection) ends in
:class:`UnavailableError`; once one may have (a timeout once connected, a
reset, a 504), in :class:`ClientTimeoutError` (docs/operations.md, "Exit
codes").  ``dial_timeout`` (2 s, as etcdctl's) bounds each connect.

An ``https://`` endpoint is TLS or an error, never plain HTTP: the bearer
token only goes out over the scheme asked for.  Bare ``host:port``
endpoints use https when an SSL context is given, else http.

    async with AsyncClient("127.0.0.1:8001,127.0.0.1:8002") as c:
        await c.put("greeting", "hello")
        item = await c.get("greeting")      # Item(key, value, revision) or None
"""

from __future__ import annotations

import asyncio
import builtins
import ssl as ssl_mod
import threading
import urllib.parse
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")
SESSION_WINDOW = 256  # the outcomes liferaft-kv keeps per session (kv.state.SESSION_OUTCOMES)
MAX_PAGE = 10_000  # the server's largest list page, by count
IDLE_KEEPALIVE = 5.0  # seconds an idle pooled connection is kept
RESERVE_SLACK = 0.1  # seconds past a write's deadline its wait for a session may end
DIAL_TIMEOUT = 2.0  # seconds to connect (TCP and TLS), as etcdctl's --dial-timeout
Members = list[dict[str, Any]]  # (aliases: AsyncClient.list shadows the builtin)


class ClientError(Exception):
    """An answer the client cannot turn into success."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotFoundError(ClientError):
    """The key does not exist (HTTP 404)."""


class PreconditionFailedError(ClientError):
    """A compare-and-swap's condition did not hold (HTTP 412); ``current`` is
    the key's value now, None if it is absent."""

    def __init__(self, message: str, current: Item | None) -> None:
        super().__init__(message, 412, "precondition_failed")
        self.current = current


class BadRequestError(ClientError):
    """The server refused the request as malformed (HTTP 400)."""


class UnauthorizedError(ClientError):
    """A missing or wrong bearer token (HTTP 401)."""


class TooLargeError(ClientError):
    """The key, value or request body is over the server's limit (HTTP 413)."""


class TLSError(ClientError):
    """The TLS handshake with an https endpoint failed (not TLS there, or a
    certificate the client does not trust); nothing was sent."""


class UnavailableError(ClientError):
    """No node could take the request before the deadline; nothing applied
    (no attempt of a write reached a server, or every one that did was
    refused as not applied)."""


class ClientTimeoutError(ClientError, TimeoutError):
    """The deadline passed and the outcome of the last attempt is unknown.
    (Not ``TimeoutError``: that name is a builtin.)"""


class SessionExpiredError(ClientTimeoutError):
    """The cluster no longer holds this write's session or outcome, and an
    earlier attempt may have applied it: the outcome is unknown.  (It did
    not apply on the attempt that got this answer.)"""


# --- old names: the same class objects, kept for one release (they go in 0.2.0) ---

NotFound = NotFoundError
PreconditionFailed = PreconditionFailedError
BadRequest = BadRequestError
Unauthorized = UnauthorizedError
TooLarge = TooLargeError
Unavailable = UnavailableError
Timeout = ClientTimeoutError
SessionExpired = SessionExpiredError


class _Session:
    """A session's client side: its id and the writes it has sent."""

    def __init__(self, session_id: int) -> None:
        self.id = session_id
        self.next_seq = 1
        self.pending: set[int] = set()  # sequence numbers without an answer yet

    def lowest_pending(self) -> int:
        return min(self.pending, default=self.next_seq)

    def has_room(self) -> bool:
        # Every seq the server may still be asked about lies in
        # [lowest_pending, lowest_pending + window): it can hold them all.
        return self.next_seq < self.lowest_pending() + SESSION_WINDOW


@dataclass(frozen=True)
class Item:
    key: str
    value: str
    revision: int


@dataclass(frozen=True)
class WriteResult:
    revision: int
    prev: Item | None


def _endpoints(endpoints: str | Sequence[str]) -> tuple[list[str], str | None]:
    """``host:port`` of each endpoint, and the one scheme they name (None if
    none names one).  ValueError for an unknown scheme or a mix."""
    parts = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = []
    schemes = set()
    for p in parts:
        p = p.strip().rstrip("/")
        if not p:
            continue
        if "://" in p:
            scheme, p = p.split("://", 1)
            if scheme.lower() not in ("http", "https"):
                raise ValueError(f"endpoint scheme {scheme!r}: only http and https")
            schemes.add(scheme.lower())
        out.append(p)
    if not out:
        raise ValueError("no endpoints given")
    if len(schemes) > 1:
        raise ValueError("endpoints mix http:// and https://")
    return out, schemes.pop() if schemes else None


class _Attempt:
    """One HTTP attempt: ``connected`` once aiohttp had a connection for it
    (new or pooled; its tracing says so).  Before that no byte can have left
    this process: a failure then (refused, DNS, a dial timeout) leaves a
    write provably unsent."""

    connected = False


async def _connected(_session: Any, ctx: Any, _params: Any) -> None:
    if isinstance(ctx.trace_request_ctx, _Attempt):
        ctx.trace_request_ctx.connected = True


def _item(key: str, d: dict[str, Any] | None) -> Item | None:
    return None if d is None else Item(key, d["value"], d["revision"])


def _quote(key: str) -> str:
    if not key:
        raise BadRequestError("empty key", 400, "bad_request")
    return urllib.parse.quote(key, safe="/")


class AsyncClient:
    """An asyncio client; use it from one event loop (``async with`` closes it)."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        token: str | None = None,
        timeout: float = 10.0,
        ssl: ssl_mod.SSLContext | None = None,
        dial_timeout: float = DIAL_TIMEOUT,
    ) -> None:
        """``timeout``: seconds for a whole call, retries included;
        ``dial_timeout``: for one connect (TCP and TLS) to one endpoint."""
        self.endpoints, scheme = _endpoints(endpoints)
        if not dial_timeout > 0:
            raise ValueError("dial_timeout must be above 0 seconds")
        if scheme == "http" and ssl is not None:
            raise ValueError("an SSL context was given for http:// endpoints")
        self.token = token
        self.timeout = timeout
        self.dial_timeout = dial_timeout
        self._scheme = scheme or ("https" if ssl is not None else "http")
        # https without a context: the system's CAs (aiohttp's default check).
        self._ssl: ssl_mod.SSLContext | bool = ssl if ssl is not None else True
        self._write_session: _Session | None = None
        self._window = asyncio.Condition()  # guards _write_session and its seqs
        self._leader: str | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            # Idle connections are dropped before the server's header timeout
            # (10 s by default) would close them under a request.
            conn = aiohttp.TCPConnector(keepalive_timeout=IDLE_KEEPALIVE)
            tc = aiohttp.TraceConfig()
            tc.on_connection_create_end.append(_connected)
            tc.on_connection_reuseconn.append(_connected)
            self._session = aiohttp.ClientSession(
                headers=headers, connector=conn, trace_configs=[tc]
            )
        return self._session

    @property
    def session_id(self) -> int | None:
        """The id of the session writes go through (None before the first)."""
        return None if self._write_session is None else self._write_session.id

    # -- transport ------------------------------------------------------------------------

    async def _once(
        self, ep: str, method: str, path: str, body: Any, left: float,
        attempt: _Attempt | None = None,
    ) -> tuple[int, dict[str, Any], float]:
        total = max(0.05, left)
        async with self._http().request(
            method,
            f"{self._scheme}://{ep}{path}",
            json=body,
            ssl=self._ssl,
            timeout=aiohttp.ClientTimeout(total=total, sock_connect=min(self.dial_timeout, total)),
            trace_request_ctx=attempt,
        ) as r:
            try:
                data = await r.json(content_type=None)
            except ValueError:
                data = {"error": "bad_response", "message": (await r.text())[:200]}
            retry = float(r.headers.get("Retry-After", "0") or 0)
            return r.status, data if isinstance(data, dict) else {"value": data}, retry

    async def _find_leader(self, left: float) -> None:
        for ep in self.endpoints:
            try:
                status, st, _ = await self._once(ep, "GET", "/v1/status", None, min(left, 1.0))
            except (aiohttp.ClientError, TimeoutError, OSError):
                continue
            if status == 200 and st.get("leader_client_addr"):
                self._leader = st["leader_client_addr"]
                return

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        write: bool = False,
        endpoint: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One API call with leader discovery and retries until the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        # An attempt of this write may have applied: one reached a server (a
        # connection existed; see _Attempt), or one was answered 504.
        unknown = False
        last = "no endpoint answered"
        backoff = 0.05
        rotate = 0
        while True:
            left = deadline - loop.time()
            if left <= 0:
                if unknown:
                    raise ClientTimeoutError(
                        f"deadline passed, outcome unknown ({last})", 504, "timeout"
                    )
                raise UnavailableError(f"no node took the request: {last}", 503, "no_leader")
            if endpoint is not None:
                order = [endpoint]
            else:
                if write and self._leader is None:
                    await self._find_leader(left)
                    left = deadline - loop.time()  # the search took some of it
                    if left <= 0:
                        continue
                order = [*([self._leader] if write and self._leader else []), *self.endpoints]
                order = order[rotate % len(order) :] + order[: rotate % len(order)]
            ep = order[0]
            attempt = _Attempt()
            try:
                status, data, retry = await self._once(ep, method, path, body, left, attempt)
            except aiohttp.ClientSSLError as exc:
                # A setup error, not a passing fault: retrying cannot help.
                raise TLSError(
                    f"{ep}: TLS failed ({exc}); is it an https endpoint, and is its CA "
                    "trusted (--cacert)?",
                    0,
                    "tls",
                ) from exc
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = f"{ep}: {type(exc).__name__} {exc}".strip()
                # Refused, unresolvable or not dialed in time: never sent.
                # Anything later (a timeout or a reset once connected) may
                # have delivered it.
                unknown = unknown or (write and attempt.connected)
                if ep == self._leader:
                    self._leader = None
                rotate += 1
                await asyncio.sleep(min(backoff, max(0.0, deadline - loop.time())))
                backoff = min(1.0, backoff * 2)
                continue
            if status < 400:
                return data
            code = str(data.get("error", ""))
            msg = str(data.get("message", code))
            if status == 504 and code == "session_expired":
                # Not applied this time; unknown only if an earlier attempt was.
                raise (SessionExpiredError if unknown else _ExpiredUnapplied)(msg, status, code)
            if status in (503, 504):
                last = f"{ep}: {status} {msg}"
                if status == 504:
                    unknown = True
                self._leader = None
                rotate += 1
                wait = max(backoff, min(retry, 1.0)) if status == 503 else backoff
                await asyncio.sleep(min(wait, max(0.0, deadline - loop.time())))
                backoff = min(1.0, backoff * 2)
                continue
            raise _typed(status, code, msg, data, path)

    # -- sessions -------------------------------------------------------------------------

    async def _reserve(self, timeout: float) -> tuple[_Session, int]:
        """A session and a sequence number in it, once the window has room
        (opening the session first if there is none, within ``timeout``)."""
        async with self._window:
            while True:
                if self._write_session is None:
                    d = await self.request("POST", "/v1/sessions", {}, write=True, timeout=timeout)
                    self._write_session = _Session(int(d["session"]))
                sess = self._write_session
                if sess.has_room():
                    seq = sess.next_seq
                    sess.next_seq += 1
                    sess.pending.add(seq)
                    return sess, seq
                await self._window.wait()

    async def _resolved(self, sess: _Session, seq: int, *, forget_session: bool = False) -> None:
        async with self._window:
            sess.pending.discard(seq)
            if forget_session and self._write_session is sess:
                self._write_session = None
            self._window.notify_all()

    async def _write(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One write in the session, retried until the deadline.  A write
        the cluster refused as expired without applying it is sent again in
        a new session (bounded: only while no attempt may have applied)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise UnavailableError(
                    "deadline passed before the write was sent", 503, "no_leader"
                )
            try:
                # The session open ends by the deadline with its own error,
                # which names the last failure; this bound, a little later,
                # is for the wait for room in the window.
                async with asyncio.timeout(left + RESERVE_SLACK):
                    sess, seq = await self._reserve(left)
            except ClientTimeoutError as exc:
                # Opening the session is unknown; this write was never sent.
                msg = f"could not open a client session ({exc}); the write was not sent"
                raise UnavailableError(msg, 503, "no_leader") from exc
            except TimeoutError as exc:
                raise UnavailableError(
                    "deadline passed waiting for a session or for room in its window of "
                    f"{SESSION_WINDOW} writes; nothing was sent",
                    503,
                    "no_leader",
                ) from exc
            fields = {"session": sess.id, "seq": seq, "lowest_pending": sess.lowest_pending()}
            expired = False
            try:
                return await self.request(
                    method, path, {**body, **fields}, write=True, timeout=deadline - loop.time()
                )
            except _ExpiredUnapplied:
                expired = True  # not applied: send it again in a new session
            finally:
                # Resolved however it ended: answered, or given up on.  A late
                # copy of a write given up on still applies at most once, and
                # not at all once a later write's lowest_pending has passed it.
                await self._resolved(sess, seq, forget_session=expired)

    # -- keys -----------------------------------------------------------------------------

    async def get(self, key: str, consistency: str = "linearizable") -> Item | None:
        """The key's value and revision, or None."""
        try:
            d = await self.request("GET", f"/v1/kv/{_quote(key)}?consistency={consistency}")
        except NotFoundError:
            return None
        return Item(d["key"], d["value"], d["revision"])

    async def put(
        self,
        key: str,
        value: str,
        *,
        if_value: str | None = None,
        if_revision: int | None = None,
    ) -> WriteResult:
        """Write ``key``; ``if_value``/``if_revision`` make it conditional
        (``if_revision=0``: create only).  PreconditionFailedError otherwise."""
        body: dict[str, Any] = {"value": value}
        if if_value is not None:
            body["if_value"] = if_value
        if if_revision is not None:
            body["if_revision"] = if_revision
        d = await self._write("PUT", f"/v1/kv/{_quote(key)}", body)
        return WriteResult(d["revision"], _item(key, d.get("prev")))

    async def cas(self, key: str, old: str, new: str) -> WriteResult:
        """Compare-and-swap: write ``new`` only if the value is ``old``."""
        return await self.put(key, new, if_value=old)

    async def delete(
        self,
        key: str,
        *,
        if_value: str | None = None,
        if_revision: int | None = None,
    ) -> WriteResult:
        """Delete ``key`` (NotFoundError if it is absent)."""
        body: dict[str, Any] = {}
        if if_value is not None:
            body["if_value"] = if_value
        if if_revision is not None:
            body["if_revision"] = if_revision
        d = await self._write("DELETE", f"/v1/kv/{_quote(key)}", body)
        return WriteResult(d["revision"], _item(key, d.get("prev")))

    async def list(
        self, prefix: str = "", limit: int | None = None, consistency: str = "linearizable"
    ) -> tuple[builtins.list[Item], int]:
        """Keys under ``prefix`` in order (at most ``limit``), and the store's
        revision.  The server answers in pages (capped by count and bytes);
        this follows them.  Each page is read on its own, so a long list is
        not one snapshot: the revision returned is the last page's."""
        items: builtins.list[Item] = []
        start = ""
        rev = 0
        while limit is None or len(items) < limit:
            q = {"prefix": prefix, "consistency": consistency, "start": start}
            if limit is not None:
                q["limit"] = str(min(limit - len(items), MAX_PAGE))
            d = await self.request("GET", "/v1/kv?" + urllib.parse.urlencode(q))
            items += [Item(i["key"], i["value"], i["revision"]) for i in d["items"]]
            rev = d["revision"]
            if "next" not in d:
                break
            start = d["next"]
        return items, rev

    # -- cluster --------------------------------------------------------------------------

    async def status(
        self, endpoint: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """``/v1/status`` of ``endpoint`` (or of whichever answers first)."""
        return await self.request("GET", "/v1/status", endpoint=endpoint, timeout=timeout)

    async def members(self) -> Members:
        return list((await self.request("GET", "/v1/members"))["members"])

    async def add_member(
        self, node_id: str, peer_addr: str, client_addr: str = "", voter: bool = True
    ) -> Members:
        body = {"id": node_id, "peer_addr": peer_addr, "client_addr": client_addr, "voter": voter}
        d = await self.request("POST", "/v1/members", body, write=True, timeout=90)
        return list(d["members"])

    async def remove_member(self, node_id: str) -> Members:
        d = await self.request("DELETE", f"/v1/members/{_quote(node_id)}", write=True)
        return list(d["members"])

    async def promote(self, node_id: str) -> Members:
        d = await self.request("POST", f"/v1/members/{_quote(node_id)}/promote", write=True)
        return list(d["members"])

    async def transfer_leader(self, to: str | None = None) -> str:
        body = {"to": to} if to else {}
        return str((await self.request("POST", "/v1/leader/transfer", body, write=True))["leader"])

    async def snapshot(self, endpoint: str | None = None) -> int:
        return int((await self.request("POST", "/v1/snapshot", {}, endpoint=endpoint))["index"])


class _ExpiredUnapplied(ClientError):
    """session_expired with no earlier attempt that may have applied: the
    write was not applied, so it may be sent again in a new session."""


def _typed(status: int, code: str, msg: str, data: dict[str, Any], path: str) -> ClientError:
    if status == 404:
        return NotFoundError(msg, status, code)
    if status == 412:
        key = urllib.parse.unquote(path.split("/v1/kv/", 1)[-1].split("?")[0])
        return PreconditionFailedError(msg, _item(key, data.get("current")))
    if status == 401:
        return UnauthorizedError(msg, status, code)
    if status == 413:
        return TooLargeError(msg, status, code)
    if status == 400:
        return BadRequestError(msg, status, code)
    return ClientError(f"{status} {code}: {msg}", status, code)


class Client:
    """The same API, blocking: runs an :class:`AsyncClient` on a private event
    loop in a daemon thread.  Use as a context manager, or call close()."""

    def __init__(self, endpoints: str | Sequence[str], **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._async = self._run(self._make(endpoints, kw))

    @staticmethod
    async def _make(endpoints: str | Sequence[str], kw: dict[str, Any]) -> AsyncClient:
        return AsyncClient(endpoints, **kw)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._async, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            return self._run(attr(*args, **kw))

        call.__doc__ = attr.__doc__
        return call


__all__ = [
    "SESSION_WINDOW",
    "AsyncClient",
    "BadRequestError",
    "Client",
    "ClientError",
    "ClientTimeoutError",
    "Item",
    "NotFoundError",
    "PreconditionFailedError",
    "SessionExpiredError",
    "TLSError",
    "TooLargeError",
    "UnauthorizedError",
    "UnavailableError",
    "WriteResult",
    # old names, until 0.2.0
    "BadRequest",
    "NotFound",
    "PreconditionFailed",
    "SessionExpired",
    "Timeout",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]
