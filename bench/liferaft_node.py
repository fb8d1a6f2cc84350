"""One liferaft node in its own process, driven by bench/raft_bench.py.

    python bench/liferaft_node.py --id n1 --members n1=127.0.0.1:P1,n2=...,n3=... \
        (--data-dir DIR | --mem)

``--data-dir``: ``Node(data_dir=...)``, DiskStorage with fdatasync ("sync
on").  ``--mem``: ``Node(store=MemStore())``, nothing written to disk ("sync
off", like PySyncObj's default in-memory journal).  Everything else is the
default ``NodeConfig`` unless the flags say otherwise.

Control ops (see _ctl.py): ``status``, ``load`` (run one load step at this
node; see :func:`load_step`), ``write`` (one proposal, for the failover
client) and ``cpu``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repo's liferaft

import _ctl  # noqa: E402

from liferaft.runtime import Node, NodeConfig, NodeError  # noqa: E402
from liferaft.runtime.statemachine import BytesSnapshot, StateSnapshot  # noqa: E402
from liferaft.runtime.store import MemStore  # noqa: E402
from liferaft.transport import TcpTransport  # noqa: E402


class Sink:
    """The state machine: counts entries and keeps the last value (as the
    PySyncObj side does), so applying costs next to nothing."""

    def __init__(self) -> None:
        self.n = 0
        self.last = b""

    def apply(self, index: int, data: bytes) -> Any:
        self.n += 1
        self.last = data
        return self.n

    def snapshot(self) -> StateSnapshot:
        return BytesSnapshot(b"%d" % self.n)

    def restore(self, chunks: Iterable[bytes]) -> None:
        self.n = int(b"".join(chunks) or b"0")


class Bench:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.inflight = 0  # proposals of the current or last load step not yet done
        self.value = os.urandom(100)

    async def status(self, req: dict[str, Any]) -> dict[str, Any]:
        st = self.node.status()
        return {
            "leader": st.role == "leader",
            "leader_id": st.leader,
            "term": st.term,
            "applied": st.applied_index,
            "commit": st.commit_index,
            "last": st.last_log_index,
            "pending": self.inflight,
            "cpu": time.process_time(),
        }

    async def cpu(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"cpu": time.process_time()}

    async def diag(self, req: dict[str, Any]) -> dict[str, Any]:
        """Transport counters and the leader's view of its followers."""
        stats = self.node.transport.stats()
        peers = {
            pid: {k: v[k] for k in ("sent", "dropped", "queued", "reconnects")}
            for pid, v in stats["peers"].items()
        }
        st = self.node.status()
        prog = {pid: {"match": p.match, "state": p.state} for pid, p in st.peers.items()}
        return {"peers": peers, "progress": prog, "received": stats["received"]}

    async def write(self, req: dict[str, Any]) -> dict[str, Any]:
        await self.node.propose(self.value, timeout=float(req.get("wait", 2.0)))
        return {}

    async def load(self, req: dict[str, Any]) -> dict[str, Any]:
        prof = cProfile.Profile() if req.get("profile") else None
        res = await load_step(
            self,
            rate=float(req["rate"]),
            seconds=float(req["seconds"]),
            grace=float(req["grace"]),
            cap=int(req["inflight"]),
            size=int(req.get("size", 100)),
            prof=prof,
        )
        if prof is not None:
            prof.dump_stats(req["profile"])
        return res


def _failed(exc: BaseException) -> asyncio.Future[Any]:
    f: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    f.set_exception(exc)
    return f


