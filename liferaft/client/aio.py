"""The asyncio client, :class:`AsyncClient`: leader discovery, retries until
the deadline, and writes in a client session (the package's docstring,
:mod:`liferaft.client`, says how)."""

from __future__ import annotations

import asyncio
import ssl as ssl_mod
from collections.abc import Sequence
from typing import Any

import aiohttp

from .calls import KeyCalls
from .errors import (
    ClientTimeoutError,
    ExpiredUnappliedError,
    SessionExpiredError,
    TLSError,
    UnavailableError,
    typed_error,
)
from .leases import LeaseCalls
from .model import Members, WriteResult, item_or_none
from .watch import WatchCalls
from .wire import (
    DIAL_TIMEOUT,
    IDLE_KEEPALIVE,
    RESERVE_SLACK,
    SESSION_WINDOW,
    Attempt,
    WriteSession,
    on_connection,
    parse_endpoints,
    quote_key,
)


class AsyncClient(KeyCalls, LeaseCalls, WatchCalls):
    """An asyncio client; use it from one event loop (``async with`` closes it).
    Its key, lease and watch calls are in :mod:`.calls`, :mod:`.leases` and
    :mod:`.watch`."""

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
        self.endpoints, scheme = parse_endpoints(endpoints)
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
        self._write_session: WriteSession | None = None
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
            tc.on_connection_create_end.append(on_connection)
            tc.on_connection_reuseconn.append(on_connection)
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
        attempt: Attempt | None = None,
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
        # connection existed; see Attempt), or one was answered 504.
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
            attempt = Attempt()
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
                raise (SessionExpiredError if unknown else ExpiredUnappliedError)(msg, status, code)
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
            raise typed_error(status, code, msg, data, path)

    # -- sessions -------------------------------------------------------------------------

    async def _reserve(self, timeout: float) -> tuple[WriteSession, int]:
        """A session and a sequence number in it, once the window has room
        (opening the session first if there is none, within ``timeout``)."""
        async with self._window:
            while True:
                if self._write_session is None:
                    d = await self.request("POST", "/v1/sessions", {}, write=True, timeout=timeout)
                    self._write_session = WriteSession(int(d["session"]))
                sess = self._write_session
                if sess.has_room():
                    seq = sess.next_seq
                    sess.next_seq += 1
                    sess.pending.add(seq)
                    return sess, seq
                await self._window.wait()

    async def _resolved(
        self, sess: WriteSession, seq: int, *, forget_session: bool = False
    ) -> None:
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
            except ExpiredUnappliedError:
                expired = True  # not applied: send it again in a new session
            finally:
                # Resolved however it ended: answered, or given up on.  A late
                # copy of a write given up on still applies at most once, and
                # not at all once a later write's lowest_pending has passed it.
                await self._resolved(sess, seq, forget_session=expired)

    # -- keys -----------------------------------------------------------------------------

    async def put(
        self,
        key: str,
        value: str,
        *,
        if_value: str | None = None,
        if_revision: int | None = None,
        lease: int = 0,
    ) -> WriteResult:
        """Write ``key`` (attached to ``lease`` if given: deleted when it
        ends); ``if_value``/``if_revision`` make it conditional
        (``if_revision=0``: create only).  PreconditionFailedError otherwise."""
        body: dict[str, Any] = {"value": value, **({"lease": lease} if lease else {})}
        return await self._key_write("PUT", key, body, if_value, if_revision)

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
        return await self._key_write("DELETE", key, {}, if_value, if_revision)

    async def _key_write(
        self, method: str, key: str, body: dict[str, Any], if_value: str | None,
        if_revision: int | None,
    ) -> WriteResult:
        """A put or delete of ``key``, conditional on what is given."""
        if if_value is not None:
            body["if_value"] = if_value
        if if_revision is not None:
            body["if_revision"] = if_revision
        d = await self._write(method, f"/v1/kv/{quote_key(key)}", body)
        return WriteResult(d["revision"], item_or_none(key, d.get("prev")))

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
        d = await self.request("DELETE", f"/v1/members/{quote_key(node_id)}", write=True)
        return list(d["members"])

    async def promote(self, node_id: str) -> Members:
        d = await self.request("POST", f"/v1/members/{quote_key(node_id)}/promote", write=True)
        return list(d["members"])

    async def transfer_leader(self, to: str | None = None) -> str:
        body = {"to": to} if to else {}
        return str((await self.request("POST", "/v1/leader/transfer", body, write=True))["leader"])

    async def snapshot(self, endpoint: str | None = None) -> int:
        return int((await self.request("POST", "/v1/snapshot", {}, endpoint=endpoint))["index"])
