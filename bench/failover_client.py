"""A client process that keeps writing while bench/raft_bench.py kills the leader.

    python bench/failover_client.py --ctl PORT1,PORT2,PORT3

Every ``--interval`` seconds it sends one write (the node's ``write`` control
op: a 100-byte proposal, forwarded to the leader by a follower) to every node
whose control connection is still open, without waiting for earlier ones: a
write stuck on a dead leader never delays the next one.  Each write has a
``--timeout``.

The parent writes ``stop T`` on stdin, T being ``time.monotonic()`` just
before it sent SIGKILL to the leader (CLOCK_MONOTONIC is one clock for every
process on the machine).  The client then prints one JSON line:
``failover`` = completion time of the first successful write that was
*sent after* T, minus T (None if none), plus counts, and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import _ctl


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ctl", required=True)
    p.add_argument("--interval", type=float, default=0.005)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--max-life", type=float, default=120.0)
    a = p.parse_args()
    loop = asyncio.get_running_loop()
    stop_at: asyncio.Future[float] = loop.create_future()

    def on_line(line: str) -> None:
        if line.startswith("stop"):
            t = float(line.split()[1])

            def settle() -> None:
                if not stop_at.done():
                    stop_at.set_result(t)

            loop.call_soon_threadsafe(settle)

    _ctl.exit_with_parent(a.max_life, on_line)
    conns = [await _ctl.Ctl.connect(int(x)) for x in a.ctl.split(",")]
    done: list[tuple[int, float, float, bool]] = []  # node, sent, finished, ok
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, c: _ctl.Ctl) -> None:
        t0 = time.monotonic()
        try:
            await c.call("write", timeout=a.timeout + 0.5, wait=a.timeout)
            ok = True
        except (_ctl.CtlError, TimeoutError, ConnectionError):
            ok = False
        done.append((i, t0, time.monotonic(), ok))

    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    while not stop_at.done():
        for i, c in enumerate(conns):
            if not c.closed.is_set():
                t = asyncio.create_task(one(i, c))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        await asyncio.sleep(a.interval)
    t_kill = stop_at.result()
    for t in list(tasks):
        t.cancel()
    after = [d for d in done if d[1] > t_kill and d[3]]
    first = min(after, key=lambda d: d[2]) if after else None
    out = {
        "failover": None if first is None else first[2] - t_kill,
        "first_node": None if first is None else first[0],
        "ok_before": sum(1 for d in done if d[3] and d[2] <= t_kill),
        "ok_after": len(after),
        "failed": sum(1 for d in done if not d[3]),
        "sent": len(done),
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
