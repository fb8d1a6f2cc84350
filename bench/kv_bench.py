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
import atexit
import contextlib
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _ctl import free_ports, kill_on_sigterm, tail  # noqa: E402

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


# -- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    logf: IO[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid


class Procs:
    """Every process this run started, by PID, so each is killed on the way
    out.  A PID leaves the registry only once reaped: a recycled PID is never
    signalled."""

    def __init__(self) -> None:
        self.live: dict[int, Proc] = {}
        atexit.register(self.kill_all_now)

    def start(self, name: str, cmd: Sequence[str], log: Path, cpu: int | None = None) -> Proc:
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        logf = open(log, "ab")  # noqa: SIM115 (closed when the process is reaped)
        # Own session: a Ctrl-C at the terminal reaches only us; we kill them.
        popen = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            start_new_session=True,
        )
        p = Proc(name, popen, log, logf)
        self.live[popen.pid] = p
        return p

    def _reap(self, p: Proc, timeout: float) -> bool:
        try:
            p.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self.live.pop(p.pid, None)
        p.logf.close()
        return True

    def stop(self, procs: Sequence[Proc], grace: float = 3.0) -> None:
        """SIGTERM, then SIGKILL whatever is left after ``grace`` seconds."""
        for p in procs:
            if p.pid in self.live and p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            if p.pid in self.live and not self._reap(p, max(0.05, deadline - time.monotonic())):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                self._reap(p, 5.0)

    def kill_all_now(self) -> None:
        """The last resort (finally, atexit): SIGKILL every live PID, reap it."""
        for pid in list(self.live):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid, p in list(self.live.items()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(5)
            self.live.pop(pid, None)
            with contextlib.suppress(OSError):
                p.logf.close()


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
    procs: list[Proc] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # node ids, in endpoint order
    endpoints: list[str] = field(default_factory=list)  # client HOST:PORT
    health: str = ""  # the GET path that answers 200 when a node is ready

    def pid_of(self, name: str) -> int | None:
        for n, p in zip(self.names, self.procs, strict=False):
            if n == name:
                return p.pid
        return None


def start_liferaft(procs: Procs, base: Path, pin: bool) -> Cluster:
    ports = free_ports(2 * NODES)
    names = [f"n{i + 1}" for i in range(NODES)]
    peers = [f"127.0.0.1:{ports[i]}" for i in range(NODES)]
    clients = [f"127.0.0.1:{ports[NODES + i]}" for i in range(NODES)]
    spec = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
    c = Cluster(LIFERAFT, names=names, endpoints=clients, health="/readyz")
    for i, n in enumerate(names):
        cmd = [
            sys.executable,
            "-m",
            "liferaft.cli",
            "serve",
            "--id",
            n,
            "--data-dir",
            str(base / n),
            "--peer-addr",
            peers[i],
            "--client-addr",
            clients[i],
            "--initial-cluster",
            spec,
        ]
        cpu = i % (os.cpu_count() or 1) if pin else None
        c.procs.append(procs.start(f"{LIFERAFT} {n}", cmd, base / f"{n}.log", cpu))
    return c


def start_etcd(procs: Procs, etcd: str, base: Path, pin: bool) -> Cluster:
    ports = free_ports(2 * NODES)
    names = [f"e{i + 1}" for i in range(NODES)]
    peers = [f"http://127.0.0.1:{ports[i]}" for i in range(NODES)]
    clients = [f"127.0.0.1:{ports[NODES + i]}" for i in range(NODES)]
    spec = ",".join(f"{n}={p}" for n, p in zip(names, peers, strict=True))
    c = Cluster(ETCD, names=names, endpoints=clients, health="/health")
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
        c.procs.append(procs.start(f"{ETCD} {n}", cmd, base / f"{n}.log", cpu))
    return c


async def wait_ready(c: Cluster, seconds: float = 30.0) -> float:
    """Until every node answers its health route with 200 (liferaft: /readyz,
    a leader known and everything applied; etcd: /health)."""
    t0 = time.monotonic()
    pending = set(range(len(c.procs)))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as s:
        while pending:
            for i in list(pending):
                p = c.procs[i]
                if p.popen.poll() is not None:
                    raise RuntimeError(
                        f"{p.name} (pid {p.pid}) exited with {p.popen.returncode}; its log "
                        f"{p.log}:\n{tail(p.log)}"
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with s.get(f"http://{c.endpoints[i]}{c.health}") as r:
                        if r.status == 200:
                            pending.discard(i)
            if time.monotonic() - t0 > seconds:
                names = ", ".join(c.procs[i].name for i in sorted(pending))
                raise RuntimeError(f"{c.system}: {names} not ready within {seconds:.0f} s")
            if pending:
                await asyncio.sleep(0.05)
    return time.monotonic() - t0


# -- yardstick ----------------------------------------------------------------------------


def measure_fsync(directory: Path, seconds: float) -> float | None:
    """p50 of write(100 B) + fdatasync in the directory the nodes' data lives
    in, in ms: what one durable write costs on this disk right now."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lat: list[float] = []
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and len(lat) < 20000:
            t0 = time.perf_counter()
            os.write(fd, b"x" * 100)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return statistics.median(lat) * 1e3 if lat else None


# -- py-spy -------------------------------------------------------------------------------

# (fragment of the file path, area), first match wins.  py-spy samples Python
# frames only: time in C (the aiohttp C parser, msgspec, socket calls) counts
# for the Python function that called it.
AREAS = (
    ("liferaft/kv/", "liferaft.kv (HTTP handlers, JSON via msgspec, state machine)"),
    ("liferaft/runtime/", "liferaft.runtime (Node)"),
    ("liferaft/core/", "liferaft.core (Raft)"),
    ("liferaft/storage/", "liferaft.storage (WAL)"),
    ("liferaft/transport/", "liferaft.transport (peer TCP)"),
    ("liferaft/codec/", "liferaft.codec"),
    ("aiohttp/", "aiohttp (HTTP server: parsing, routing, responses)"),
    ("multidict/", "aiohttp (HTTP server: parsing, routing, responses)"),
    ("yarl/", "aiohttp (HTTP server: parsing, routing, responses)"),
    ("asyncio/", "asyncio (event loop, transports, futures)"),
    ("prometheus_client/", "prometheus-client (metrics)"),
    ("msgspec/", "msgspec"),
    ("concurrent/futures/", "thread pool"),
    ("threading.py", "threading"),
    ("logging/", "logging"),
)

# Leaf frames that are, in practice, one syscall: named apart from their
# library's area, since on loopback a send is the kernel delivering the bytes.
SYSCALL_LEAVES = (
    ("FileSystem.fdatasync", "liferaft/storage/", "fdatasync of the WAL, on the loop thread"),
    ("StreamWriter.writelines", "asyncio/streams.py", "socket sends: peer TCP (asyncio streams)"),
    ("StreamWriter.write", "asyncio/streams.py", "socket sends: peer TCP (asyncio streams)"),
    ("StreamWriter._writelines", "aiohttp/http_writer.py", "socket sends: HTTP responses"),
    ("StreamWriter._write", "aiohttp/http_writer.py", "socket sends: HTTP responses"),
)

# Inclusive stages: a sample counts for a stage when any frame of its stack
# matches (function name prefix, file fragment).
STAGES = (
    ("aiohttp: request parsing (RequestHandler.data_received)", "data_received", "aiohttp/"),
    ("aiohttp: handler dispatch + middlewares (_handle_request)", "_handle_request", "aiohttp/"),
    ("aiohttp: response writing (finish_response/prepare/write)", "finish_response", "aiohttp/"),
    ("liferaft.kv: PUT handler (KVServer.put)", "KVServer.put", "liferaft/kv/"),
    ("liferaft.kv: GET handler (KVServer.get)", "KVServer.get", "liferaft/kv/"),
    ("liferaft.kv: JSON decode of bodies (_decode)", "_decode", "liferaft/kv/"),
    ("liferaft.kv: JSON responses (_json)", "_json", "liferaft/kv/"),
    ("liferaft.kv: state machine apply", "KVStore.", "liferaft/kv/"),
    ("liferaft.kv: metrics (prometheus observe)", "", "prometheus_client/"),
    ("liferaft.runtime: Node.propose", "Node.propose", "liferaft/runtime/"),
    ("liferaft.runtime: all", "", "liferaft/runtime/"),
    ("liferaft.core: all", "", "liferaft/core/"),
    ("liferaft.storage: all", "", "liferaft/storage/"),
    ("liferaft.transport: all", "", "liferaft/transport/"),
)


# Leaf frames that mean "in the event loop's C code" (uvloop.run, asyncio.run).
LOOP_ENTRY = ("Runner.run", "run", "run_until_complete", "run_forever")


def _split_frame(f: str) -> tuple[str, str]:
    """'func (path:line)' -> (func, path:line)."""
    i = f.rfind(" (")
    if i < 0 or not f.endswith(")"):
        return f, ""
    return f[:i], f[i + 2 : -1]


def _area(path: str, func: str = "") -> str:
    for fn, frag, name in SYSCALL_LEAVES:
        if func == fn and frag in path:
            return name
    for frag, name in AREAS:
        if frag in path:
            return name
    return "other Python"


def _short(path: str) -> str:
    for frag in ("liferaft/", "aiohttp/", "asyncio/", "multidict/", "yarl/", "concurrent/"):
        i = path.find(frag)
        if i >= 0:
            return path[i:]
    return os.path.basename(path)


def summarize_pyspy(path: str, label: str, top: int = 15) -> str:
    """Raw py-spy output (``--threads --format raw``): a line per distinct
    stack, ``thread (tid): name;frame;frame... count``.  The event-loop thread
    (MainThread) is split into waiting (in epoll) and running; other threads
    are counted by what they run."""
    threads: Counter[str] = Counter()
    area: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    stage: Counter[str] = Counter()
    running = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            count = int(n)
            frames = stack.split(";")
            tname = frames[0].split(": ", 1)[-1]
            frames = frames[1:]
            if not frames:
                continue
            parsed = [_split_frame(fr) for fr in frames]
            func, where = parsed[-1]
            if tname != "MainThread":
                names = [fn for fn, _ in parsed]
                if func == "_worker" or "_WorkItem.run" not in names:
                    kind = "waiting"
                elif any("liferaft/storage/" in w for _, w in parsed):
                    kind = "liferaft.storage (WAL append + fdatasync)"
                elif any("liferaft/transport/" in w for _, w in parsed):
                    kind = "liferaft.transport"
                else:
                    kind = "other"
                threads[f"other threads: {kind}"] += count
                continue
            if func.endswith("select") and "selectors.py" in where:
                threads["event loop: waiting in epoll"] += count
                continue
            if func in LOOP_ENTRY and ("runners.py" in where or "uvloop" in where):
                # uvloop runs the loop in C: with no Python frame above the
                # loop's entry, the sample is uvloop itself (socket reads,
                # callbacks, task stepping), or a wait py-spy did not see as
                # idle.  Without --native it cannot be split further.
                threads["event loop: inside uvloop/C, no Python frame"] += count
                continue
            threads["event loop: running"] += count
            running += count
            file, _, line_no = where.rpartition(":")
            area[_area(file, func)] += count
            leaf[f"{func} ({_short(file)}:{line_no})"] += count
            for name, fn_prefix, frag in STAGES:
                if any(
                    frag in w
                    and (not fn_prefix or fn.startswith(fn_prefix) or f".{fn_prefix}" in fn)
                    for fn, w in parsed
                ):
                    stage[name] += count
    total = sum(threads.values()) or 1
    run = running or 1
    out = [
        "",
        f"Profile of the {label} leader (py-spy, 1000 Hz, every thread): {total:,} samples.",
        "",
        "| thread: state | % of samples |",
        "|---|---:|",
    ]
    for k, c in threads.most_common():
        out.append(f"| {k} | {c / total * 100:.1f}% |")
    out += ["", "Event-loop thread, running (self time by area):", ""]
    out += ["| area (self) | % of running |", "|---|---:|"]
    for k, c in area.most_common():
        out.append(f"| {k} | {c / run * 100:.1f}% |")
    out += ["", "| stage (inclusive) | % of running |", "|---|---:|"]
    for name, _, _ in STAGES:
        if stage[name]:
            out.append(f"| {name} | {stage[name] / run * 100:.1f}% |")
    out += ["", "| function (self) | % of running |", "|---|---:|"]
    for k, c in leaf.most_common(top):
        out.append(f"| {k} | {c / run * 100:.1f}% |")
    return "\n".join(out) + "\n"


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
        self.procs = Procs()
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
            if fs is not None:
                self.fsync_ms.append(fs)
                self.say(f"round {rnd}: fdatasync(100 B) p50 {fs:.3f} ms")
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
                c = start_liferaft(self.procs, base, self.args.pin)
                adapter: Adapter = LiferaftAdapter(c.endpoints)
            else:
                assert self.etcd is not None
                c = start_etcd(self.procs, self.etcd, base, self.args.pin)
                adapter = EtcdAdapter(c.endpoints, prefix=self.args.etcd_prefix)
            rr.pids = [p.pid for p in c.procs]
            rr.ready_s = await wait_ready(c)
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
                    self.say(f"  {p.name} (pid {p.pid}) log {p.log}:\n{tail(p.log, 8)}")
        finally:
            if c is not None:
                self.procs.stop(c.procs)

    async def profile(self, c: Cluster, adapter: Adapter) -> None:
        """One more write step at the highest concurrency, not counted, while
        py-spy samples the leader."""
        conns = max(self.plan.connections)
        secs = max(1, math.ceil(self.plan.seconds))
        out = str(self.tmp / "liferaft-leader.pyspy")
        spy: Proc | None = None

        async def hook(op: str, n: int, phase: str) -> None:
            nonlocal spy
            pid = c.pid_of(adapter.leader_name)
            if phase == "start" and pid is not None:
                cmd = [
                    self.args.py_spy,
                    "record",
                    "-p",
                    str(pid),
                    "-d",
                    str(secs),
                    "-r",
                    "1000",
                    "--threads",
                    "--full-filenames",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "-o",
                    out,
                ]
                spy = self.procs.start("py-spy", cmd, self.tmp / "py-spy.log")
                await asyncio.sleep(0.3)  # py-spy attaches (inside the step's warm-up)
            elif phase == "end" and spy is not None:
                # py-spy stops by itself after -d seconds and then writes its
                # output; a signal before that would lose the samples.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(spy.popen.wait, secs + 10)
                self.procs.stop([spy])

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


def med(xs: Sequence[float | None]) -> tuple[float, float, float] | None:
    v = [x for x in xs if x is not None]
    if not v:
        return None
    return statistics.median(v), min(v), max(v)


def fmt(m: tuple[float, float, float] | None, f: Callable[[float], str]) -> str:
    if m is None:
        return "n/a"
    if m[1] == m[2]:
        return f(m[0])
    return f"{f(m[0])} ({f(m[1])}–{f(m[2])})"


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
    rlines = []
    for k, v in ratios.items():
        target = "stale" not in k
        mark = f" (target ≥ 1.0: {'met' if v >= 1.0 else 'MISSED'})" if target else ""
        rlines.append(f"- {k}: {v:.2f}×{mark}")
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
        met = sum(1 for _, ok in verdicts if ok)
        if verdicts:
            parts.append(
                f"targets met {met}/{len(verdicts)} ("
                + ", ".join(f"{k} {chr(10003) if ok else chr(10007)}" for k, ok in verdicts)
                + ")"
            )
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
    print()
    print(
        f"## {plan.rounds} round(s), order {' '.join(b.systems)} per round; median (min–max) "
        f"over rounds; {elapsed:.0f} s" + (" — PARTIAL (interrupted)" if partial else "")
    )
    print()
    print(table)
    print()
    for n in notes:
        print(n)
    if rlines:
        print()
        print("Ratios (of medians):")
        print("\n".join(rlines))
    if errs:
        print()
        print("Failed runs: " + "; ".join(errs))
    prof = ""
    for path in b.profiles:
        try:
            prof += summarize_pyspy(path, LIFERAFT)
        except Exception as exc:  # a bad profile must not cost the report
            prof += f"\n(profile {path} unreadable: {exc!r})\n"
    if prof:
        print(prof)
    print(summary)
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
    p = argparse.ArgumentParser(
        prog="python bench/kv_bench.py",
        description="liferaft-kv vs etcd 3.4 (JSON gateway): 3 processes each on 127.0.0.1.",
    )
    p.add_argument("--quick", action="store_true", help="1 round of 1 s steps (smoke run)")
    p.add_argument("--rounds", type=int, help="rounds of liferaft, etcd (default 2; quick 1)")
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
    p.add_argument("--pin", action="store_true", help="pin node i to CPU i mod ncpu (taskset)")
    p.add_argument(
        "--py-spy",
        nargs="?",
        const="auto",
        help="sample the liferaft leader during an extra write step (path to py-spy, or found "
        "next to python)",
    )
    p.add_argument("--json", help="write every raw figure to this file")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data)")
    a = p.parse_args(argv)
    plan = QUICK if a.quick else FULL
    if a.rounds:
        plan.rounds = a.rounds
    if a.seconds:
        plan.seconds = a.seconds
    if a.connections:
        plan.connections = tuple(int(x) for x in a.connections.split(","))
    if a.py_spy == "auto":
        cand = Path(sys.executable).parent / "py-spy"
        a.py_spy = str(cand) if cand.exists() else shutil.which("py-spy")
        if not a.py_spy:
            p.error("py-spy not found (.venv/bin/pip install py-spy)")
    etcd = None if a.no_etcd else find_etcd(a.etcd)
    tmp = Path(tempfile.mkdtemp(prefix="liferaft-kv-bench-"))
    bench = Bench(a, plan, tmp, etcd)

    kill_on_sigterm(bench.procs.kill_all_now)
    print(
        f"kv_bench: {datetime.datetime.now().isoformat(timespec='seconds')}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{'quick' if a.quick else 'full'} run, temp dir {tmp}",
        flush=True,
    )
    if etcd:
        print(f"etcd {etcd_version(etcd)} at {etcd}", flush=True)
    elif a.no_etcd:
        print("--no-etcd: measuring liferaft only", flush=True)
    else:
        print(
            "etcd not installed: run scripts/install-etcd.sh; measuring liferaft only", flush=True
        )
    rc = 0
    try:
        asyncio.run(bench.run())
    except KeyboardInterrupt:
        print("interrupted; killing child processes", file=sys.stderr)
        rc = 130
    finally:
        bench.procs.kill_all_now()
    elapsed = time.monotonic() - bench.t0
    failed = any(rr.error for rr in bench.runs)
    try:
        if any(rr.result for rr in bench.runs):
            out = report(bench, elapsed, partial=rc == 130)
            if a.json:
                with open(a.json, "w") as f:
                    json.dump(
                        {
                            "plan": asdict(plan),
                            "argv": sys.argv,
                            "etcd": etcd and etcd_version(etcd),
                            "runs": [asdict(rr) for rr in bench.runs],
                            "report": out,
                        },
                        f,
                        indent=1,
                        default=str,
                    )
                print(f"wrote {a.json}")
        if failed and rc == 0:
            rc = 1
    finally:
        if a.keep or failed or rc:
            print(f"kept {tmp} (logs and data)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
