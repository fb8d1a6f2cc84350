"""liferaft-kv and etcd 3.4 through etcd's own protocol: the JSON gateway and
gRPC, 3 processes per cluster on 127.0.0.1 (issue 16, "Performance").

    .venv/bin/python bench/kv_etcd_api.py            # the full run (~2 min; in `make bench-kv`)
    .venv/bin/python bench/kv_etcd_api.py --quick    # a ~1 min smoke run
    .venv/bin/python bench/kv_etcd_api.py --py-spy   # plus py-spy of the liferaft leader

Each round starts a fresh 3-node liferaft-kv cluster (``liferaft serve
--grpc-addr``, default settings) and a fresh 3-node etcd cluster (default
settings), one at a time, interleaved, and measures each through the same
clients, in the same protocol, at 64 connections (``--connections``):

- **JSON gateway**: the HTTP generator of ``liferaft bench kv``
  (liferaft/kv/bench*.py, one aiohttp process) with its etcd adapter:
  ``POST /v3/kv/put`` to the leader, ``POST /v3/kv/range`` (linearizable)
  spread over the nodes, base64 JSON bodies.  Against liferaft-kv only the
  leader discovery differs (its ``/v1/status``; the requests are the same
  bytes).
- **gRPC**: h2load (C, HTTP/2) with prebuilt ``etcdserverpb.KV/Put`` and
  ``/Range`` frames, one h2load process per node read from
  (bench/benchkit/h2load_grpc.py says how gRPC errors, which h2load cannot
  see, are counted).  ``scripts/install-h2load.sh`` installs it; without
  it the gRPC rows are left out, and the output says so.

Each step reports ops/s, p50/p99, errors, the generator's CPU (1.0 = one
core; on this 2-core machine, a generator near 1.0 may be the limit), and
the servers' CPU per operation (the three nodes' utime+stime over the step
divided by its operations) and the leader's busy share of one core.  The
figures are medians over the rounds with min-max.  Targets (issue 16): JSON
gateway liferaft/etcd >= 1.0 for writes and linearizable reads; gRPC >=
0.5.

With ``--py-spy``, after the first liferaft round, one extra gRPC step per
op (not counted) runs while py-spy samples the leader; a summary of where
its time goes follows the table (py-spy takes most of a CPU itself: read
the shares, not the rate).

Every process this script starts is killed by PID on the way out; logs and
data live in a temp dir, removed at the end unless a step failed or
``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import aiohttp  # noqa: E402
from benchkit import report as rep  # noqa: E402
from benchkit import runner  # noqa: E402
from benchkit.h2load_grpc import H2load, find_h2load  # noqa: E402
from benchkit.profiling import pyspy_cmd, summaries, summarize_pyspy_http  # noqa: E402
from benchkit.stats import fmt, med, summarize  # noqa: E402
from kv_bench import (  # noqa: E402
    ETCD,
    LIFERAFT,
    Cluster,
    etcd_version,
    find_etcd,
    start_etcd,
    start_liferaft,  # noqa: E402
)

from liferaft.harness import procs  # noqa: E402
from liferaft.harness.procs import Child, ProcessGroup, tail  # noqa: E402
from liferaft.kv.bench import Config, EtcdAdapter, LiferaftAdapter, run_bench  # noqa: E402

APIS = ("json", "grpc")
API_NAME = {"json": "JSON gateway", "grpc": "gRPC"}
TARGET = {"json": 1.0, "grpc": 0.5}
OPS = ("write", "linearizable", "stale")


@dataclass
class Plan:
    rounds: int
    seconds: float
    warmup: float
    connections: int
    ops: tuple[str, ...] = ("write", "linearizable")


FULL = Plan(rounds=2, seconds=5.0, warmup=0.5, connections=64)
QUICK = Plan(rounds=1, seconds=2.0, warmup=0.5, connections=64)


class LiferaftV3Adapter(EtcdAdapter):
    """liferaft-kv's etcd JSON gateway: the etcd adapter's requests, byte for
    byte; the leader is found through liferaft's own ``/v1/status`` (so the
    rows need no more of the etcd API than Put and Range)."""

    name = LIFERAFT

    def __init__(self, endpoints: Sequence[str], value_size: int = 100) -> None:
        super().__init__(endpoints, value_size, prefix="/v3")

    async def discover(self, session: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        native = LiferaftAdapter(self.endpoints)
        await native.discover(session, timeout)
        self.leader, self.leader_name = native.leader, native.leader_name


# -- CPU of the servers -----------------------------------------------------------------


class CpuMeter:
    """The nodes' CPU seconds between start() and stop(), by PID (/proc)."""

    def __init__(self, pids: list[int], leader: int | None) -> None:
        self.pids, self.leader = pids, leader
        self.t0 = 0.0
        self.c0: dict[int, float] = {}
        self.cores = 0.0  # all nodes, CPU seconds per wall second
        self.leader_cores = 0.0

    def _now(self) -> dict[int, float]:
        return {p: procs.cpu_seconds(p) or 0.0 for p in self.pids}

    def start(self) -> None:
        self.t0, self.c0 = time.monotonic(), self._now()

    def stop(self) -> None:
        wall = max(1e-9, time.monotonic() - self.t0)
        used = {p: c - self.c0.get(p, c) for p, c in self._now().items()}
        self.cores = sum(used.values()) / wall
        self.leader_cores = used.get(self.leader or -1, 0.0) / wall


