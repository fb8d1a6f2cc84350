"""liferaft-kv and etcd 3.4 side by side: 3 processes per cluster on 127.0.0.1.

    .venv/bin/python bench/kv_bench.py             # the full run (~4 min; `make bench-kv`)
    .venv/bin/python bench/kv_bench.py --quick     # a ~40 s smoke run
    .venv/bin/python bench/kv_bench.py --py-spy    # plus py-spy of the liferaft leader

Each round starts a fresh 3-node liferaft-kv cluster (``liferaft serve``,
fdatasync on, the default settings) and, when an ``etcd`` binary is found
(PATH or /usr/bin/etcd; ``scripts/install-etcd.sh`` installs Debian's
etcd-server), a fresh 3-node etcd cluster (default settings, its JSON
gateway), one at a time, interleaved: liferaft, etcd, liferaft, etcd...  The
same load generator (liferaft/kv/bench.py, in this process, through an
adapter per system) measures on each: writes to the leader, linearizable
reads and stale (etcd: serializable) reads, at 1, 16 and 64 keep-alive
connections, 5 s per step.  Figures are medians over the rounds with
min-max; the target is liferaft/etcd >= 1.0 for writes and linearizable
reads at 64 connections.

With ``--py-spy``, after the first liferaft round's measured steps, one
extra write step at the highest concurrency (not counted in the table) runs
while py-spy samples the leader (1000 Hz, ``--nonblocking``); a summary of
where its time goes follows the table.  py-spy itself takes most of a CPU,
so that step runs slower than the measured one: read the shares, not the
rate.  py-spy sees Python frames only: time in C (uvloop, the aiohttp C
parser, msgspec, syscalls such as send and fdatasync) counts for the Python
function that called it, or as "inside uvloop/C" with no Python frame.

Every process this script starts is killed by PID on the way out (normal
end, error, Ctrl-C, SIGTERM).  Logs and data live in a temp dir, removed at
the end unless a cluster failed (then it is kept and named) or ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from benchkit import report as rep  # noqa: E402
from benchkit import runner  # noqa: E402
from benchkit.profiling import pyspy_cmd, summaries, summarize_pyspy_http  # noqa: E402
from benchkit.stats import fmt, med  # noqa: E402
from benchkit.yardsticks import measure_fsync  # noqa: E402

from liferaft.harness.ports import free_ports  # noqa: E402
from liferaft.harness.procs import Child, ProcessGroup, tail  # noqa: E402
from liferaft.harness.serve import ServeCluster, wait_http_ok  # noqa: E402
from liferaft.kv.bench import (  # noqa: E402
    Adapter,
    Config,
    EtcdAdapter,
    LiferaftAdapter,
    Result,
    StepResult,
    format_step,
    reads_description,
    run_bench,
)

LIFERAFT = "liferaft-kv"
ETCD = "etcd"
NODES = 3


@dataclass
class Plan:
    rounds: int
    seconds: float
    warmup: float
    connections: tuple[int, ...]
    fsync_seconds: float


FULL = Plan(rounds=2, seconds=5.0, warmup=0.5, connections=(1, 16, 64), fsync_seconds=1.0)
QUICK = Plan(rounds=1, seconds=1.0, warmup=0.3, connections=(1, 16, 64), fsync_seconds=0.3)


def find_etcd(explicit: str | None) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("etcd")
    if found:
        return found
    return "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else None


def etcd_version(etcd: str) -> str:
    try:
        out = subprocess.run([etcd, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    for line in out.stdout.splitlines():
        if line.lower().startswith("etcd version:"):
            return line.split(":", 1)[1].strip()
    return "?"


# -- clusters -----------------------------------------------------------------------------


@dataclass
class Cluster:
    system: str
    group: ProcessGroup  # the run's one registry (liferaft.harness)
    procs: list[Child] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # node ids, in endpoint order
    endpoints: list[str] = field(default_factory=list)  # client HOST:PORT
    grpc: list[str] = field(default_factory=list)  # etcd gRPC HOST:PORT, in endpoint order
    health: str = ""  # the GET path that answers 200 when a node is ready

    def pid_of(self, name: str) -> int | None:
        for n, p in zip(self.names, self.procs, strict=False):
            if n == name:
                return p.pid
        return None

    async def wait_ready(self, seconds: float = 30.0) -> float:
        """Until every node answers its health route with 200 (liferaft:
        /readyz, a leader known and everything applied; etcd: /health)."""
        targets = [(p.name, e, p) for p, e in zip(self.procs, self.endpoints, strict=True)]
        try:
            return await asyncio.to_thread(wait_http_ok, targets, self.health, seconds)
        except RuntimeError as exc:
            raise RuntimeError(f"{self.system}: {exc}") from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL whatever is left after 3 s; by PID."""
        self.group.terminate(self.procs, grace=3.0)


