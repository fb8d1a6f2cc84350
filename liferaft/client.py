"""Python client for liferaft-kv, async (:class:`AsyncClient`) and sync
(:class:`Client`).

Give it any members' client addresses; it finds the leader itself (through
``/v1/status``) and sends writes there, since a follower would only forward
them.  Every write carries a ``request_id`` (``<client id>:<n>``), so a
write whose outcome is unknown (a 504, a dropped connection) is retried
safely until the deadline: the cluster applies it at most once.

Errors are typed: :class:`NotFound`, :class:`PreconditionFailed` (with the
key's ``current`` value), :class:`BadRequest`, :class:`Unauthorized`,
:class:`TooLarge`, :class:`Unavailable` (no leader until the deadline;
nothing was applied), :class:`Timeout` (the deadline passed with the
outcome unknown) and :class:`TLSError`.

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
import itertools
import ssl as ssl_mod
import threading
import urllib.parse
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")
MAX_PAGE = 10_000  # the server's largest list page, by count
IDLE_KEEPALIVE = 5.0  # seconds an idle pooled connection is kept
Members = list[dict[str, Any]]  # (aliases: AsyncClient.list shadows the builtin)


class ClientError(Exception):
    """An answer the client cannot turn into success."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotFound(ClientError):
    pass


class PreconditionFailed(ClientError):
    def __init__(self, message: str, current: Item | None) -> None:
        super().__init__(message, 412, "precondition_failed")
        self.current = current


class BadRequest(ClientError):
    pass


class Unauthorized(ClientError):
    pass


class TooLarge(ClientError):
    pass


class TLSError(ClientError):
    """The TLS handshake with an https endpoint failed (not TLS there, or a
    certificate the client does not trust); nothing was sent."""


class Unavailable(ClientError):
    """No node could take the request before the deadline; nothing applied."""


class Timeout(ClientError):
    """The deadline passed and the outcome of the last attempt is unknown."""


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


def _item(key: str, d: dict[str, Any] | None) -> Item | None:
    return None if d is None else Item(key, d["value"], d["revision"])


def _quote(key: str) -> str:
    if not key:
        raise BadRequest("empty key", 400, "bad_request")
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
        client_id: str | None = None,
    ) -> None:
        self.endpoints, scheme = _endpoints(endpoints)
        if scheme == "http" and ssl is not None:
            raise ValueError("an SSL context was given for http:// endpoints")
        self.token = token
        self.timeout = timeout
        self._scheme = scheme or ("https" if ssl is not None else "http")
        # https without a context: the system's CAs (aiohttp's default check).
        self._ssl: ssl_mod.SSLContext | bool = ssl if ssl is not None else True
        self.client_id = client_id or uuid.uuid4().hex[:16]
        self._seq = itertools.count(1)
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
            self._session = aiohttp.ClientSession(headers=headers, connector=conn)
        return self._session

    def next_request_id(self) -> str:
        return f"{self.client_id}:{next(self._seq)}"

    # -- transport ------------------------------------------------------------------------

    async def _once(
        self, ep: str, method: str, path: str, body: Any, left: float
    ) -> tuple[int, dict[str, Any], float]:
        async with self._http().request(
            method,
            f"{self._scheme}://{ep}{path}",
            json=body,
            ssl=self._ssl,
            timeout=aiohttp.ClientTimeout(total=max(0.05, left)),
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
        unknown = False  # an attempt may have applied (only with a request_id)
        last = "no endpoint answered"
        backoff = 0.05
        rotate = 0
        while True:
            left = deadline - loop.time()
            if left <= 0:
                if unknown:
                    raise Timeout(f"deadline passed, outcome unknown ({last})", 504, "timeout")
                raise Unavailable(f"no node took the request: {last}", 503, "no_leader")
            if endpoint is not None:
                order = [endpoint]
            else:
                if write and self._leader is None:
                    await self._find_leader(left)
                order = [*([self._leader] if write and self._leader else []), *self.endpoints]
                order = order[rotate % len(order) :] + order[: rotate % len(order)]
            ep = order[0]
            try:
                status, data, retry = await self._once(ep, method, path, body, left)
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
                unknown = unknown or write
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

    # -- keys -----------------------------------------------------------------------------

    async def get(self, key: str, consistency: str = "linearizable") -> Item | None:
        """The key's value and revision, or None."""
        try:
            d = await self.request("GET", f"/v1/kv/{_quote(key)}?consistency={consistency}")
        except NotFound:
            return None
        return Item(d["key"], d["value"], d["revision"])

    async def put(
        self,
        key: str,
        value: str,
        *,
        if_value: str | None = None,
        if_revision: int | None = None,
        request_id: str | None = None,
    ) -> WriteResult:
        """Write ``key``; ``if_value``/``if_revision`` make it conditional
        (``if_revision=0``: create only).  PreconditionFailed otherwise."""
        body: dict[str, Any] = {"value": value, "request_id": request_id or self.next_request_id()}
        if if_value is not None:
            body["if_value"] = if_value
        if if_revision is not None:
            body["if_revision"] = if_revision
        d = await self.request("PUT", f"/v1/kv/{_quote(key)}", body, write=True)
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
        request_id: str | None = None,
    ) -> WriteResult:
        """Delete ``key`` (NotFound if it is absent)."""
        body: dict[str, Any] = {"request_id": request_id or self.next_request_id()}
        if if_value is not None:
            body["if_value"] = if_value
        if if_revision is not None:
            body["if_revision"] = if_revision
        d = await self.request("DELETE", f"/v1/kv/{_quote(key)}", body, write=True)
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


def _typed(status: int, code: str, msg: str, data: dict[str, Any], path: str) -> ClientError:
    if status == 404:
        return NotFound(msg, status, code)
    if status == 412:
        key = urllib.parse.unquote(path.split("/v1/kv/", 1)[-1].split("?")[0])
        return PreconditionFailed(msg, _item(key, data.get("current")))
    if status == 401:
        return Unauthorized(msg, status, code)
    if status == 413:
        return TooLarge(msg, status, code)
    if status == 400:
        return BadRequest(msg, status, code)
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
    "AsyncClient",
    "Client",
    "ClientError",
    "NotFound",
    "PreconditionFailed",
    "BadRequest",
    "Unauthorized",
    "TooLarge",
    "Unavailable",
    "Timeout",
    "TLSError",
    "Item",
    "WriteResult",
]
