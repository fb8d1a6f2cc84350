"""What a lease keep-alive costs liferaft-kv (issue 15, "Performance").

    .venv/bin/python bench/lease_keepalive.py              # 1,000 leases, 16 conns, 10 s per step
    .venv/bin/python bench/lease_keepalive.py --quick      # 100 leases, 3 s per step

A fresh 3-node ``liferaft serve`` cluster; ``--leases`` leases are granted
(TTL ``--ttl`` s), then ``--conns`` keep-alive connections, each one request
at a time, refresh them round-robin (``POST /v1/lease/{id}/keepalive``) for
``--seconds``, first sent to the leader, then to a follower (which forwards
each one to the leader: docs/kv.md, "Leases").  Per step:

- keep-alives per second, and their p50 / p99 latency;
- CPU seconds used by the leader, the follower and this load generator
  (from /proc), and keep-alives per leader CPU-second: the keep-alives one
  core of the leader can serve;
- the leader's ``last_log_index`` (``GET /v1/status``) before and after:
  a keep-alive must not write a log entry, so it must not move (the
  leader's own no-op at election is before the first step).

Every process is killed by PID on the way out; the temp dir is removed
unless ``--keep``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from benchkit import report as rep  # noqa: E402
from benchkit import runner  # noqa: E402
from kv_bench import Cluster, start_liferaft  # noqa: E402
from watch_fanout import Histogram, self_cpu  # noqa: E402

from liferaft.harness.procs import ProcessGroup, cpu_seconds  # noqa: E402
from liferaft.kv.bench import LiferaftAdapter  # noqa: E402


@dataclass
class Step:
    via: str  # "leader" or "follower"
    node: str  # the node the requests went to
    seconds: float = 0.0
    ok: int = 0
    errors: int = 0
    rate: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    leader_cpu_s: float = 0.0
    follower_cpu_s: float = 0.0
    gen_cpu_s: float = 0.0
    per_leader_core_s: float | None = None
    log_before: int = 0
    log_after: int = 0
    first_error: str = ""


@dataclass
class Run:
    leases: int
    ttl: int
    conns: int
    steps: list[Step] = field(default_factory=list)


async def status(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/v1/status") as r:
        r.raise_for_status()
        out: dict[str, Any] = await r.json()
        return out


async def grant(http: aiohttp.ClientSession, base: str, n: int, ttl: int) -> list[int]:
    ids = []
    for _ in range(n):
        async with http.post(f"{base}/v1/lease", json={"ttl": ttl}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"grant: HTTP {r.status} {body}")
            ids.append(int(body["id"]))
    return ids


async def step(
    http: aiohttp.ClientSession,
    c: Cluster,
    via: str,
    base: str,
    leader: str,
    follower: str,
    ids: list[int],
    a: Any,
) -> Step:
    name_of = dict(zip((f"http://{e}" for e in c.endpoints), c.names, strict=True))
    st = Step(via, name_of[base])
    lat = Histogram()
    urls = [f"{base}/v1/lease/{i}/keepalive" for i in ids]
    pid = {n: c.pid_of(n) or 0 for n in c.names}
    lname, fname = name_of[leader], name_of[follower]
    st.log_before = int((await status(http, leader))["last_log_index"])
    cpu0 = (cpu_seconds(pid[lname]) or 0.0, cpu_seconds(pid[fname]) or 0.0, self_cpu())
    t0 = time.monotonic()
    end = t0 + a.seconds
    counter = iter(range(10**12))

    async def worker() -> None:
        while time.monotonic() < end:
            url = urls[next(counter) % len(urls)]
            t = time.monotonic()
            try:
                async with http.post(url) as r:
                    body = await r.read()
                    good = r.status == 200
            except (aiohttp.ClientError, TimeoutError) as exc:
                good, body = False, repr(exc).encode()
            if good:
                st.ok += 1
                lat.add(time.monotonic() - t)
            else:
                st.errors += 1
                st.first_error = st.first_error or body[:200].decode(errors="replace")

    await asyncio.gather(*(worker() for _ in range(a.conns)))
    st.seconds = time.monotonic() - t0
    lc = (cpu_seconds(pid[lname]) or 0.0) - cpu0[0]
    fc = (cpu_seconds(pid[fname]) or 0.0) - cpu0[1]
    st.leader_cpu_s, st.follower_cpu_s = round(lc, 2), round(fc, 2)
    st.gen_cpu_s = round(self_cpu() - cpu0[2], 2)
    st.rate = st.ok / st.seconds
    st.p50_ms, st.p99_ms = lat.pct(0.5), lat.pct(0.99)
    st.per_leader_core_s = st.ok / lc if lc > 0 else None
    st.log_after = int((await status(http, leader))["last_log_index"])
    return st


async def main_async(a: Any, tmp: Path, group: ProcessGroup, run: Run) -> None:
    c = start_liferaft(group, tmp, a.pin)
    try:
        await c.wait_ready()
        adapter = LiferaftAdapter(c.endpoints)
        conn = aiohttp.TCPConnector(limit=a.conns + 4)
        async with aiohttp.ClientSession(connector=conn) as http:
            await adapter.discover(http)
            leader = adapter.leader
            follower = next(e for e in adapter.endpoints if e != leader)
            ids = await grant(http, leader, a.leases, a.ttl)
            print(f"{len(ids)} leases of {a.ttl} s granted; leader {adapter.leader_name}")
            for via, base in (("leader", leader), ("follower", follower)):
                st = await step(http, c, via, base, leader, follower, ids, a)
                run.steps.append(st)
                log = f"log {st.log_before} -> {st.log_after}"
                print(f"  via {via} {st.node}: {st.rate:,.0f}/s, leader CPU {st.leader_cpu_s} s, "
                      f"{log}, errors {st.errors}", flush=True)  # fmt: skip
    finally:
        c.stop()


def report(run: Run) -> str:
    lines = [
        "| via | node | keep-alives/s | p50 / p99 ms | errors | leader CPU s | follower CPU s "
        "| gen CPU s | keep-alives per leader CPU-s | leader last_log_index before → after |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in run.steps:
        per = "n/a" if s.per_leader_core_s is None else f"{s.per_leader_core_s:,.0f}"
        p50 = "n/a" if s.p50_ms is None else f"{s.p50_ms:.1f}"
        p99 = "n/a" if s.p99_ms is None else f"{s.p99_ms:.1f}"
        lines.append(
            f"| {s.via} | {s.node} | {s.rate:,.0f} | {p50} / {p99} | {s.errors} | "
            f"{s.leader_cpu_s:.2f} | {s.follower_cpu_s:.2f} | {s.gen_cpu_s:.2f} | {per} | "
            f"{s.log_before} → {s.log_after} |"
        )
    moved = [s.via for s in run.steps if s.log_after != s.log_before]
    verdict = "log entries written by keep-alives: " + (
        "none" if not moved else f"YES (via {', '.join(moved)})"
    )
    rates = "; ".join(
        f"via {s.via} {s.rate:,.0f}/s = "
        + ("n/a" if s.per_leader_core_s is None else f"{s.per_leader_core_s:,.0f}")
        + " per leader CPU-second"
        for s in run.steps
    )
    summary = f"SUMMARY: {run.leases} leases, {run.conns} conns: {rates}; {verdict}"
    return "\n".join(lines) + "\n\n" + summary


def main(argv: list[str] | None = None) -> int:
    p = runner.parser(
        "python bench/lease_keepalive.py",
        "Lease keep-alive cost on a 3-node liferaft-kv cluster, via the leader and a follower.",
        quick_help="100 leases, 3 s per step",
        rounds_help="(unused: one round)",
    )
    p.add_argument("--leases", type=int, default=1000)
    p.add_argument("--ttl", type=int, default=60, help="lease TTL in seconds (60)")
    p.add_argument("--conns", type=int, default=16, help="keep-alive connections (16)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per step (10)")
    runner.add_run_flags(p, keep_help="keep the temp dir")
    a = p.parse_args(argv)
    if a.quick:
        a.leases, a.seconds = 100, 3.0
    if a.leases < 1 or a.conns < 1 or a.seconds <= 0:
        p.error("--leases, --conns and --seconds must be positive")
    tmp = runner.temp_dir("liferaft-lease-bench-")
    print(runner.header("lease_keepalive", a.quick, tmp), flush=True)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    group = ProcessGroup(new_session=True)
    run = Run(a.leases, a.ttl, a.conns)
    rc = runner.run(main_async(a, tmp, group, run), group.kill_all_now)
    if run.steps:
        print(report(run))
        print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if a.json:
            rep.write_json(a.json, {"argv": sys.argv, "run": asdict(run)})
    moved = any(s.log_after != s.log_before for s in run.steps)
    runner.finish(tmp, bool(a.keep or rc))
    return rc or (1 if moved else 0)


if __name__ == "__main__":
    sys.exit(main())