async def load_step(
    b: Bench,
    *,
    rate: float,
    seconds: float,
    grace: float,
    cap: int,
    size: int,
    prof: cProfile.Profile | None = None,
) -> dict[str, Any]:
    """Offer ``rate`` writes/s of ``size`` bytes for ``seconds`` at this node.

    A pacer submits every write that is due (slot k is due at start + k/rate)
    with ``node.submit(value)`` and a done callback (as the PySyncObj side
    uses callbacks), never more than ``cap`` at once; a slot still unsubmitted
    when the step ends is offered but not committed.  A write counts as
    committed if its future resolved within the step plus ``grace``; its
    latency runs from submission to that resolution.
    """
    node = b.node
    value = (b.value * (size // len(b.value) + 1))[:size]
    n = max(1, round(rate * seconds))
    clock = time.perf_counter
    lat: list[float] = []
    counts = {"committed": 0, "failed": 0, "late": 0}
    errors: dict[str, int] = {}
    futs: set[asyncio.Future[Any]] = set()
    submit = node.submit
    freed = asyncio.Event()
    start = clock() + 0.005
    end = start + seconds
    deadline = end + grace

    def make_cb(t0: float) -> Any:
        def cb(f: asyncio.Future[Any]) -> None:
            b.inflight -= 1
            freed.set()
            futs.discard(f)
            exc = None if f.cancelled() else f.exception()
            if f.cancelled() or exc is not None:
                counts["failed"] += 1
                k = "Cancelled" if f.cancelled() else type(exc).__name__
                errors[k] = errors.get(k, 0) + 1
                return
            t1 = clock()
            if t1 <= deadline:
                counts["committed"] += 1
                lat.append(t1 - t0)
            else:
                counts["late"] += 1

        return cb

    cpu0 = time.process_time()
    if prof is not None:
        prof.enable()
    submitted = 0
    capped = 0.0  # seconds the pacer waited on the in-flight cap
    try:
        while submitted < n:
            now = clock()
            if now >= end:
                break
            due = min(n, int((now - start) * rate) + 1)
            while submitted < due and b.inflight < cap:
                submitted += 1
                b.inflight += 1
                try:
                    fut = submit(value, timeout=max(0.001, deadline - now))
                except NodeError as exc:
                    make_cb(now)(_failed(exc))
                    continue
                futs.add(fut)
                fut.add_done_callback(make_cb(now))
            if submitted >= n:
                break
            if b.inflight >= cap:
                freed.clear()
                w0 = clock()
                try:
                    async with asyncio.timeout(max(0.0, end - w0)):
                        await freed.wait()
                except TimeoutError:
                    pass
                capped += clock() - w0
            else:
                await asyncio.sleep(max(0.0, start + submitted / rate - clock()))
        if futs:
            await asyncio.wait(set(futs), timeout=max(0.0, deadline - clock()) + 0.05)
        for f in list(futs):
            f.cancel()
    finally:
        if prof is not None:
            prof.disable()
    cpu = time.process_time() - cpu0
    wall = clock() - start
    return {
        "rate": rate,
        "seconds": seconds,
        "offered": n,
        "submitted": submitted,
        **counts,
        "errors": errors,
        "capped_s": capped,
        "cpu": cpu,
        "wall": wall,
        **_ctl.summarize(lat),
    }


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--id", required=True)
    p.add_argument("--members", required=True, help="n1=host:port,n2=host:port,...")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--data-dir")
    g.add_argument("--mem", action="store_true")
    p.add_argument("--tick", type=float, default=NodeConfig.tick_interval)
    p.add_argument("--election-ticks", type=int, default=NodeConfig.election_ticks)
    p.add_argument("--switch-interval", type=float, help="sys.setswitchinterval (diagnostics)")
    p.add_argument("--max-life", type=float, default=900.0)
    a = p.parse_args()
    if a.switch_interval:
        sys.setswitchinterval(a.switch_interval)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    _ctl.exit_with_parent(a.max_life)
    members = dict(kv.split("=", 1) for kv in a.members.split(","))
    node = Node(
        NodeConfig(id=a.id, tick_interval=a.tick, election_ticks=a.election_ticks),
        Sink(),
        TcpTransport(a.id, "bench", members[a.id]),
        data_dir=a.data_dir,
        store=MemStore() if a.mem else None,
        initial_members=members,
    )
    await node.start()
    b = Bench(node)
    server = await _ctl.serve(
        {"status": b.status, "load": b.load, "write": b.write, "cpu": b.cpu, "diag": b.diag}
    )
    _ctl.announce(server, id=a.id)
    await asyncio.Event().wait()  # until stdin closes or the parent kills us


if __name__ == "__main__":
    asyncio.run(main())
