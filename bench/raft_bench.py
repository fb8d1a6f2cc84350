"""liferaft and PySyncObj side by side: 3 processes per cluster on 127.0.0.1.

    .venv/bin/python bench/raft_bench.py            # the full run (~3.5 min)
    .venv/bin/python bench/raft_bench.py --quick    # a ~40 s smoke run
    .venv/bin/python bench/raft_bench.py --profile  # plus cProfile of the liferaft leader
    .venv/bin/python bench/raft_bench.py --py-spy   # plus py-spy (pip install py-spy first)

Three systems, each a cluster of three OS processes:

* ``liferaft sync on``: ``Node(data_dir=...)``, DiskStorage with fdatasync;
* ``liferaft sync off``: ``Node(store=MemStore())``, nothing on disk;
* ``PySyncObj``: its default in-memory journal.

They run interleaved (A B C A B C ...), one cluster at a time, and every
figure is reported as the median with min-max over the rounds.  For each
cluster: writes of 100-byte values offered at the leader by a load generator
inside the leader's process, at 100 writes/s (latency), then at stepped-up
rates until less than 99% of the offered writes commit within the step plus
a grace period (throughput; the last passing and first failing rates are
then bisected), then at half the max (latency), and finally SIGKILL of the
leader while a separate client process keeps writing (failover).  The same
run measures the raw fdatasync latency in the same temp dir and a loopback
TCP round trip between two processes, the yardsticks of the latency target.

docs/bench.md explains the method and every figure.  Every child process is
killed by PID on the way out (normal end, error, Ctrl-C, SIGTERM), and each
child also exits by itself when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(1, str(ROOT))  # the repo's liferaft

import _ctl  # noqa: E402
from benchkit import report as rep  # noqa: E402
from benchkit import runner  # noqa: E402
from benchkit.children import Children, Proc  # noqa: E402
from benchkit.profiling import pyspy_cmd  # noqa: E402
from benchkit.stats import nice  # noqa: E402
from benchkit.yardsticks import measure_fsync, measure_hardstate, measure_rtt  # noqa: E402
from raft_report import SYSTEMS, report  # noqa: E402

from liferaft.harness.ports import free_ports  # noqa: E402


@dataclass
class Plan:
    rounds: int
    lat_seconds: float  # each latency step (100/s and half of max)
    step_seconds: float  # each throughput step
    grace: float  # a write committed later than step end + grace does not count
    steps: tuple[int, ...]  # offered rates after the 100/s step
    bisect: int  # extra steps between the last passing and the first failing rate
    warmup_seconds: float
    fsync_seconds: float
    rtt_seconds: float
    kills: int  # failover samples per cluster (the killed node is restarted in between)
    # Writes outstanding at the leader, at most, per system: enough that the
    # cap is not what limits a system at its max (docs/bench.md, "In flight").
    inflight: dict[str, int] = field(
        default_factory=lambda: {"liferaft-sync": 1024, "liferaft-mem": 1024, "pysyncobj": 16384}
    )
    tick: float = 0.05  # liferaft NodeConfig defaults: ET = tick x election_ticks
    election_ticks: int = 20
    pass_ratio: float = 0.99


FULL = Plan(
    rounds=2,
    lat_seconds=3.0,
    step_seconds=2.0,
    grace=0.5,
    steps=(2000, 10000, 20000, 40000, 80000, 160000),
    bisect=2,
    warmup_seconds=1.0,
    fsync_seconds=1.0,
    rtt_seconds=1.0,
    kills=2,
)
QUICK = Plan(
    rounds=1,
    lat_seconds=1.5,
    step_seconds=1.0,
    grace=0.3,
    steps=(2000, 10000, 30000, 60000),
    bisect=1,
    warmup_seconds=0.5,
    fsync_seconds=0.5,
    rtt_seconds=0.5,
    kills=1,
)


# -- child processes ----------------------------------------------------------------------


# -- one cluster --------------------------------------------------------------------------


@dataclass
class ClusterResult:
    system: str
    round: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    lat100: dict[str, Any] | None = None
    lathalf: dict[str, Any] | None = None
    max_rate: float = 0.0  # max sustained committed writes/s
    peak_rate: float = 0.0  # the most committed/s in any step, passing or not
    first_fail: float | None = None
    failovers: list[dict[str, Any]] = field(default_factory=list)
    leader_changes: int = 0
    profiles: list[str] = field(default_factory=list)
    error: str | None = None


def _ms(x: float | None, spec: str, scale: float = 1.0) -> str:
    """A yardstick's figure, or ``n/a`` for one without a sample."""
    return "n/a" if x is None else format(x * scale, spec)


