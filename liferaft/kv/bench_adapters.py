"""The systems ``liferaft bench kv`` can load: how each is asked to write and
read over HTTP, and what success looks like (liferaft/kv/bench.py has the
theory of operation).

An :class:`Adapter` turns an operation into an HTTP request and judges the
answer; the load loop (:mod:`.bench_load`) is the same for every system.
:class:`LiferaftAdapter` speaks liferaft-kv's HTTP API (docs/kv.md);
:class:`EtcdAdapter` speaks etcd's grpc-gateway JSON (``POST /v3/kv/put``
and ``/v3/kv/range`` with base64 keys and values; etcd 3.4 serves it under
``/v3/`` and, deprecated, ``/v3beta/``; 3.3 only under ``/v3beta/``;
``--etcd-prefix auto`` probes for it).  Each finds the leader once, before
the load, and writes go there.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

__all__ = [
    "Adapter",
    "BenchError",
    "EtcdAdapter",
    "LiferaftAdapter",
    "Request",
    "bench_key",
    "bench_value",
    "make_adapter",
    "parse_endpoints",
]


class BenchError(Exception):
    """The cluster cannot be benchmarked (no leader, unreachable, ...)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request, built ahead of the hot loop where possible."""

    method: str
    url: URL
    body: bytes | None
    headers: dict[str, str]


def _endpoint_url(ep: str) -> str:
    ep = ep.strip().rstrip("/")
    if not ep:
        raise ValueError("empty endpoint")
    return ep if "://" in ep else f"http://{ep}"


def parse_endpoints(spec: str) -> list[str]:
    """``host:port,host:port`` (or full URLs) -> base URLs, in order."""
    eps = [_endpoint_url(e) for e in spec.split(",") if e.strip()]
    if not eps:
        raise ValueError("no endpoints given")
    return eps


def bench_key(n: int) -> str:
    return f"bench/{n}"


def bench_value(size: int) -> str:
    """A printable value of exactly ``size`` bytes (the same for every system)."""
    pattern = "liferaft-kv-bench-0123456789abcdefghijklmnopqrstuvwxyz-"
    return (pattern * (size // len(pattern) + 1))[:size]


# -- adapters -------------------------------------------------------------------------------


class Adapter:
    """How one system is asked to write and read, and what success looks like.

    ``discover`` runs once before the load (it may do HTTP); the request
    builders and ``*_ok`` run on the hot path and must be cheap and do no I/O.
    """

    name = "?"
    reads_desc = ""

    def __init__(self, endpoints: Sequence[str], value_size: int = 100) -> None:
        self.endpoints = [_endpoint_url(e) for e in endpoints]  # base URLs
        self.value = bench_value(value_size)
        self.leader: str = ""  # the base URL writes go to
        self.leader_name: str = ""  # how the system names it (node id, member id)

    async def discover(self, session: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        raise NotImplementedError

    def write(self, n: int) -> Request:
        raise NotImplementedError

    def read(self, n: int, endpoint: str, stale: bool) -> Request:
        raise NotImplementedError

    def write_ok(self, status: int, body: bytes) -> bool:
        return status == 200

    def read_ok(self, status: int, body: bytes) -> bool:
        return status == 200


class LiferaftAdapter(Adapter):
    """liferaft-kv's HTTP API (docs/kv.md)."""

    name = "liferaft-kv"

    def __init__(
        self, endpoints: Sequence[str], value_size: int = 100, token: str | None = None
    ) -> None:
        super().__init__(endpoints, value_size)
        self._body = json.dumps({"value": self.value}).encode()
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._rheaders = {k: v for k, v in self._headers.items() if k != "Content-Type"}
        self._urls: dict[tuple[str, int, str], URL] = {}

    def _url(self, base: str, n: int, query: str) -> URL:
        k = (base, n, query)
        u = self._urls.get(k)
        if u is None:
            path = urllib.parse.quote(bench_key(n), safe="/")
            u = URL(f"{base}/v1/kv/{path}{query}", encoded=True)
            self._urls[k] = u
        return u

    async def discover(self, session: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        """Ask every endpoint for ``/v1/status`` until one names a leader whose
        client address is known."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for ep in self.endpoints:
                try:
                    async with session.get(
                        f"{ep}/v1/status",
                        headers=self._rheaders,
                        timeout=aiohttp.ClientTimeout(total=2),
                    ) as r:
                        if r.status != 200:
                            last = f"{ep}: HTTP {r.status}"
                            continue
                        st = await r.json()
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    last = f"{ep}: {type(exc).__name__}: {exc}"
                    continue
                addr = st.get("leader_client_addr") or ""
                if st.get("leader") and addr:
                    self.leader = _endpoint_url(addr)
                    if ep.startswith("https://"):
                        self.leader = "https://" + self.leader.split("://", 1)[1]
                    self.leader_name = str(st["leader"])
                    return
                last = f"{ep}: no leader yet (role {st.get('role')})"
            await asyncio.sleep(0.1)
        raise BenchError(f"liferaft-kv: no leader found within {timeout:.0f} s ({last})")

    def write(self, n: int) -> Request:
        return Request("PUT", self._url(self.leader, n, ""), self._body, self._headers)

    def read(self, n: int, endpoint: str, stale: bool) -> Request:
        q = "?consistency=stale" if stale else "?consistency=linearizable"
        return Request("GET", self._url(endpoint, n, q), None, self._rheaders)


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class EtcdAdapter(Adapter):
    """etcd v3's grpc-gateway JSON API (etcd 3.4: ``/v3/``; ``/v3beta/`` too).

    Keys and values are base64 in JSON.  A put is ``POST {prefix}/kv/put
    {"key", "value"}``; a linearizable read is ``POST {prefix}/kv/range
    {"key"}`` and the stale-read equivalent adds ``"serializable": true``
    (served from the member's local state, no quorum round).  A range of a
    missing key is a 200 without ``kvs``, so a read only counts when the
    answer holds ``"kvs"``.  The leader is the member whose
    ``header.member_id`` equals the ``leader`` of ``POST
    {prefix}/maintenance/status``; ids are uint64s, sent as strings.
    """

    name = "etcd"

    def __init__(
        self, endpoints: Sequence[str], value_size: int = 100, prefix: str = "auto"
    ) -> None:
        super().__init__(endpoints, value_size)
        if prefix != "auto" and not prefix.startswith("/"):
            raise ValueError("the etcd prefix is 'auto' or starts with '/' (e.g. /v3)")
        self.prefix = prefix.rstrip("/") if prefix != "auto" else "auto"
        self._headers = {"Content-Type": "application/json"}
        self._value_b64 = _b64(self.value)
        self._puts: dict[int, bytes] = {}
        self._ranges: dict[tuple[int, bool], bytes] = {}
        self._urls: dict[tuple[str, str], URL] = {}

    def _url(self, base: str, what: str) -> URL:
        k = (base, what)
        u = self._urls.get(k)
        if u is None:
            u = URL(f"{base}{self.prefix}/{what}", encoded=True)
            self._urls[k] = u
        return u

    def put_body(self, n: int) -> bytes:
        b = self._puts.get(n)
        if b is None:
            b = json.dumps({"key": _b64(bench_key(n)), "value": self._value_b64}).encode()
            self._puts[n] = b
        return b

    def range_body(self, n: int, stale: bool) -> bytes:
        k = (n, stale)
        b = self._ranges.get(k)
        if b is None:
            d: dict[str, Any] = {"key": _b64(bench_key(n))}
            if stale:
                d["serializable"] = True
            b = json.dumps(d).encode()
            self._ranges[k] = b
        return b

    async def _status(
        self, session: aiohttp.ClientSession, ep: str, prefix: str
    ) -> tuple[int, dict[str, Any] | None]:
        async with session.post(
            f"{ep}{prefix}/maintenance/status",
            data=b"{}",
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=2),
        ) as r:
            if r.status != 200:
                return r.status, None
            data: dict[str, Any] = await r.json(content_type=None)
            return 200, data

    async def discover(self, session: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        prefixes = ["/v3", "/v3beta"] if self.prefix == "auto" else [self.prefix]
        while time.monotonic() < deadline:
            ids: dict[str, str] = {}
            leader = ""
            for ep in self.endpoints:
                for prefix in prefixes:
                    try:
                        status, st = await self._status(session, ep, prefix)
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        last = f"{ep}: {type(exc).__name__}: {exc}"
                        break
                    if st is None:
                        last = f"{ep}{prefix}: HTTP {status}"
                        continue  # 404: try the next prefix
                    if self.prefix == "auto":
                        self.prefix = prefix
                        prefixes = [prefix]
                    ids[str(st.get("header", {}).get("member_id", ""))] = ep
                    leader = str(st.get("leader", "") or leader)
                    break
            if leader and leader != "0" and leader in ids:
                self.leader = ids[leader]
                self.leader_name = f"{int(leader):x}" if leader.isdigit() else leader
                return
            if leader and leader != "0":
                last = f"leader {leader} is not among the endpoints"
            await asyncio.sleep(0.1)
        raise BenchError(f"etcd: no leader found within {timeout:.0f} s ({last})")

    def write(self, n: int) -> Request:
        return Request("POST", self._url(self.leader, "kv/put"), self.put_body(n), self._headers)

    def read(self, n: int, endpoint: str, stale: bool) -> Request:
        return Request(
            "POST", self._url(endpoint, "kv/range"), self.range_body(n, stale), self._headers
        )

    def write_ok(self, status: int, body: bytes) -> bool:
        # A gRPC error through the gateway is a non-200 with {"error", "code"}.
        return status == 200 and b'"header"' in body

    def read_ok(self, status: int, body: bytes) -> bool:
        return status == 200 and b'"kvs"' in body


def make_adapter(
    system: str,
    endpoints: Sequence[str],
    value_size: int = 100,
    token: str | None = None,
    etcd_prefix: str = "auto",
) -> Adapter:
    if system == "liferaft":
        return LiferaftAdapter(endpoints, value_size, token=token)
    if system == "etcd":
        return EtcdAdapter(endpoints, value_size, prefix=etcd_prefix)
    raise ValueError(f"unknown system {system!r} (liferaft or etcd)")
