"""Fault-free throughput of the core: committed entries per CPU second.

Three cores over MemoryStorage, wired by a FIFO in-process network with no
faults and no checkers.  The leader takes proposals in bursts; every Ready is
handled in the contract order (persist, send, apply, advance).  The figure
is entries committed and applied on all three nodes per second of process
CPU time, so it measures the core (plus the in-memory log), not a disk or a
network.  ``python -m liferaft.sim --bench``.
"""

from __future__ import annotations

import random
import time
from collections import deque

from liferaft.core import Config, MemoryStorage, Message, RawNode, Role


class _Bench:
    def __init__(self, n: int = 3) -> None:
        ids = [f"n{i}" for i in range(1, n + 1)]
        self.stores = {i: MemoryStorage.bootstrap(ids) for i in ids}
        self.nodes = {
            i: RawNode(
                Config(id=i, rng=random.Random(i), max_inflight_msgs=256),
                self.stores[i],
            )
            for i in ids
        }
        self.queue: deque[Message] = deque()
        self.applied = dict.fromkeys(ids, 0)

    def drain(self) -> None:
        nodes, stores, queue, applied = self.nodes, self.stores, self.queue, self.applied
        busy = True
        while busy:
            busy = False
            for nid, rn in nodes.items():
                if not rn.has_ready():
                    continue
                busy = True
                rd = rn.ready()
                stores[nid].save(rd.hard_state, rd.entries, rd.snapshot)
                queue.extend(rd.messages)
                if rd.committed_entries:
                    applied[nid] += len(rd.committed_entries)
                rn.advance()
            while queue:
                busy = True
                m = queue.popleft()
                nodes[m.to].step(m)

    def elect(self) -> RawNode:
        first = self.nodes["n1"]
        first.campaign()
        self.drain()
        assert first.role is Role.LEADER
        return first


def run(entries: int = 200_000, burst: int = 256, size: int = 64) -> dict[str, float]:
    b = _Bench()
    leader = b.elect()
    base = dict(b.applied)
    payload = [bytes(size) for _ in range(burst)]
    t0 = time.process_time()
    w0 = time.perf_counter()
    done = 0
    while done < entries:
        for p in payload:
            leader.propose(p)
        done += burst
        b.drain()
    cpu = time.process_time() - t0
    wall = time.perf_counter() - w0
    committed = min(b.applied[n] - base[n] for n in b.applied)
    if committed < done:
        raise AssertionError(f"only {committed} of {done} entries committed everywhere")
    return {
        "entries": committed,
        "burst": burst,
        "size": size,
        "cpu_s": cpu,
        "wall_s": wall,
        "per_cpu_s": committed / cpu,
    }


def main() -> int:
    print("liferaft core benchmark: 3 nodes, in-memory log, FIFO network, no faults")
    for burst in (64, 256, 1024):
        r = run(burst=burst)
        print(
            f"burst={burst:5d} entries={int(r['entries'])} size={int(r['size'])}B "
            f"cpu={r['cpu_s']:.2f}s committed/cpu-s={r['per_cpu_s']:,.0f}"
        )
    return 0
