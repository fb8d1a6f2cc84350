"""In-process runtime benchmark: ``python -m liferaft.runtime.bench``.

Three Nodes in ONE process (so they share one interpreter and one core's
worth of GIL) over real TCP on 127.0.0.1 with DiskStorage (fdatasync on):
commit latency at ~100 writes/s, then committed writes/s with many proposals
in flight at the leader.  A quick figure for development; the side-by-side
comparison with PySyncObj in separate processes is bench/raft_bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from liferaft.transport import TcpTransport

from .node import Node, NodeConfig
from .statemachine import BytesSnapshot, StateSnapshot


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def apply(self, index: int, data: bytes, *, leader_time: float = 0.0) -> Any:
        self.n += 1
        return index

    def snapshot(self) -> StateSnapshot:
        return BytesSnapshot(str(self.n).encode())

    def restore(self, chunks: Iterable[bytes]) -> None:
        self.n = int(b"".join(chunks) or b"0")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run(seconds: float, inflight: int) -> None:
    ids = ["n1", "n2", "n3"]
    addrs = {i: f"127.0.0.1:{_port()}" for i in ids}
    tmp = Path(tempfile.mkdtemp())
    nodes = [
        Node(
            NodeConfig(id=i, snapshot_entries=1_000_000),
            _Count(),
            TcpTransport(i, "bench", addrs[i]),
            data_dir=tmp / i,
            initial_members=addrs,
        )
        for i in ids
    ]
    for n in nodes:
        await n.start()
    try:
        while not any(n.is_leader for n in nodes):
            await asyncio.sleep(0.05)
        ld = next(n for n in nodes if n.is_leader)
        data = b"x" * 100
        low = []
        for _ in range(100):
            t = time.perf_counter()
            await ld.propose(data)
            low.append(time.perf_counter() - t)
            await asyncio.sleep(0.01)
        lat: list[float] = []
        end = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < end:
                t = time.perf_counter()
                await ld.propose(data)
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(inflight)])
        dt = time.perf_counter() - t0
        low.sort()
        print(
            f"commit latency at ~100 writes/s: p50 {statistics.median(low) * 1e3:.2f} ms, "
            f"p99 {low[98] * 1e3:.2f} ms"
        )
        print(
            f"{len(lat) / dt:,.0f} committed writes/s with {inflight} in flight "
            f"(p50 {statistics.median(lat) * 1e3:.1f} ms); 3 nodes in one process, sync on"
        )
    finally:
        for n in nodes:
            await n.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liferaft.runtime.bench", description=__doc__)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--inflight", type=int, default=512)
    a = p.parse_args(argv)
    asyncio.run(run(a.seconds, a.inflight))
    return 0


if __name__ == "__main__":
    sys.exit(main())