# -- the run ------------------------------------------------------------------------------


@dataclass
class Step:
    api: str
    op: str
    connections: int
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    gen_cpu: float
    server_cores: float
    leader_cores: float

    @property
    def server_us_per_op(self) -> float | None:
        return self.server_cores / self.rate * 1e6 if self.rate else None


@dataclass
class RunResult:
    system: str
    round: int
    steps: list[Step] = field(default_factory=list)
    error: str | None = None


class Bench:
    def __init__(
        self, a: argparse.Namespace, plan: Plan, tmp: Path, etcd: str | None, h2load: str | None
    ) -> None:
        self.a, self.plan, self.tmp = a, plan, tmp
        self.etcd = etcd
        self.group = ProcessGroup(new_session=True)
        self.h2 = H2load(h2load, self.group, tmp) if h2load else None
        self.systems = [LIFERAFT] + ([ETCD] if etcd else [])
        self.apis = ["json"] + (["grpc"] if h2load else [])
        self.runs: list[RunResult] = []
        self.profiles: list[tuple[str, str]] = []  # (py-spy output, op)
        self.t0 = time.monotonic()

    def say(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)

    async def run(self) -> None:
        for rnd in range(1, self.plan.rounds + 1):
            for system in self.systems:
                rr = RunResult(system, rnd)
                self.runs.append(rr)
                await self.run_cluster(rr)

    async def run_cluster(self, rr: RunResult) -> None:
        base = self.tmp / f"{rr.system}-r{rr.round}"
        base.mkdir(parents=True, exist_ok=True)
        c: Cluster | None = None
        try:
            if rr.system == LIFERAFT:
                c = start_liferaft(self.group, base, self.a.pin, grpc=True)
                adapter: EtcdAdapter = LiferaftV3Adapter(c.endpoints)
            else:
                assert self.etcd is not None
                c = start_etcd(self.group, self.etcd, base, self.a.pin)
                adapter = EtcdAdapter(c.endpoints, prefix="/v3")
            ready = await c.wait_ready()
            self.say(f"{rr.system} r{rr.round}: ready in {ready:.1f} s (logs in {base})")
            await self.json_steps(rr, c, adapter)
            if self.h2 is not None:
                await self.grpc_steps(rr, c, adapter)
                if self.a.py_spy and rr.system == LIFERAFT and not self.profiles:
                    await self.profile(c, adapter)
        except Exception as exc:  # one failed cluster must not cost the others' figures
            rr.error = f"{type(exc).__name__}: {exc}"
            self.say(f"{rr.system} r{rr.round}: FAILED: {rr.error}")
            if c is not None:
                for p in c.procs:
                    self.say(f"  {p.name} (pid {p.pid}) log {p.log}:\n{p.log_tail(8)}")
        finally:
            if c is not None:
                c.stop()

    def meter(self, c: Cluster, adapter: EtcdAdapter) -> CpuMeter:
        return CpuMeter([p.pid for p in c.procs], c.procs[self.leader_index(adapter)].pid)

    @staticmethod
    def leader_index(adapter: EtcdAdapter) -> int:
        return adapter.endpoints.index(adapter.leader)

    async def json_steps(self, rr: RunResult, c: Cluster, adapter: EtcdAdapter) -> None:
        cfg = Config(
            connections=(self.plan.connections,),
            seconds=self.plan.seconds,
            warmup=self.plan.warmup,
            ops=self.plan.ops,
        )
        meters: list[CpuMeter] = []

        async def hook(op: str, n: int, phase: str) -> None:
            if phase == "start":  # the leader is known by now (run_bench found it)
                meters.append(self.meter(c, adapter))
                meters[-1].start()
            else:
                meters[-1].stop()

        res = await run_bench(adapter, cfg, say=lambda m: self.say(f"JSON {m}"), on_step=hook)
        for st, m in zip(res.steps, meters, strict=True):
            rr.steps.append(
                Step(
                    "json",
                    st.op,
                    st.connections,
                    st.rate,
                    st.p50_ms,
                    st.p99_ms,
                    st.error_count,
                    st.client_cpu,
                    m.cores,
                    m.leader_cores,
                )
            )

    def grpc_targets(self, c: Cluster, adapter: EtcdAdapter) -> list[str]:
        """The nodes' gRPC addresses, the leader's first."""
        i = self.leader_index(adapter)
        return [c.grpc[i]] + [g for j, g in enumerate(c.grpc) if j != i]

    async def grpc_steps(self, rr: RunResult, c: Cluster, adapter: EtcdAdapter) -> None:
        assert self.h2 is not None
        targets = self.grpc_targets(c, adapter)
        for op in self.plan.ops:
            m = self.meter(c, adapter)
            st = await self.h2.step(
                op,
                targets,
                self.plan.connections,
                self.plan.seconds,
                self.plan.warmup,
                on_measure=m,
            )
            lat = summarize(st.lat)
            step = Step(
                "grpc",
                op,
                st.connections,
                st.rate,
                lat["p50"],
                lat["p99"],
                st.errors,
                st.gen_cpu,
                m.cores,
                m.leader_cores,
            )
            rr.steps.append(step)
            self.say(f"gRPC {rr.system}: {line(step)}")

    async def profile(self, c: Cluster, adapter: EtcdAdapter) -> None:
        """One more gRPC step per op, not counted, while py-spy samples the leader."""
        assert self.h2 is not None and self.a.py_spy
        secs = max(1, round(self.plan.seconds))
        pid = c.procs[self.leader_index(adapter)].pid
        for op in self.plan.ops:
            out = str(self.tmp / f"liferaft-leader-grpc-{op}.pyspy")
            log = self.tmp / f"py-spy-{op}.log"
            spy: Child = self.group.start(
                "py-spy", pyspy_cmd(self.a.py_spy, pid, secs, out), log=log, cwd=ROOT
            )
            try:
                await asyncio.sleep(0.3)  # py-spy attaches
                st = await self.h2.step(
                    op, self.grpc_targets(c, adapter), self.plan.connections, secs, 0.0
                )
                self.say(f"  (profiled gRPC {op} step, not counted: {st.rate:,.0f}/s)")
                # py-spy stops by itself after -d seconds, then writes its output.
                await asyncio.to_thread(self.group.reap, spy, secs + 10)
            finally:
                self.group.terminate([spy], grace=3.0)
            if Path(out).exists():
                self.profiles.append((out, op))
            else:
                self.say(f"  py-spy wrote nothing; its log:\n{tail(log)}")