class Bench:
    def __init__(self, args: argparse.Namespace, plan: Plan, tmp: Path) -> None:
        self.args = args
        self.plan = plan
        self.tmp = tmp
        self.children = Children(tmp)
        self.env: list[dict[str, Any]] = []
        self.results: list[ClusterResult] = []
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    async def run(self) -> None:
        systems = self.args.systems
        echo = await self.children.start("echo", "echo_server.py", [])
        try:
            for rnd in range(1, self.plan.rounds + 1):
                fs = await asyncio.to_thread(measure_fsync, self.tmp, self.plan.fsync_seconds)
                rtt = await measure_rtt(echo.ctl_port, self.plan.rtt_seconds)
                hs = await asyncio.to_thread(
                    measure_hardstate, self.tmp, self.plan.fsync_seconds / 2
                )
                self.env.append({"round": rnd, "fsync": fs, "rtt": rtt, "hardstate": hs})
                self.say(
                    f"round {rnd}: raw fdatasync p50 {_ms(fs['p50'], '.3f')} ms "
                    f"(n={fs['n']:.0f}), loopback RTT p50 {_ms(rtt['p50'], '.0f', 1e3)} us "
                    f"(n={rtt['n']:.0f}), liferaft hard-state write p50 {_ms(hs['p50'], '.3f')} ms"
                )
                for system in systems:
                    res = ClusterResult(system, rnd)
                    self.results.append(res)
                    try:
                        await self.run_cluster(res)
                    except Exception as exc:  # report it, go on with the next cluster
                        res.error = f"{type(exc).__name__}: {exc}"
                        self.say(f"{SYSTEMS[system]}: ERROR {res.error}")
        finally:
            await self.children.stop(echo)

    # -- the cluster's processes ----------------------------------------------------------

    def node_specs(self, system: str, rnd: int) -> list[tuple[str, str, list[str], int | None]]:
        """(name, script, args, cpu) of the three node processes of a cluster."""
        ports = free_ports(3)
        names = ["n1", "n2", "n3"]
        addrs = [f"127.0.0.1:{p}" for p in ports]
        life = ["--max-life", "900"]
        specs = []
        for i, name in enumerate(names):
            cpu = i % (os.cpu_count() or 1) if self.args.pin else None
            if system == "pysyncobj":
                others = ",".join(a for j, a in enumerate(addrs) if j != i)
                args = ["--self", addrs[i], "--others", others]
                args += ["--emin", str(self.et()), "--emax", str(2 * self.et())]
                if self.args.pso_conf:
                    args += ["--conf", self.args.pso_conf]
                script = "pysyncobj_node.py"
            else:
                members = ",".join(f"{n}={a}" for n, a in zip(names, addrs, strict=True))
                args = ["--id", name, "--members", members]
                args += ["--tick", str(self.plan.tick)]
                args += ["--election-ticks", str(self.plan.election_ticks)]
                if self.args.switch_interval:
                    args += ["--switch-interval", str(self.args.switch_interval)]
                if system == "liferaft-sync":
                    args += ["--data-dir", str(self.tmp / f"{system}-r{rnd}" / name)]
                else:
                    args += ["--mem"]
                script = "liferaft_node.py"
            specs.append((f"{system}-{name}", script, args + life, cpu))
        return specs

    def et(self) -> float:
        return self.plan.tick * self.plan.election_ticks

    async def statuses(self, ctls: list[_ctl.Ctl | None]) -> list[dict[str, Any] | None]:
        async def one(c: _ctl.Ctl | None) -> dict[str, Any] | None:
            if c is None or c.closed.is_set():
                return None
            try:
                return await c.call("status", timeout=2.0)
            except (TimeoutError, ConnectionError, _ctl.CtlError):
                return None

        return list(await asyncio.gather(*(one(c) for c in ctls)))

    async def find_leader(
        self, ctls: list[_ctl.Ctl | None], seconds: float, stable: float = 0.0
    ) -> int:
        """The index of the leader once exactly one node says it leads and every
        other live node names the same leader (for ``stable`` seconds)."""
        end = time.monotonic() + seconds
        seen: tuple[int, float] | None = None
        while time.monotonic() < end:
            sts = await self.statuses(ctls)
            live = [s for s in sts if s is not None]
            leaders = [i for i, s in enumerate(sts) if s is not None and s["leader"]]
            if len(leaders) == 1:
                lid = sts[leaders[0]]["leader_id"]  # type: ignore[index]
                if all(s["leader_id"] == lid for s in live):
                    now = time.monotonic()
                    if seen is None or seen[0] != leaders[0]:
                        seen = (leaders[0], now)
                    if now - seen[1] >= stable:
                        return leaders[0]
                else:
                    seen = None
            else:
                seen = None
            await asyncio.sleep(0.02)
        raise RuntimeError(f"no single agreed leader within {seconds:.0f} s")

    async def settle(self, ctls: list[_ctl.Ctl | None], leader: int, seconds: float = 15) -> float:
        """Wait until the leader has nothing outstanding and every node has
        applied everything the leader holds, so a step starts from quiet."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            sts = await self.statuses(ctls)
            ld = sts[leader]
            if (
                ld is not None
                and ld["pending"] == 0
                and all(s is None or s["applied"] >= ld["last"] for s in sts)
            ):
                return time.monotonic() - t0
            await asyncio.sleep(0.02)
        self.say(f"  (not settled after {seconds:.0f} s; going on)")
        return time.monotonic() - t0

    # -- the measurements --------------------------------------------------------------

    async def run_cluster(self, res: ClusterResult) -> None:
        plan = self.plan
        label = f"{SYSTEMS[res.system]} r{res.round}"
        specs = self.node_specs(res.system, res.round)
        nodes: list[Proc] = []
        ctls: list[_ctl.Ctl | None] = []
        try:
            for spec in specs:
                nodes.append(await self.children.start(*spec))
            ctls = [await _ctl.Ctl.connect(n.ctl_port) for n in nodes]
            leader = await self.find_leader(ctls, 20, stable=0.5)
            self.say(f"{label}: leader n{leader + 1} (pids {[n.pid for n in nodes]})")

            async def step(
                rate: float, seconds: float, profile: str | None = None
            ) -> dict[str, Any]:
                nonlocal leader
                c = ctls[leader]
                assert c is not None
                cpu0 = [s["cpu"] if s else 0.0 for s in await self.statuses(ctls)]
                r = await c.call(
                    "load",
                    timeout=seconds + plan.grace + 60,
                    rate=rate,
                    seconds=seconds,
                    grace=plan.grace,
                    inflight=plan.inflight[res.system],
                    profile=profile or None,
                )
                sts = await self.statuses(ctls)
                if res.system != "pysyncobj":
                    with contextlib.suppress(Exception):
                        d = await c.call("diag", timeout=5)
                        r["dropped"] = sum(v["dropped"] for v in d["peers"].values())
                        if self.args.verbose:
                            self.say(f"    diag {d}")
                r["cpu_nodes"] = [
                    (s["cpu"] - a) / r["wall"] if s else None
                    for s, a in zip(sts, cpu0, strict=True)
                ]
                r["leader"] = leader
                r["ratio"] = r["committed"] / r["offered"]
                r["pass"] = r["ratio"] >= plan.pass_ratio
                r["settle_s"] = await self.settle(ctls, leader)
                now = await self.find_leader(ctls, 10)
                if now != leader:
                    r["leader_changed"] = True
                    res.leader_changes += 1
                    self.say(f"  leader changed n{leader + 1} -> n{now + 1} during the step")
                    leader = now
                cpus = " ".join(
                    f"{'L' if i == r['leader'] else 'F'}{x * 100:.0f}%" if x is not None else "-"
                    for i, x in enumerate(r["cpu_nodes"])
                )
                p50 = "-" if r["p50"] is None else f"{r['p50']:.2f}"
                p99 = "-" if r["p99"] is None else f"{r['p99']:.2f}"
                err = f" errors {r['errors']}" if r["errors"] else ""
                if r.get("dropped"):
                    err += f" dropped msgs (total) {r['dropped']}"
                done = r["committed"] / seconds
                self.say(
                    f"  {label}: offered {rate:>9,.0f}/s  committed {done:>9,.0f}/s"
                    f" ({r['ratio'] * 100:6.2f}%)  p50 {p50} p99 {p99} ms  cpu {cpus}{err}"
                )
                if profile is None:
                    res.steps.append(r)
                return r

            await step(1000, plan.warmup_seconds)  # connections, caches, the first fsyncs
            res.steps.clear()
            res.lat100 = await step(100, plan.lat_seconds)
            lo: float | None = None
            hi: float | None = None
            for rate in plan.steps:
                r = await step(rate, plan.step_seconds)
                if not r["pass"]:
                    hi = rate
                    break
                lo = rate
            for _ in range(plan.bisect):
                if lo is None or hi is None:
                    break
                mid = nice((lo + hi) / 2)
                if mid in (lo, hi):
                    break
                r = await step(mid, plan.step_seconds)
                if r["pass"]:
                    lo = mid
                else:
                    hi = mid
            good = [r for r in res.steps if r["pass"] and r["rate"] >= 1000]
            res.max_rate = max((r["committed"] / r["seconds"] for r in good), default=0.0)
            res.peak_rate = max(r["committed"] / r["seconds"] for r in res.steps)
            res.first_fail = hi
            if res.max_rate > 0:
                res.lathalf = await step(nice(res.max_rate / 2), plan.lat_seconds)
            if (
                (self.args.profile or self.args.py_spy)
                and res.system != "pysyncobj"
                and (res.round == 1)
            ):
                prate = self.args.profile_rate or max(res.max_rate, 1000)
                if self.args.profile:
                    path = str(self.tmp / f"profile-{res.system}.pstats")
                    await step(prate, plan.step_seconds, profile=path)
                    res.profiles.append(path)
                if self.args.py_spy:
                    path = str(self.tmp / f"profile-{res.system}.pyspy")
                    secs = max(1, math.ceil(plan.step_seconds))
                    cmd = pyspy_cmd(self.args.py_spy, nodes[leader].pid, secs, path)
                    spy = await self.children.start("py-spy", "", cmd, announce=False)
                    await asyncio.sleep(0.3)  # py-spy attaches
                    try:
                        await step(prate, secs, profile="")
                        await asyncio.to_thread(self.children.group.reap, spy.child, secs + 10)
                    finally:
                        await self.children.kill(spy)
                    if Path(path).exists():
                        res.profiles.append(path)
            for k in range(plan.kills):
                if k:
                    # Restart the node killed last time (same address; same
                    # data dir for sync on, an empty store otherwise) and let
                    # it catch up before the next kill.
                    dead = next(i for i, c in enumerate(ctls) if c is None or c.closed.is_set())
                    nodes[dead] = await self.children.start(*specs[dead])
                    ctls[dead] = await _ctl.Ctl.connect(nodes[dead].ctl_port)
                    leader = await self.find_leader(ctls, 20, stable=0.3)
                    await self.settle(ctls, leader)
                fo = await self.failover(nodes, ctls, leader, label)
                res.failovers.append(fo)
                dead_ctl = ctls[fo["killed"]]
                if dead_ctl is not None:
                    await dead_ctl.close()
                ctls[fo["killed"]] = None
        finally:
            for c in ctls:
                if c is not None:
                    await c.close()
            for n in nodes:
                await self.children.stop(n)

    async def failover(
        self, nodes: list[Proc], ctls: list[_ctl.Ctl | None], leader: int, label: str
    ) -> dict[str, Any]:
        """SIGKILL the leader while a client process keeps writing through
        every node; the time from the kill to the first successful write sent
        after it."""
        ports = ",".join(str(n.ctl_port) for n in nodes)
        client = await self.children.start(
            "failover-client", "failover_client.py", ["--ctl", ports]
        )
        try:
            await asyncio.sleep(0.5)  # writes flowing through the old leader
            leader = await self.find_leader(ctls, 5)
            t_kill = time.monotonic()
            await self.children.kill(nodes[leader])
            survivors = [c if i != leader else None for i, c in enumerate(ctls)]
            with contextlib.suppress(RuntimeError):
                await self.find_leader(survivors, 10 * self.et())
            await asyncio.sleep(0.3)
            client.popen.stdin.write(f"stop {t_kill!r}\n".encode())
            client.popen.stdin.flush()
            line = await asyncio.wait_for(asyncio.to_thread(client.popen.stdout.readline), 10)
            out: dict[str, Any] = json.loads(line)
        finally:
            await self.children.stop(client)
        fo = out["failover"]
        self.say(
            f"  {label}: killed leader n{leader + 1}; failover "
            + ("none" if fo is None else f"{fo:.3f} s")
            + f" (writes ok before {out['ok_before']}, after {out['ok_after']},"
            f" failed {out['failed']})"
        )
        out["killed"] = leader
        return out


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = runner.parser(
        "python bench/raft_bench.py",
        "liferaft vs PySyncObj: 3 processes per cluster on 127.0.0.1.",
        quick_help="one short round (~40 s smoke run)",
        rounds_help="rounds of A B C (default 2; --quick 1)",
    )
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {', '.join(SYSTEMS)} (run in this order)",
    )
    p.add_argument("--profile", action="store_true", help="cProfile the liferaft leader")
    runner.add_common_flags(
        p,
        keep_help="keep the temp dir (logs, WALs)",
        py_spy_help="also sample the liferaft leader with py-spy (path to it, or found next to "
        "python)",
    )
    p.add_argument(
        "--profile-rate", type=float, help="offered rate of the profiled step (default: the max)"
    )
    p.add_argument(
        "--inflight",
        type=int,
        help="writes outstanding at the leader, at most, for every system (default: per system)",
    )
    p.add_argument("--kills", type=int, help="failover samples per cluster (default 2; quick 1)")
    p.add_argument(
        "--pso-conf", default="", help="extra SyncObjConf fields for PySyncObj: k=v,k=v (JSON)"
    )
    p.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval in liferaft nodes (diagnostics)",
    )
    p.add_argument("--steps", help="override the offered rates, e.g. 1000,20000,40000")
    p.add_argument("-v", "--verbose", action="store_true", help="transport counters per step")
    a = p.parse_args(argv)
    plan = QUICK if a.quick else FULL
    if a.rounds:
        plan.rounds = a.rounds
    if a.inflight:
        plan.inflight = {k: a.inflight for k in SYSTEMS}
    if a.kills is not None:
        plan.kills = a.kills
    runner.resolve_py_spy(p, a, ".venv/bin/pip install py-spy, for a one-off run")
    if a.steps:
        plan.steps = tuple(int(x) for x in a.steps.split(","))
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    unknown = [s for s in a.systems if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown system(s) {unknown}; choose from {list(SYSTEMS)}")
    tmp = runner.temp_dir("liferaft-bench-")
    bench = Bench(a, plan, tmp)
    print(runner.header("raft_bench", a.quick, tmp), flush=True)
    rc = runner.run(bench.run(), bench.children.kill_all_now)
    elapsed = time.monotonic() - bench.t0
    try:
        if bench.results:
            out = report(bench, elapsed, partial=rc == 130)
            if a.json:
                rep.write_json(
                    a.json,
                    {
                        "plan": asdict(plan),
                        "argv": sys.argv,
                        "env": bench.env,
                        "results": [asdict(r) for r in bench.results],
                        "report": out,
                    },
                )
            if any(r.error for r in bench.results) and rc == 0:
                rc = 1
    finally:
        runner.finish(tmp, a.keep)
    return rc


if __name__ == "__main__":
    sys.exit(main())