def start_liferaft(
    group: ProcessGroup, base: Path, pin: bool, flags: tuple[str, ...] = (), grpc: bool = False
) -> Cluster:
    """A fresh 3-node liferaft-kv cluster (``liferaft serve``, default settings
    plus ``flags``; ``grpc``: etcd's gRPC API too, on ``--grpc-addr``)."""
    sc = ServeCluster(base, cwd=ROOT, cpus=pin, group=group, flags=flags, grpc=grpc)
    sc.add_nodes(NODES)
    sc.start_all()
    nodes = list(sc.nodes.values())
    c = Cluster(LIFERAFT, group, names=[n.id for n in nodes], health="/readyz")
    c.endpoints = [n.client for n in nodes]
    c.grpc = [n.grpc for n in nodes if n.grpc]
    c.procs = [n.child for n in nodes if n.child is not None]
    return c


def start_etcd(group: ProcessGroup, etcd: str, base: Path, pin: bool) -> Cluster:
    ports = free_ports(2 * NODES)
    names = [f"e{i + 1}" for i in range(NODES)]
    peers = [f"http://127.0.0.1:{ports[i]}" for i in range(NODES)]
    clients = [f"127.0.0.1:{ports[NODES + i]}" for i in range(NODES)]
    spec = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
    # etcd serves gRPC and its JSON gateway on the one client port.
    c = Cluster(ETCD, group, names=names, endpoints=clients, grpc=clients, health="/health")
    for i, n in enumerate(names):
        cmd = [
            etcd,
            "--name",
            n,
            "--data-dir",
            str(base / n),
            "--initial-advertise-peer-urls",
            peers[i],
            "--listen-peer-urls",
            peers[i],
            "--listen-client-urls",
            f"http://{clients[i]}",
            "--advertise-client-urls",
            f"http://{clients[i]}",
            "--initial-cluster",
            spec,
            "--initial-cluster-token",
            f"kv-bench-{base.name}",
            "--initial-cluster-state",
            "new",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        cpu = i % (os.cpu_count() or 1) if pin else None
        log = base / f"{n}.log"
        c.procs.append(group.start(f"{ETCD} {n}", cmd, log=log, cwd=ROOT, cpu=cpu))
    return c


# -- the run ------------------------------------------------------------------------------


@dataclass
class RunResult:
    system: str
    round: int
    result: dict[str, Any] | None = None
    error: str | None = None
    pids: list[int] = field(default_factory=list)
    ready_s: float | None = None


class Bench:
    def __init__(self, args: argparse.Namespace, plan: Plan, tmp: Path, etcd: str | None) -> None:
        self.args = args
        self.plan = plan
        self.tmp = tmp
        self.etcd = etcd
        self.group = ProcessGroup(new_session=True)
        self.runs: list[RunResult] = []
        self.fsync_ms: list[float] = []
        self.profiles: list[str] = []
        self.t0 = time.monotonic()
        self.systems = [LIFERAFT] + ([ETCD] if etcd else [])

    def say(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", flush=True)

    def config(self) -> Config:
        return Config(
            connections=self.plan.connections,
            seconds=self.plan.seconds,
            warmup=self.plan.warmup,
            reads_at=self.args.reads_at,
        )

    async def run(self) -> None:
        for rnd in range(1, self.plan.rounds + 1):
            fs = measure_fsync(self.tmp, self.plan.fsync_seconds)
            p50 = fs["p50"]
            if fs["n"] and p50 is not None:
                self.fsync_ms.append(p50)
                self.say(f"round {rnd}: fdatasync(100 B) p50 {p50:.3f} ms")
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
                c = start_liferaft(self.group, base, self.args.pin)
                adapter: Adapter = LiferaftAdapter(c.endpoints)
            else:
                assert self.etcd is not None
                c = start_etcd(self.group, self.etcd, base, self.args.pin)
                adapter = EtcdAdapter(c.endpoints, prefix=self.args.etcd_prefix)
            rr.pids = [p.pid for p in c.procs]
            rr.ready_s = await c.wait_ready()
            self.say(
                f"{rr.system} r{rr.round}: ready in {rr.ready_s:.1f} s "
                f"(pids {rr.pids}, logs in {base})"
            )
            res = await run_bench(adapter, self.config(), say=self.say)
            rr.result = res.to_json()
            if self.args.py_spy and rr.system == LIFERAFT and not self.profiles:
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

    async def profile(self, c: Cluster, adapter: Adapter) -> None:
        """One more write step at the highest concurrency, not counted, while
        py-spy samples the leader."""
        conns = max(self.plan.connections)
        secs = max(1, math.ceil(self.plan.seconds))
        out = str(self.tmp / "liferaft-leader.pyspy")
        spy: Child | None = None

        async def hook(op: str, n: int, phase: str) -> None:
            nonlocal spy
            pid = c.pid_of(adapter.leader_name)
            if phase == "start" and pid is not None:
                cmd = pyspy_cmd(self.args.py_spy, pid, secs, out)
                spy = self.group.start("py-spy", cmd, log=self.tmp / "py-spy.log", cwd=ROOT)
                await asyncio.sleep(0.3)  # py-spy attaches (inside the step's warm-up)
            elif phase == "end" and spy is not None:
                # py-spy stops by itself after -d seconds and then writes its
                # output; a signal before that would lose the samples.
                await asyncio.to_thread(self.group.reap, spy, secs + 10)
                self.group.terminate([spy], grace=3.0)

        cfg = self.config()
        cfg.ops = ("write",)
        cfg.connections = (conns,)
        cfg.warmup = max(cfg.warmup, 0.5)
        self.say(f"{LIFERAFT}: py-spy on the leader {adapter.leader_name}, {conns} conns writes")
        res: Result = await run_bench(adapter, cfg, say=self.say, on_step=hook)
        st: StepResult = res.steps[0]
        self.say(f"  (profiled step, not counted: {format_step(st)})")
        if Path(out).exists():
            self.profiles.append(out)
        else:
            self.say(f"  py-spy wrote nothing; its log:\n{tail(self.tmp / 'py-spy.log')}")


# -- report -------------------------------------------------------------------------------


def report(b: Bench, elapsed: float, partial: bool) -> dict[str, Any]:
    plan = b.plan
    ops = ("write", "linearizable", "stale")
    figures: dict[str, dict[tuple[str, int], dict[str, Any]]] = {}
    for s in b.systems:
        per: dict[tuple[str, int], dict[str, Any]] = {}
        steps = [st for rr in b.runs if rr.system == s and rr.result for st in rr.result["steps"]]
        for op in ops:
            for c in plan.connections:
                mine = [st for st in steps if st["op"] == op and st["connections"] == c]
                per[(op, c)] = {
                    "rate": med([st["rate"] for st in mine]),
                    "p50": med([st["p50_ms"] for st in mine]),
                    "p99": med([st["p99_ms"] for st in mine]),
                    "errors": sum(st["error_count"] for st in mine),
                    "client_cpu": med([st["client_cpu"] for st in mine]),
                    "n": len(mine),
                }
        figures[s] = per
    rate = lambda x: f"{x:,.0f}"  # noqa: E731
    ms = lambda x: f"{x:.2f}"  # noqa: E731
    pct = lambda x: f"{x * 100:.0f}%"  # noqa: E731
    head = "| op | conns |"
    rule = "|---|---:|"
    for s in b.systems:
        head += f" {s} ops/s | {s} p50 / p99 ms | errors | gen CPU |"
        rule += "---:|---:|---:|---:|"
    if ETCD in b.systems:
        head += " liferaft/etcd |"
        rule += "---:|"
    lines = [head, rule]
    ratio_of: dict[tuple[str, int], float | None] = {}
    for op in ops:
        for c in plan.connections:
            row = f"| {op} | {c} |"
            for s in b.systems:
                f = figures[s][(op, c)]
                row += (
                    f" {fmt(f['rate'], rate)} | {fmt(f['p50'], ms)} / {fmt(f['p99'], ms)} |"
                    f" {f['errors']} | {fmt(f['client_cpu'], pct)} |"
                )
            if ETCD in b.systems:
                a = figures[LIFERAFT][(op, c)]["rate"]
                e = figures[ETCD][(op, c)]["rate"]
                r = a[0] / e[0] if a and e and e[0] else None
                ratio_of[(op, c)] = r
                row += f" {'n/a' if r is None else f'{r:.2f}×'} |"
            lines.append(row)
    table = "\n".join(lines)
    top = max(plan.connections)
    fs = med(b.fsync_ms)
    reads = f"reads at {b.args.reads_at} endpoints"
    for rr in b.runs:
        if rr.result:
            reads = reads_description(Result(**{**rr.result, "steps": []}))
            break
    notes = [
        f"Writes: {b.runs[0].result['value_size'] if b.runs and b.runs[0].result else 100}-byte "
        f"values to the leader; {reads}. {plan.seconds:g} s per step after "
        f"{plan.warmup:g} s of warm-up; closed loop, each connection one request at a time. "
        f"Stale = liferaft consistency=stale, etcd serializable range. 'gen CPU' is the load "
        f"generator's own CPU (this process; near 100% = the client may be the limit).",
        f"Yardstick: raw write(100 B)+fdatasync p50 {fmt(fs, lambda x: f'{x:.3f}')} ms in the "
        f"data dir's file system.",
    ]
    ratios: dict[str, float] = {}
    verdicts: list[tuple[str, bool]] = []
    for op, label in (("write", "writes"), ("linearizable", "linearizable reads")):
        r = ratio_of.get((op, top))
        if r is not None:
            ratios[f"{label} at {top} connections, liferaft-kv / etcd"] = r
            verdicts.append((label, r >= 1.0))
    r = ratio_of.get(("stale", top))
    if r is not None:
        ratios[f"stale reads at {top} connections, liferaft-kv / etcd (serializable)"] = r
    rlines = rep.ratio_lines(ratios, {k: "≥ 1.0" for k in ratios if "stale" not in k})
    lf = figures[LIFERAFT]
    parts = []

    def fig(s: str, op: str) -> str:
        m = figures[s][(op, top)]["rate"]
        return "n/a" if m is None else f"{m[0]:,.0f}"

    if ETCD in b.systems:
        for op, label in (("write", "writes/s"), ("linearizable", "lin reads/s")):
            r = ratio_of.get((op, top))
            parts.append(
                f"{label} liferaft-kv {fig(LIFERAFT, op)} vs etcd {fig(ETCD, op)}"
                + ("" if r is None else f" = {r:.2f}×")
            )
        if verdicts:
            parts.append(rep.verdicts_text(verdicts))
        else:
            parts.append("no etcd figure to compare with")
        summary = f"SUMMARY: at {top} connections, " + "; ".join(parts)
    else:
        summary = (
            f"SUMMARY: liferaft-kv at {top} connections: {fig(LIFERAFT, 'write')} writes/s, "
            f"{fig(LIFERAFT, 'linearizable')} lin reads/s, {fig(LIFERAFT, 'stale')} stale "
            "reads/s; etcd not measured ("
            + ("--no-etcd" if b.args.no_etcd else "not installed: run scripts/install-etcd.sh")
            + ")"
        )
    p1 = lf[("write", min(plan.connections))]["p50"]
    if p1 and fs:
        notes.append(
            f"liferaft-kv write p50 at {min(plan.connections)} connection: {p1[0]:.2f} ms = "
            f"{p1[0] / fs[0]:.1f}× the raw fdatasync p50."
        )
    errs = [f"{rr.system} r{rr.round}: {rr.error}" for rr in b.runs if rr.error]
    title = f"{plan.rounds} round(s), order {' '.join(b.systems)} per round; median (min–max) "
    title += "over rounds"
    ratio_block = ["Ratios (of medians):", *rlines] if rlines else []
    failed = ["Failed runs: " + "; ".join(errs)] if errs else []
    prof = summaries([(path, LIFERAFT) for path in b.profiles], summarize_pyspy_http)
    sections = [[rep.heading(title, elapsed, partial)], [table], notes, ratio_block, failed]
    rep.emit(sections, prof, summary)
    return {
        "table": table,
        "notes": notes,
        "ratios": ratios,
        "summary": summary,
        "profile": prof,
        "fsync_p50_ms": b.fsync_ms,
        "figures": {
            s: {f"{op}@{c}": v for (op, c), v in per.items()} for s, per in figures.items()
        },
    }


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = runner.parser(
        "python bench/kv_bench.py",
        "liferaft-kv vs etcd 3.4 (JSON gateway): 3 processes each on 127.0.0.1.",
        quick_help="1 round of 1 s steps (smoke run)",
        rounds_help="rounds of liferaft, etcd (default 2; quick 1)",
    )
    p.add_argument("--seconds", type=float, help="measured seconds per step (default 5)")
    p.add_argument("--connections", help="concurrencies, e.g. 1,16,64 (the default)")
    p.add_argument(
        "--reads-at",
        choices=("all", "leader"),
        default="all",
        help="spread reads over all endpoints (default) or send them to the leader",
    )
    p.add_argument("--no-etcd", action="store_true", help="measure liferaft-kv only")
    p.add_argument("--etcd", help="path to the etcd binary (default: PATH, then /usr/bin/etcd)")
    p.add_argument("--etcd-prefix", default="auto", help="gateway prefix: auto, /v3, /v3beta")
    runner.add_common_flags(
        p,
        keep_help="keep the temp dir (logs, data)",
        py_spy_help="sample the liferaft leader during an extra write step (path to py-spy, or "
        "found next to python)",
    )
    a = p.parse_args(argv)
    plan = QUICK if a.quick else FULL
    if a.rounds:
        plan.rounds = a.rounds
    if a.seconds:
        plan.seconds = a.seconds
    if a.connections:
        plan.connections = tuple(int(x) for x in a.connections.split(","))
    runner.resolve_py_spy(p, a, ".venv/bin/pip install py-spy")
    etcd = None if a.no_etcd else find_etcd(a.etcd)
    tmp = runner.temp_dir("liferaft-kv-bench-")
    bench = Bench(a, plan, tmp, etcd)
    print(runner.header("kv_bench", a.quick, tmp), flush=True)
    if etcd:
        print(f"etcd {etcd_version(etcd)} at {etcd}", flush=True)
    elif a.no_etcd:
        print("--no-etcd: measuring liferaft only", flush=True)
    else:
        print(
            "etcd not installed: run scripts/install-etcd.sh; measuring liferaft only", flush=True
        )
    rc = runner.run(bench.run(), bench.group.kill_all_now)
    elapsed = time.monotonic() - bench.t0
    return runner.conclude(
        rc,
        failed=any(rr.error for rr in bench.runs),
        have_figures=any(rr.result for rr in bench.runs),
        report=lambda partial: report(bench, elapsed, partial),
        json_path=a.json,
        meta={
            "plan": asdict(plan),
            "etcd": etcd and etcd_version(etcd),
            "runs": [asdict(rr) for rr in bench.runs],
        },
        tmp=tmp,
        keep=a.keep,
    )


if __name__ == "__main__":
    sys.exit(main())
