"""The servers alone: ops/s and server CPU per op of 3 ``liferaft serve``
processes under one fixed load, for any number of checkouts side by side.

    .venv/bin/python bench/kv_servers.py --tree OLD --tree NEW --rounds 3

``bench/ab.py`` runs each build's own ``bench/kv_bench.py``, so each build
also brings its own load generator, and on a small machine the generator
shares the CPUs with the nodes: a costlier generator reads as slower
servers (BENCHMARKS.md, issue 13, "The kv read gap").  This script holds
the load fixed: one small aiohttp client, this checkout's, drives every
build's nodes (``--tree``: that checkout's code, through PYTHONPATH and
the working directory; the harness starts them with ``--peer-addr`` and
``--client-addr``, which every build understands).  Rounds interleave the
trees (A B A B ...).

Each round: 3 nodes pinned to CPU i mod ncpu (as ``kv_bench --pin``), a
leader found, then three steps of ``--ops`` requests at ``--connections``:
PUTs of 100 bytes to the leader, stale GETs spread over every node, and
linearizable GETs likewise.  A step reports ops/s and the three nodes'
CPU time (utime + stime from /proc) per op.  The nodes are stopped by PID
at the end of each round (the harness does it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from liferaft.harness import procs  # noqa: E402
from liferaft.harness.serve import ServeCluster  # noqa: E402

STEPS = ("write", "stale", "linearizable")
T = TypeVar("T")


def cpu_seconds(pid: int) -> float:
    """utime + stime of node ``pid`` so far (it must still run)."""
    used = procs.cpu_seconds(pid)
    if used is None:
        raise RuntimeError(f"node pid {pid} is gone")
    return used


async def drive(op: Callable[[int], Awaitable[None]], n: int, conns: int) -> float:
    """Run ``op(0..n-1)`` on ``conns`` workers; the seconds it took."""
    todo = iter(range(n))

    async def worker() -> None:
        for k in todo:
            await op(k)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    return time.perf_counter() - t0


async def measure(c: ServeCluster, ops: int, conns: int) -> dict[str, tuple[float, float]]:
    """{step: (ops/s, server CPU µs per op)} for one running cluster."""
    pids = [n.pid for n in c.nodes.values()]
    clients = [n.client for n in c.nodes.values()]
    body = json.dumps({"value": "x" * 100}).encode()
    out: dict[str, tuple[float, float]] = {}
    limit = aiohttp.TCPConnector(limit=conns)
    async with aiohttp.ClientSession(connector=limit) as s:
        leader = ""
        for _ in range(300):
            async with s.get(f"http://{clients[0]}/v1/status") as r:
                leader = str((await r.json()).get("leader_client_addr") or "")
            if leader:
                break
            await asyncio.sleep(0.1)
        if not leader:
            raise RuntimeError("no leader with a client address within 30 s")

        async def put(k: int) -> None:
            url = f"http://{leader}/v1/kv/k{k % 1000}"
            async with s.put(url, data=body, headers={"Content-Type": "application/json"}) as r:
                if r.status != 200:
                    raise RuntimeError(f"PUT {url}: HTTP {r.status}")
                await r.read()

        def get(consistency: str) -> Callable[[int], Awaitable[None]]:
            async def op(k: int) -> None:
                ep = clients[k % len(clients)]
                url = f"http://{ep}/v1/kv/k{k % 1000}?consistency={consistency}"
                async with s.get(url) as r:
                    if r.status not in (200, 404):
                        raise RuntimeError(f"GET {url}: HTTP {r.status}")
                    await r.read()

            return op

        steps = {"write": put, "stale": get("stale"), "linearizable": get("linearizable")}
        for step, op in steps.items():
            await drive(op, min(ops, 2000), conns)  # warm-up
            c0 = sum(cpu_seconds(p) for p in pids)
            secs = await drive(op, ops, conns)
            used = sum(cpu_seconds(p) for p in pids) - c0
            out[step] = (ops / secs, used / ops * 1e6)
    return out


def on_cluster(tree: Path, run: Callable[[ServeCluster], Awaitable[T]]) -> T:
    """``run`` against 3 fresh pinned nodes of ``tree``'s build (stopped after)."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    root = Path(tempfile.mkdtemp(prefix="liferaft-kv-servers-"))
    try:
        with ServeCluster(root, env=env, cwd=tree, cpus=True) as c:
            c.add_nodes(3)
            c.start_all()
            c.wait_ready(timeout=60)
            return asyncio.run(run(c))  # type: ignore[arg-type]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def checkout_trees(ap: argparse.ArgumentParser, given: list[Path] | None) -> list[Path]:
    """The ``--tree`` checkouts (this one when none is given); a directory
    that is not a liferaft checkout is a usage error."""
    trees = [t.resolve() for t in (given or [Path(__file__).resolve().parent.parent])]
    for t in trees:
        if not (t / "liferaft" / "kv" / "serve.py").is_file():
            ap.error(f"--tree {t}: not a liferaft checkout")
    return trees


def one_round(tree: Path, ops: int, conns: int) -> dict[str, tuple[float, float]]:
    return on_cluster(tree, lambda c: measure(c, ops, conns))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, action="append", help="a checkout (repeat)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ops", type=int, default=6000, help="requests per step")
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args(argv)
    trees = checkout_trees(ap, args.tree)
    if args.rounds < 1 or args.ops < 1 or args.connections < 1:
        ap.error("--rounds, --ops and --connections must be at least 1")
    got: dict[Path, list[dict[str, tuple[float, float]]]] = {t: [] for t in trees}
    for i in range(args.rounds):
        for t in trees:
            r = one_round(t, args.ops, args.connections)
            got[t].append(r)
            figures = ", ".join(f"{s} {r[s][0]:,.0f}/s {r[s][1]:.0f} µs" for s in STEPS)
            print(f"round {i + 1} {t}: {figures}", flush=True)
    print(f"\nmedians of {args.rounds} rounds at {args.connections} connections")
    print("| tree | " + " | ".join(f"{s} ops/s | {s} CPU µs/op" for s in STEPS) + " |")
    print("|---|" + "---:|" * (2 * len(STEPS)))
    for t in trees:
        cells = []
        for s in STEPS:
            cells.append(f"{statistics.median(r[s][0] for r in got[t]):,.0f}")
            cells.append(f"{statistics.median(r[s][1] for r in got[t]):.0f}")
        print(f"| {t} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
