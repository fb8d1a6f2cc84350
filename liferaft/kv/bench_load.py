"""The load loop of ``liferaft bench kv``: steps of one operation at one
concurrency, closed-loop, timed over a measured window after a warm-up
(liferaft/kv/bench.py has the theory of operation).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import aiohttp

from .bench_adapters import Adapter, BenchError, Request
from .bench_report import Result, StepResult, format_step

__all__ = [
    "MAX_SECONDS",
    "OPS",
    "READS_AT",
    "Config",
    "StepHook",
    "percentile",
    "preload",
    "run_bench",
]

OPS = ("write", "linearizable", "stale")
READS_AT = ("all", "leader")
MAX_SECONDS = 600.0


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