def line(s: Step) -> str:
    us = s.server_us_per_op
    return (
        f"{s.op:<12} {s.connections:>3} conns {s.rate:>8,.0f}/s  p50 {fmt_ms(s.p50_ms)}  p99 "
        f"{fmt_ms(s.p99_ms)} ms  errors {s.errors}  generator CPU {s.gen_cpu:.2f}  servers "
        f"{'-' if us is None else f'{us:,.0f}'} µs/op  leader {s.leader_cores:.2f} core"
    )


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# -- report -------------------------------------------------------------------------------


def figures(b: Bench) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(system, api, op) -> medians (min, max) of each figure over the rounds."""
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for s in b.systems:
        for api in b.apis:
            for op in b.plan.ops:
                mine = [
                    st
                    for rr in b.runs
                    if rr.system == s
                    for st in rr.steps
                    if st.api == api and st.op == op
                ]
                out[(s, api, op)] = {
                    "rate": med([x.rate for x in mine]),
                    "p50": med([x.p50_ms for x in mine]),
                    "p99": med([x.p99_ms for x in mine]),
                    "errors": sum(x.errors for x in mine),
                    "gen_cpu": med([x.gen_cpu for x in mine]),
                    "us_op": med([x.server_us_per_op for x in mine]),
                    "leader": med([x.leader_cores for x in mine]),
                    "n": len(mine),
                }
    return out


def report(b: Bench, elapsed: float, partial: bool) -> dict[str, Any]:
    fig = figures(b)
    conns = b.plan.connections
    rate = lambda x: f"{x:,.0f}"  # noqa: E731
    ms = lambda x: f"{x:.2f}"  # noqa: E731
    two = lambda x: f"{x:.2f}"  # noqa: E731
    head = "| API | op |"
    rule = "|---|---|"
    for s in b.systems:
        head += f" {s} ops/s | p50 / p99 ms | errors | gen CPU | server µs/op | leader CPU |"
        rule += "---:|---:|---:|---:|---:|---:|"
    if ETCD in b.systems:
        head += " liferaft/etcd |"
        rule += "---:|"
    lines = [head, rule]
    ratios: dict[str, float] = {}
    targets: dict[str, str] = {}
    verdicts: list[tuple[str, bool]] = []
    parts: list[str] = []
    for api in b.apis:
        for op in b.plan.ops:
            row = f"| {API_NAME[api]} | {op} |"
            for s in b.systems:
                f = fig[(s, api, op)]
                row += (
                    f" {fmt(f['rate'], rate)} | {fmt(f['p50'], ms)} / {fmt(f['p99'], ms)} |"
                    f" {f['errors']} | {fmt(f['gen_cpu'], two)} | {fmt(f['us_op'], rate)} |"
                    f" {fmt(f['leader'], two)} |"
                )
            if ETCD in b.systems:
                a, e = fig[(LIFERAFT, api, op)]["rate"], fig[(ETCD, api, op)]["rate"]
                r = a[0] / e[0] if a and e and e[0] else None
                row += f" {'n/a' if r is None else f'{r:.2f}×'} |"
                if r is not None:
                    label = f"{API_NAME[api]} {op} at {conns} connections, liferaft-kv / etcd"
                    ratios[label] = r
                    if op != "stale":
                        targets[label] = f"≥ {TARGET[api]}"
                        verdicts.append((f"{API_NAME[api]} {op}", r >= TARGET[api]))
                    if a and e:
                        parts.append(f"{API_NAME[api]} {op} {a[0]:,.0f} vs {e[0]:,.0f} = {r:.2f}×")
            lines.append(row)
    notes = [
        f"{conns} connections, closed loop (one request in flight per connection); "
        f"{b.plan.seconds:g} s per step after {b.plan.warmup:g} s of warm-up. Writes: 100-byte "
        "values to the leader (JSON: 1,000 keys; gRPC: one key). Reads: linearizable ranges of "
        "one existing key, spread over the three nodes, the leader first (connection i -> node "
        "i mod 3). 'gen CPU': the load generator's CPU in cores (JSON: the aiohttp process; "
        "gRPC: the h2load processes). 'server µs/op': the three nodes' CPU per operation; "
        "'leader CPU': the leader's CPU in cores (1.00 = one core saturated).",
    ]
    if "grpc" not in b.apis:
        notes.append("gRPC rows left out: h2load not found (scripts/install-h2load.sh).")
    if ETCD in b.systems:
        summary = f"SUMMARY: at {conns} connections, " + "; ".join(parts)
        summary += "; " + (rep.verdicts_text(verdicts) if verdicts else "no ratio")
    else:
        summary = (
            "SUMMARY: etcd not measured ("
            + ("--no-etcd" if b.a.no_etcd else "not installed: run scripts/install-etcd.sh")
            + ")"
        )
    errs = [f"{rr.system} r{rr.round}: {rr.error}" for rr in b.runs if rr.error]
    title = (
        f"etcd protocol: {b.plan.rounds} round(s), order {' '.join(b.systems)} per round; "
        "median (min–max) over rounds"
    )
    rlines = rep.ratio_lines(ratios, targets)
    sections = [
        [rep.heading(title, elapsed, partial)],
        ["\n".join(lines)],
        notes,
        ["Ratios (of medians):", *rlines] if rlines else [],
        ["Failed runs: " + "; ".join(errs)] if errs else [],
    ]
    prof = summaries([(p, f"{LIFERAFT} (gRPC {op})") for p, op in b.profiles], summarize_pyspy_http)
    rep.emit(sections, prof, summary)
    return {
        "table": "\n".join(lines),
        "notes": notes,
        "ratios": ratios,
        "summary": summary,
        "profile": prof,
        "figures": {f"{s}/{api}/{op}": v for (s, api, op), v in fig.items()},
    }


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = runner.parser(
        "python bench/kv_etcd_api.py",
        "liferaft-kv vs etcd 3.4 through etcd's protocol (JSON gateway and gRPC).",
        quick_help="1 round of 2 s steps (smoke run)",
        rounds_help="rounds of liferaft, etcd (default 2; quick 1)",
    )
    p.add_argument("--seconds", type=float, help="measured seconds per step (default 5)")
    p.add_argument("--connections", type=int, help="connections per step (default 64)")
    p.add_argument(
        "--ops", help=f"steps, comma-separated from {','.join(OPS)} (default write,linearizable)"
    )
    p.add_argument("--no-etcd", action="store_true", help="measure liferaft-kv only")
    p.add_argument("--etcd", help="path to the etcd binary (default: PATH, then /usr/bin/etcd)")
    p.add_argument("--h2load", help="path to h2load (default: PATH, then /usr/bin/h2load)")
    runner.add_common_flags(
        p,
        keep_help="keep the temp dir (logs, data)",
        py_spy_help="sample the liferaft leader during one extra gRPC step per op (path to "
        "py-spy, or found next to python)",
    )
    a = p.parse_args(argv)
    plan = QUICK if a.quick else FULL
    plan.rounds = a.rounds or plan.rounds
    plan.seconds = a.seconds or plan.seconds
    plan.connections = a.connections or plan.connections
    if a.ops:
        plan.ops = tuple(o.strip() for o in a.ops.split(",") if o.strip())
    bad = [o for o in plan.ops if o not in OPS]
    if bad or not plan.ops:
        p.error(f"--ops: unknown {bad}; choose from {', '.join(OPS)}")
    if plan.rounds < 1 or not 0 < plan.seconds <= 600 or not 1 <= plan.connections <= 1024:
        p.error("--rounds >= 1, --seconds in (0, 600], --connections in 1..1024")
    runner.resolve_py_spy(p, a, ".venv/bin/pip install py-spy")
    etcd = None if a.no_etcd else find_etcd(a.etcd)
    h2load = find_h2load(a.h2load)
    if a.h2load and not h2load:
        p.error(f"--h2load {a.h2load}: not an executable")
    tmp = runner.temp_dir("liferaft-kv-etcd-api-")
    bench = Bench(a, plan, tmp, etcd, h2load)
    print(runner.header("kv_etcd_api", a.quick, tmp), flush=True)
    print(f"etcd: {etcd and f'{etcd_version(etcd)} at {etcd}'}; h2load: {h2load}", flush=True)
    rc = runner.run(bench.run(), bench.group.kill_all_now)
    elapsed = time.monotonic() - bench.t0
    return runner.conclude(
        rc,
        failed=any(rr.error for rr in bench.runs),
        have_figures=any(rr.steps for rr in bench.runs),
        report=lambda partial: report(bench, elapsed, partial),
        json_path=a.json,
        meta={
            "plan": asdict(plan),
            "etcd": etcd and etcd_version(etcd),
            "h2load": h2load,
            "runs": [asdict(rr) for rr in bench.runs],
        },
        tmp=tmp,
        keep=a.keep,
    )


if __name__ == "__main__":
    sys.exit(main())
