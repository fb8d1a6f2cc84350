"""Writes at one connection, builds side by side: p50 and leader CPU per write.

    .venv/bin/python bench/kv_one_conn.py --tree OLD --tree NEW --rounds 5

Issue 18's figure of merit: one client, one kept-alive connection, PUTs of
100 bytes to the leader of 3 ``liferaft serve`` nodes (pinned, as
``bench/kv_servers.py``), one after another.  Each round starts a fresh
cluster per tree, interleaved (A B A B ...), and reports the latency
percentiles of ``--ops`` writes (after ``--warmup`` uncounted ones) and the
CPU time (utime + stime from /proc) per write of the leader and of each
follower.  The nodes are stopped by PID at the end of each round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.kv_servers import checkout_trees, cpu_seconds, on_cluster  # noqa: E402
from liferaft.harness.serve import ServeCluster  # noqa: E402


async def measure(c: ServeCluster, ops: int, warmup: int) -> dict[str, float]:
    nodes = list(c.nodes.values())
    body = json.dumps({"value": "x" * 100}).encode()
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=conn) as s:
        leader = ""
        for _ in range(300):
            async with s.get(f"http://{nodes[0].client}/v1/status") as r:
                leader = str((await r.json()).get("leader_client_addr") or "")
            if leader:
                break
            await asyncio.sleep(0.1)
        if not leader:
            raise RuntimeError("no leader with a client address within 30 s")
        lead = next(n for n in nodes if n.client == leader)
        others = [n for n in nodes if n is not lead]

        async def put(k: int) -> float:
            t0 = time.perf_counter()
            url = f"http://{leader}/v1/kv/k{k % 1000}"
            async with s.put(url, data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"PUT {url}: HTTP {r.status}")
            return time.perf_counter() - t0

        for k in range(warmup):
            await put(k)
        c0 = [cpu_seconds(n.pid) for n in (lead, *others)]
        lat = [await put(k) for k in range(ops)]
        used = [cpu_seconds(n.pid) - c for n, c in zip((lead, *others), c0, strict=True)]
    lat.sort()
    return {
        "p50_us": lat[len(lat) // 2] * 1e6,
        "p90_us": lat[int(len(lat) * 0.9)] * 1e6,
        "p99_us": lat[int(len(lat) * 0.99)] * 1e6,
        "cpu_leader_us": used[0] / ops * 1e6,
        "cpu_followers_us": statistics.mean(used[1:]) / ops * 1e6,
    }


def one_round(tree: Path, ops: int, warmup: int) -> dict[str, float]:
    return on_cluster(tree, lambda c: measure(c, ops, warmup))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, action="append", help="a checkout (repeat)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ops", type=int, default=3000, help="measured writes per round")
    ap.add_argument("--warmup", type=int, default=300)
    args = ap.parse_args(argv)
    trees = checkout_trees(ap, args.tree)
    if args.rounds < 1 or args.ops < 1 or args.warmup < 0:
        ap.error("--rounds and --ops must be at least 1, --warmup at least 0")
    got: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
    for i in range(args.rounds):
        for t in trees:
            r = one_round(t, args.ops, args.warmup)
            got[t].append(r)
            row = {"tree": str(t), "round": i + 1, **{k: round(v, 1) for k, v in r.items()}}
            print(json.dumps(row), flush=True)
    keys = ("p50_us", "p90_us", "p99_us", "cpu_leader_us", "cpu_followers_us")
    print(f"\nmedians of {args.rounds} rounds, {args.ops} writes each, one connection")
    print("| tree | " + " | ".join(keys) + " | p50 of every round |")
    print("|---|" + "---:|" * len(keys) + "---|")
    for t in trees:
        med = [f"{statistics.median(r[k] for r in got[t]):.0f}" for k in keys]
        every = ", ".join(f"{r['p50_us']:.0f}" for r in got[t])
        print(f"| {t} | " + " | ".join(med) + f" | {every} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
