"""``liferaft bench kv``: an HTTP load generator for liferaft-kv (and, through
an adapter, for etcd v3.4's JSON gateway).

Theory of operation
-------------------

A *step* is one kind of operation at one concurrency for a fixed time.  It
opens ``connections`` keep-alive HTTP connections (one aiohttp session, one
worker task per connection, each a loop of sequential requests: closed-loop
load, so the rate is what the server sustains at that concurrency), runs a
short warm-up that is not counted (connections are opened, caches warmed),
then counts every request that *completes* inside the measured window.
Throughput is those completions over the window; p50/p99 are their
latencies (nearest rank).  Any answer other than success is an error,
counted by kind (``http 503``, ``ClientOSError``, ...), and is neither in the
rate nor in the latencies.

The operations:

* ``write``: a put of a ``value_size``-byte value to key ``bench/<n>``
  (``n`` cycles over ``keys`` keys), sent to the leader, found before the
  run (liferaft: ``GET /v1/status`` -> ``leader_client_addr``; etcd:
  ``POST /v3/maintenance/status`` -> the member whose id is ``leader``).
* ``linearizable``: a read of an existing key (liferaft: ReadIndex;
  etcd: a default, linearizable range).
* ``stale``: a read served from the local state (liferaft:
  ``consistency=stale``; etcd: ``"serializable": true``).

Reads go to every endpoint in turn (worker *i* to endpoint *i mod n*, the
leader first: one connection reads at the leader, 16 spread 6/5/5), or only
to the leader with ``--reads-at leader``; the output says which.  Before
the first step every key is written once, so reads always find a value.

The generator is a single Python process.  Each step reports the CPU the
generator itself used (process time over wall time): near 100% means the
client, not the server, may be the limit of that step.

Adapters
--------

An :class:`Adapter` turns an operation into an HTTP request and judges the
answer; the loop above is the same for every system.  :class:`LiferaftAdapter`
speaks liferaft-kv's HTTP API (docs/kv.md); :class:`EtcdAdapter` speaks etcd's grpc-gateway JSON
(``POST /v3/kv/put`` and ``/v3/kv/range`` with base64 keys and values; etcd
3.4 serves it under ``/v3/`` and, deprecated, ``/v3beta/``; 3.3 only under
``/v3beta/``; ``--etcd-prefix auto`` probes for it).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import math
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

OPS = ("write", "linearizable", "stale")
READS_AT = ("all", "leader")
MAX_SECONDS = 600.0


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


# -- the load loop ------------------------------------------------------------------------


@dataclass
class Config:
    connections: tuple[int, ...] = (1, 16, 64)
    seconds: float = 5.0  # measured window of each step
    warmup: float = 0.5  # before the window, not counted
    ops: tuple[str, ...] = OPS
    reads_at: str = "all"
    keys: int = 1000
    request_timeout: float = 10.0

    def check(self) -> None:
        if not self.connections or any(c < 1 or c > 4096 for c in self.connections):
            raise ValueError("connections must be 1..4096")
        if not 0 < self.seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be in (0, {MAX_SECONDS:.0f}]")
        if not 0 <= self.warmup <= 60:
            raise ValueError("warmup must be in [0, 60]")
        bad = [o for o in self.ops if o not in OPS]
        if bad or not self.ops:
            raise ValueError(f"unknown op(s) {bad}; choose from {', '.join(OPS)}")
        if self.reads_at not in READS_AT:
            raise ValueError(f"reads_at is one of {', '.join(READS_AT)}")
        if self.keys < 1:
            raise ValueError("keys must be >= 1")


@dataclass
class StepResult:
    op: str
    connections: int
    seconds: float
    ok: int
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)
    client_cpu: float = 0.0  # the generator's process time / wall time, this step

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class Result:
    system: str
    endpoints: list[str]
    leader: str
    leader_name: str
    reads_at: str
    value_size: int
    keys: int
    steps: list[StepResult] = field(default_factory=list)

    def step(self, op: str, connections: int) -> StepResult | None:
        return next((s for s in self.steps if s.op == op and s.connections == connections), None)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for s, sd in zip(self.steps, d["steps"], strict=True):
            sd["error_count"] = s.error_count
        return d


def percentile(sorted_lat: Sequence[float], q: float) -> float | None:
    """Nearest rank: p99 of 100 samples is the 99th smallest."""
    if not sorted_lat:
        return None
    i = max(0, min(len(sorted_lat) - 1, math.ceil(q * len(sorted_lat) - 1e-9) - 1))
    return sorted_lat[i]


StepHook = Callable[[str, int, str], Awaitable[None]]


async def _run_step(adapter: Adapter, cfg: Config, op: str, conns: int, start_n: int) -> StepResult:
    """``conns`` workers, each a loop of sequential requests, over one pool of
    keep-alive connections (so ``conns`` connections at most)."""
    keys = cfg.keys
    if cfg.reads_at == "leader":
        eps = [adapter.leader]
    else:  # the leader first, so that one connection reads at the leader in every system
        eps = [adapter.leader] + [e for e in adapter.endpoints if e != adapter.leader]
    if op == "write":
        make: Callable[[int, int], Request] = lambda n, w: adapter.write(n % keys)  # noqa: E731
        ok = adapter.write_ok
    else:
        stale = op == "stale"
        make = lambda n, w: adapter.read(n % keys, eps[w % len(eps)], stale)  # noqa: E731
        ok = adapter.read_ok
    counter = itertools.count(start_n)
    lat: list[float] = []
    errors: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=cfg.request_timeout)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
    perf = time.perf_counter
    loop_start = perf()
    begin = loop_start + cfg.warmup
    end = begin + cfg.seconds
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    ) as session:

        async def worker(w: int) -> None:
            request = session.request
            while True:
                t0 = perf()
                if t0 >= end:
                    return
                r = make(next(counter), w)
                try:
                    async with request(r.method, r.url, data=r.body, headers=r.headers) as resp:
                        body = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    if perf() >= begin:
                        errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)  # a refused connection must not spin
                    continue
                t1 = perf()
                if t1 < begin or t1 > end:
                    continue
                if ok(status, body):
                    lat.append(t1 - t0)
                else:
                    errors[f"http {status}"] += 1

        cpu0 = time.process_time()
        tasks = [asyncio.create_task(worker(w)) for w in range(conns)]
        try:
            await asyncio.wait(tasks, timeout=cfg.warmup + cfg.seconds + cfg.request_timeout + 5)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        cpu = time.process_time() - cpu0
        wall = perf() - loop_start
    lat.sort()

    def ms(x: float | None) -> float | None:
        return None if x is None else x * 1e3

    return StepResult(
        op=op,
        connections=conns,
        seconds=cfg.seconds,
        ok=len(lat),
        rate=len(lat) / cfg.seconds,
        p50_ms=ms(percentile(lat, 0.50)),
        p99_ms=ms(percentile(lat, 0.99)),
        max_ms=ms(lat[-1] if lat else None),
        errors=dict(errors),
        client_cpu=cpu / wall if wall > 0 else 0.0,
    )


async def preload(adapter: Adapter, keys: int, connections: int = 16, timeout: float = 10.0) -> int:
    """Write every key once (reads must find a value); the count of failures."""
    failures = 0
    it = iter(range(keys))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:

        async def worker() -> None:
            nonlocal failures
            for n in it:
                r = adapter.write(n)
                try:
                    async with session.request(
                        r.method, r.url, data=r.body, headers=r.headers
                    ) as resp:
                        if not adapter.write_ok(resp.status, await resp.read()):
                            failures += 1
                except (aiohttp.ClientError, TimeoutError, OSError):
                    failures += 1

        await asyncio.gather(*(worker() for _ in range(min(connections, keys))))
    return failures


async def run_bench(
    adapter: Adapter,
    cfg: Config,
    *,
    say: Callable[[str], None] = print,
    on_step: StepHook | None = None,
) -> Result:
    """Find the leader, write every key once, then one step per (op, connections),
    ops in the order given and, within an op, connections in the order given.

    ``on_step(op, connections, "start"|"end")`` is awaited around each step
    (bench/kv_bench.py starts a profiler there)."""
    cfg.check()
    async with aiohttp.ClientSession() as session:
        await adapter.discover(session)
    say(f"{adapter.name}: leader {adapter.leader_name} at {adapter.leader}")
    failed = await preload(adapter, cfg.keys)
    if failed:
        raise BenchError(f"{adapter.name}: {failed} of {cfg.keys} preload writes failed")
    res = Result(
        system=adapter.name,
        endpoints=list(adapter.endpoints),
        leader=adapter.leader,
        leader_name=adapter.leader_name,
        reads_at=cfg.reads_at,
        value_size=len(adapter.value),
        keys=cfg.keys,
    )
    n = 0
    for op in cfg.ops:
        for conns in cfg.connections:
            if on_step is not None:
                await on_step(op, conns, "start")
            try:
                st = await _run_step(adapter, cfg, op, conns, n)
            finally:
                if on_step is not None:
                    await on_step(op, conns, "end")
            n += st.ok + st.error_count
            res.steps.append(st)
            say(f"  {adapter.name}: {format_step(st)}")
    return res


# -- output -------------------------------------------------------------------------------


def _f(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_step(s: StepResult) -> str:
    err = f"  errors {s.error_count} {dict(s.errors)}" if s.errors else ""
    return (
        f"{s.op:<12} {s.connections:>4} conns  {s.rate:>9,.0f}/s  p50 {_f(s.p50_ms, '.2f')}"
        f"  p99 {_f(s.p99_ms, '.2f')} ms  client cpu {s.client_cpu * 100:.0f}%{err}"
    )


def reads_description(res: Result) -> str:
    if res.reads_at == "leader":
        return f"reads at the leader only ({res.leader})"
    return (
        f"reads spread over all {len(res.endpoints)} endpoints "
        "(connection i -> endpoint i mod n, the leader first)"
    )


def format_table(res: Result) -> str:
    lines = [
        f"{res.system}: writes ({res.value_size}-byte values, {res.keys} keys) to the leader "
        f"{res.leader_name} at {res.leader}; {reads_description(res)}",
        "",
        "| op | conns | ops/s | p50 ms | p99 ms | errors | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in res.steps:
        lines.append(
            f"| {s.op} | {s.connections} | {s.rate:,.0f} | {_f(s.p50_ms, '.2f')} | "
            f"{_f(s.p99_ms, '.2f')} | {s.error_count} | {s.client_cpu * 100:.0f}% |"
        )
    return "\n".join(lines)


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


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {s!r}") from exc


def _words(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="liferaft bench kv",
        description="HTTP load generator: writes/s, linearizable and stale reads/s at several "
        "concurrencies, with p50/p99 latency (liferaft-kv, or etcd v3 through its JSON gateway).",
    )
    p.add_argument("--endpoints", required=True, help="comma-separated HOST:PORT (or URLs)")
    p.add_argument("--system", choices=("liferaft", "etcd"), default="liferaft")
    p.add_argument(
        "--connections", type=_ints, default=(1, 16, 64), help="concurrencies (default 1,16,64)"
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measured time per step (default 5)")
    p.add_argument(
        "--warmup", type=float, default=0.5, help="uncounted time before each step (default 0.5)"
    )
    p.add_argument(
        "--ops", type=_words, default=OPS, help=f"subset of {','.join(OPS)} (run in this order)"
    )
    p.add_argument(
        "--reads-at",
        choices=READS_AT,
        default="all",
        help="spread reads over all endpoints (default) or send them to the leader",
    )
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    p.add_argument("--keys", type=int, default=1000, help="distinct keys (default 1000)")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    p.add_argument("--token-file", help="liferaft: file holding the bearer token")
    p.add_argument(
        "--etcd-prefix", default="auto", help="etcd gateway prefix: auto (probe), /v3, /v3beta"
    )
    p.add_argument("--json", help="write the result to this file")
    a = p.parse_args(argv)
    cfg = Config(
        connections=a.connections,
        seconds=a.seconds,
        warmup=a.warmup,
        ops=a.ops,
        reads_at=a.reads_at,
        keys=a.keys,
        request_timeout=a.timeout,
    )
    try:
        cfg.check()
        if not 1 <= a.value_size <= 1 << 20:
            raise ValueError("value size must be 1..1048576")
        token = Path(a.token_file).read_text().strip() if a.token_file else None
        adapter = make_adapter(
            a.system, parse_endpoints(a.endpoints), a.value_size, token, a.etcd_prefix
        )
    except (ValueError, OSError) as exc:
        p.error(str(exc))
    try:
        res = asyncio.run(run_bench(adapter, cfg))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print()
    print(format_table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res.to_json(), f, indent=1)
        print(f"\nwrote {a.json}")
    # Errors are in the table; only a step with no success at all fails the run.
    return 1 if any(s.ok == 0 for s in res.steps) else 0


if __name__ == "__main__":
    sys.exit(main())
