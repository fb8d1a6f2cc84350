"""The calls the soak's clients make, in the shapes they record.

Every client of the soak (:mod:`.workload`, :mod:`.coord`, :mod:`.streams`)
reads and writes through an :class:`Api`: ``--api http`` (the default) is
liferaft's own ``/v1`` API (:class:`HttpApi`), ``--api etcd`` etcd's v3 gRPC
API (:class:`liferaft.chaos.etcd_api.EtcdApi`).  Either way an answer is
``(status, body)`` in the ``/v1`` contract's terms, which is what the
clients classify (docs/chaos.md): 200 (and 404 for a read or a lease that
is gone, 412 for a refused conditional put) is an answer, 503 "certainly
not applied", 504 "may apply", 0 "no answer" (may apply too); the body is
the ``/v1`` JSON (a page's ``items`` and ``revision``, a write's
``revision``...).  So one set of clients, one recording and the same
checkers judge both protocols; only the mapping of each protocol's answers
onto those outcomes differs, and that mapping is what the etcd mode tests.

The harness's own looks at the cluster (``/v1/status``, members, the
stranger's checks) stay on :meth:`ChaosCluster.call`: they judge the
cluster, not the protocol.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

Answer = tuple[int, Any]

__all__ = ["Answer", "Api", "Cluster", "HttpApi", "Query", "quoted"]


@dataclass(frozen=True)
class Query:
    """A read of ``key``, or of every key under it with ``prefix``;
    ``consistency`` None is the server's default (linearizable)."""

    key: str
    prefix: bool = False
    consistency: str | None = None
    limit: int = 0
    count_only: bool = False


class Cluster(Protocol):
    """What the APIs use of :class:`~liferaft.chaos.cluster.ChaosCluster`
    (which holds its API: a protocol here, so the two modules need not
    import each other)."""

    @property
    def members(self) -> Mapping[str, Any]:
        """Node id -> node, with its ``client`` and ``grpc`` addresses."""
        ...

    def session(self) -> aiohttp.ClientSession: ...

    async def call(
        self, nid: str, method: str, path: str, body: Any = None, timeout: float = 3.0
    ) -> Answer: ...


def quoted(key: str) -> str:
    """``key`` as one query or path element."""
    return urllib.parse.quote(key, safe="")


class Api(Protocol):
    """What the soak's clients call (module docstring)."""

    async def range(self, nid: str, q: Query, timeout: float = 3.0) -> Answer:
        """A page (``items``, ``revision``) of what ``q`` asks for."""
        ...

    async def get(self, nid: str, key: str, consistency: str, timeout: float = 3.0) -> Answer:
        """One key: 200 ``{"value"}``, or 404."""
        ...

    async def put(
        self, nid: str, key: str, value: str, *, lease: int = 0, if_value: str | None = None
    ) -> Answer:
        """200 ``{"revision"}``; 412 when ``if_value`` was not the value."""
        ...

    async def txn(self, nid: str, body: dict[str, Any]) -> Answer:
        """A ``POST /v1/txn`` body; its answer (``succeeded``, ``revision``,
        ``results``)."""
        ...

    async def lease_grant(self, nid: str, ttl: int) -> Answer:
        """200 ``{"id", "ttl"}``."""
        ...

    async def lease_keepalive(self, nid: str, lease: int, timeout: float) -> Answer:
        """200, or 404 ``{"error": "lease_not_found"}``."""
        ...

    async def lease_revoke(self, nid: str, lease: int) -> Answer:
        """200 ``{"revision"}``, or 404 ``{"error": "lease_not_found"}``."""
        ...

    async def close(self) -> None:
        """Let go of connections (the cluster's HTTP session is its own)."""
        ...

    def watch(
        self, nid: str, key: str, prefix: bool, prev_kv: bool, start: int, idle: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The lines of a watch from ``start`` (0: now), as ``GET /v1/watch``
        sends them (liferaft/kv/server_watch.py): a ``created`` head with
        its ``start_revision``, one line per revision with its ``events``,
        ``progress`` lines, an ``error`` line.  Ends when the stream does;
        raises for a connection that broke or was silent ``idle`` seconds."""
        ...


class HttpApi:
    """liferaft's ``/v1`` API on each node's client port."""

    def __init__(self, c: Cluster) -> None:
        self.c = c

    async def range(self, nid: str, q: Query, timeout: float = 3.0) -> Answer:
        path = f"/v1/kv?{'prefix' if q.prefix else 'key'}={quoted(q.key)}"
        path += f"&consistency={q.consistency}" if q.consistency else ""
        path += f"&limit={q.limit}" if q.limit else ""
        path += "&count_only=true" if q.count_only else ""
        return await self.c.call(nid, "GET", path, timeout=timeout)

    async def get(self, nid: str, key: str, consistency: str, timeout: float = 3.0) -> Answer:
        path = "/v1/kv/" + urllib.parse.quote(key, safe="/")
        return await self.c.call(nid, "GET", f"{path}?consistency={consistency}", timeout=timeout)

    async def put(
        self, nid: str, key: str, value: str, *, lease: int = 0, if_value: str | None = None
    ) -> Answer:
        body: dict[str, Any] = {"value": value}
        if lease:
            body["lease"] = lease
        if if_value is not None:
            body["if_value"] = if_value
        return await self.c.call(nid, "PUT", "/v1/kv/" + urllib.parse.quote(key, safe="/"), body)

    async def txn(self, nid: str, body: dict[str, Any]) -> Answer:
        return await self.c.call(nid, "POST", "/v1/txn", body)

    async def lease_grant(self, nid: str, ttl: int) -> Answer:
        return await self.c.call(nid, "POST", "/v1/lease", {"ttl": ttl})

    async def lease_keepalive(self, nid: str, lease: int, timeout: float) -> Answer:
        return await self.c.call(nid, "POST", f"/v1/lease/{lease}/keepalive", timeout=timeout)

    async def lease_revoke(self, nid: str, lease: int) -> Answer:
        return await self.c.call(nid, "DELETE", f"/v1/lease/{lease}")

    async def close(self) -> None:
        pass

    def watch_url(self, nid: str, key: str, prefix: bool, prev_kv: bool, start: int) -> str:
        q = {"prefix" if prefix else "key": key}
        if prev_kv:
            q["prev_kv"] = "true"
        if start:
            q["start_revision"] = str(start)
        return f"http://{self.c.members[nid].client}/v1/watch?{urllib.parse.urlencode(q)}"

    async def watch(
        self, nid: str, key: str, prefix: bool, prev_kv: bool, start: int, idle: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=2, sock_read=idle)
        url = self.watch_url(nid, key, prefix, prev_kv, start)
        async with self.c.session().get(url, timeout=timeout) as r:
            if r.status != 200:
                await asyncio.sleep(0.3)  # a node that cannot serve it now: not at once again
                yield {"error": f"HTTP {r.status}"}
                return
            while True:
                raw = await r.content.readline()
                if not raw or not raw.endswith(b"\n"):
                    return  # the end, or a torn last line: the connection died mid-line
                yield json.loads(raw)
