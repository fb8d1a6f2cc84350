"""The crash loop: under a steady stream of acknowledged writes, kill -9 a
random node (or, one time in five, every node at once), restart, and check
that every write acknowledged so far is readable.  ``rounds`` times.

A writer task puts unique keys ``c/<n>`` one after the other, each retried
until acknowledged (a plain write: applying one twice rewrites the same
value to its own key, which this check cannot tell apart); acknowledged keys
are recorded.  After each restart the harness
waits for a leader, lists ``c/`` linearizably, and counts acknowledged keys
that are missing: any is a lost acknowledged write.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cluster import ChaosCluster


@dataclass
class CrashResult:
    rounds: int = 0
    acked: int = 0
    lost: int = 0
    all_down: int = 0
    seed: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"crashloop rounds={self.rounds} (all nodes {self.all_down}x) "
            f"acked={self.acked} lost={self.lost} seed={self.seed}"
        )


async def _writer(
    c: ChaosCluster, acked: list[str], stop: asyncio.Event, rng: random.Random
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        key = f"c/{n // 5000:04d}/{n:08d}"  # blocks of 5,000: each lists in one call
        body = {"value": str(n)}
        while not stop.is_set():
            nid = rng.choice(list(c.members))
            st, _ = await c.call(nid, "PUT", f"/v1/kv/{key}", body, timeout=3)
            if st == 200:
                acked.append(key)
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.005)


async def _present(c: ChaosCluster, acked: list[str]) -> set[str] | None:
    blocks = sorted({k.split("/")[1] for k in acked})
    out: set[str] = set()
    for b in blocks:
        for _ in range(40):
            nid = random.choice(list(c.members))
            st, body = await c.call(nid, "GET", f"/v1/kv?prefix=c/{b}/&limit=10000", timeout=5)
            if st == 200:
                out |= {i["key"] for i in body["items"]}
                break
            await asyncio.sleep(0.25)
        else:
            return None
    return out


async def crashloop(
    rounds: int, seed: int, out: Path, nodes: int = 3, log: Any = print
) -> CrashResult:
    rng = random.Random(seed)
    res = CrashResult(seed=seed)
    ids = [f"n{i}" for i in range(1, nodes + 1)]
    c = ChaosCluster(ids, out / "crashloop", None, rng)
    acked: list[str] = []
    stop = asyncio.Event()
    try:
        c.start_all()
        await c.leader(timeout=30)
        w = asyncio.create_task(_writer(c, acked, stop, random.Random(rng.random())))
        for r in range(rounds):
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            if rng.random() < 0.2:
                res.all_down += 1
                victims = ids
            else:
                victims = [rng.choice(ids)]
            for v in victims:
                c.kill(v)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            for v in victims:
                c.restart(v)
            await c.leader(timeout=30)
            snapshot = list(acked)
            got = await _present(c, snapshot)
            if got is None:
                res.problems.append(f"round {r}: the list was not readable")
                continue
            missing = [k for k in snapshot if k not in got]
            res.lost += len(missing)
            if missing:
                res.problems.append(f"round {r}: lost {missing[:5]}")
            res.rounds = r + 1
            if (r + 1) % 10 == 0:
                log(f"crashloop: {r + 1}/{rounds} rounds, {len(acked)} acked, lost {res.lost}")
        stop.set()
        await w
        res.acked = len(acked)
        got = await _present(c, acked)
        if got is None:
            res.problems.append("final list not readable")
        else:
            res.lost = max(res.lost, len([k for k in acked if k not in got]))
        return res
    finally:
        stop.set()
        c.shutdown()
        await c.close()
