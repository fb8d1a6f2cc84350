"""Loopback micro-benchmark of TcpTransport: ``python -m liferaft.transport.bench``.

Both transports run in this one process and event loop, so every figure
includes the sender's and the receiver's CPU time.  Measures one-way
throughput of small messages (Heartbeat), of large AppendEntries
(``--entries`` x ``--size`` bytes) and of a streamed snapshot, and the
rate of request/response calls (``--calls``, 64 in flight at a time).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterator

from liferaft.core.messages import (
    AppendEntries,
    Entry,
    Heartbeat,
    InstallSnapshot,
    Message,
    NodeId,
    Snapshot,
    SnapshotMeta,
)

from .tcp import TcpTransport


class _Sink:
    def __init__(self) -> None:
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        pass


class _Handler:
    def __init__(self, snapshot_bytes: int = 0) -> None:
        self.count = 0
        self.done = asyncio.Event()
        self.target = 0
        self.snapshot_bytes = snapshot_bytes
        self.statuses: list[bool] = []

    def deliver(self, msg: Message) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()

    def unreachable(self, peer: NodeId) -> None:
        pass

    def snapshot_source(self, msg: InstallSnapshot) -> Iterator[bytes]:
        block = bytes(range(256)) * 4096  # 1 MiB
        for _ in range(self.snapshot_bytes // len(block)):
            yield block

    def snapshot_sink(self, msg: InstallSnapshot) -> _Sink:
        return _Sink()

    def snapshot_status(self, peer: NodeId, ok: bool) -> None:
        self.statuses.append(ok)
        self.done.set()

    async def handle_call(self, frm: NodeId, payload: bytes, known_peer: bool) -> bytes:
        return payload


async def _run(a: argparse.Namespace) -> None:
    h1, h2 = _Handler(a.snapshot_mib * 1024 * 1024), _Handler()
    t1 = TcpTransport("n1", "bench", "127.0.0.1:0", queue_size=1 << 20)
    t2 = TcpTransport("n2", "bench", "127.0.0.1:0", queue_size=1 << 20)
    await t1.start(h1)
    await t2.start(h2)
    t1.set_peers({"n2": t2.address})
    t2.set_peers({"n1": t1.address})
    try:
        while not t1.stats()["peers"]["n2"]["connected"]:
            await asyncio.sleep(0.001)

        async def blast(msgs: list[Message]) -> float:
            h2.count, h2.target = 0, len(msgs)
            h2.done.clear()
            t0 = time.perf_counter()
            for i, m in enumerate(msgs):
                t1.send(m)
                if i % 1000 == 999:
                    await asyncio.sleep(0)  # let the writer run, as a runtime would
            await h2.done.wait()
            return time.perf_counter() - t0

        hbs: list[Message] = [Heartbeat(1, "n1", "n2", i) for i in range(a.heartbeats)]
        dt = await blast(hbs)
        print(f"Heartbeat      {a.heartbeats / dt:>10,.0f} msg/s")

        ents = tuple(Entry(1 + i, 1, b"x" * a.size) for i in range(a.entries))
        aes: list[Message] = [AppendEntries(1, "n1", "n2", 0, 0, ents, 0)] * a.appends
        dt = await blast(aes)
        mb = a.appends * a.entries * a.size / 1e6
        print(
            f"AppendEntries  {a.appends / dt:>10,.0f} msg/s  ({a.entries} x {a.size} B: "
            f"{mb / dt:,.0f} MB/s of entry data, {a.appends * a.entries / dt:,.0f} entries/s)"
        )

        h1.done.clear()
        t0 = time.perf_counter()
        t1.send(InstallSnapshot(1, "n1", "n2", Snapshot(SnapshotMeta(10, 1))))
        await h1.done.wait()
        dt = time.perf_counter() - t0
        rate = a.snapshot_mib / dt
        print(f"Snapshot       {rate:>10,.0f} MiB/s  ({a.snapshot_mib} MiB, ok={h1.statuses})")

        sem = asyncio.Semaphore(64)

        async def one(i: int) -> None:
            async with sem:
                body = i.to_bytes(8, "big") * 8
                if await t1.call("n2", body, 10.0) != body:
                    raise AssertionError("call reply mismatch")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(a.calls)))
        dt = time.perf_counter() - t0
        print(f"Call (64 B)    {a.calls / dt:>10,.0f} calls/s  (64 in flight)")
    finally:
        await t1.close()
        await t2.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--heartbeats", type=int, default=100_000)
    p.add_argument("--appends", type=int, default=2_000)
    p.add_argument("--entries", type=int, default=256)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--snapshot-mib", type=int, default=256)
    p.add_argument("--calls", type=int, default=20_000)
    asyncio.run(_run(p.parse_args(argv)))


if __name__ == "__main__":
    main()
