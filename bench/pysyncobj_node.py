"""One PySyncObj node in its own process, driven by bench/raft_bench.py.

    python bench/pysyncobj_node.py --self 127.0.0.1:P1 --others 127.0.0.1:P2,127.0.0.1:P3

PySyncObj's defaults (in-memory journal, its own ticking thread, batched
AppendEntries) except the election timeout, which is set to match liferaft's
(``--emin``/``--emax``: the randomized timeout lies in [emin, emax); liferaft's
lies in [ET, 2 ET) with ET = tick x election_ticks).

The control side (_ctl.py) runs on an asyncio loop in the main thread; a load
step runs in a plain thread that calls the ``@replicated`` method with a
callback, the way a PySyncObj application submits asynchronous writes.
Callbacks arrive on PySyncObj's own thread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import _ctl
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated


class Sink(SyncObj):  # type: ignore[misc]
    """Counts entries and keeps the last value, like the liferaft Sink."""

    def __init__(self, me: str, others: list[str], conf: SyncObjConf) -> None:
        super().__init__(me, others, conf)
        self._n = 0
        self._last = b""

    @replicated  # type: ignore[untyped-decorator]
    def put(self, data: bytes) -> int:
        self._n += 1
        self._last = data
        return self._n


class Bench:
    def __init__(self, obj: Sink) -> None:
        self.obj = obj
        self.value = os.urandom(100)
        self.submitted = 0
        self.completed = [0]  # written only by PySyncObj's thread (the callbacks)

    @property
    def pending(self) -> int:
        return self.submitted - self.completed[0]

    async def status(self, req: dict[str, Any]) -> dict[str, Any]:
        st = self.obj.getStatus()
        leader = st["leader"]
        return {
            "leader": self.obj._isLeader(),
            "leader_id": None if leader is None else str(leader),
            "term": st["raft_term"],
            "applied": st["last_applied"],
            "commit": st["commit_idx"],
            "last": st["commit_idx"],
            "pending": self.pending,
            "cpu": time.process_time(),
        }

    async def cpu(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"cpu": time.process_time()}

    async def write(self, req: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()

        def settle(res: Any, err: int) -> None:
            if not fut.done():
                if err == FAIL_REASON.SUCCESS:
                    fut.set_result(res)
                else:
                    fut.set_exception(RuntimeError(f"FAIL_REASON {err}"))

        def cb(res: Any, err: int) -> None:
            loop.call_soon_threadsafe(settle, res, err)

        self.obj.put(self.value, callback=cb)
        async with asyncio.timeout(float(req.get("wait", 2.0))):
            await fut
        return {}

    async def load(self, req: dict[str, Any]) -> dict[str, Any]:
        kw = {k: req[k] for k in ("rate", "seconds", "grace", "inflight")}
        return await asyncio.to_thread(self.load_step, **kw, size=int(req.get("size", 100)))

    def load_step(
        self, *, rate: float, seconds: float, grace: float, inflight: int, size: int
    ) -> dict[str, Any]:
        """The same schedule as liferaft_node.load_step, with callbacks
        instead of tasks: slot k is due at start + k/rate, at most
        ``inflight`` writes outstanding, committed = callback with SUCCESS
        within the step plus ``grace``."""
        put = self.obj.put
        value = (self.value * (size // len(self.value) + 1))[:size]
        n = max(1, round(rate * seconds))
        clock = time.perf_counter
        lat: list[float] = []
        late = [0]
        errors: dict[str, int] = {}
        done = self.completed
        start = clock() + 0.005
        end = start + seconds
        deadline = end + grace
        success = FAIL_REASON.SUCCESS

        def make_cb(t0: float) -> Any:
            def cb(res: Any, err: int) -> None:
                t1 = clock()
                if err == success:
                    if t1 <= deadline:
                        lat.append(t1 - t0)
                    else:
                        late[0] += 1
                else:
                    k = f"FAIL_REASON {err}"
                    errors[k] = errors.get(k, 0) + 1
                done[0] += 1

            return cb

        cpu0 = time.process_time()
        submitted = 0
        capped = 0.0
        while submitted < n:
            now = clock()
            if now >= end:
                break
            due = min(n, int((now - start) * rate) + 1)
            room = inflight - (self.submitted - done[0])
            k = min(due - submitted, room)
            for _ in range(k):
                self.submitted += 1
                put(value, callback=make_cb(now))
            submitted += max(0, k)
            if submitted >= n:
                break
            if room <= k:  # at the cap: poll for room
                time.sleep(0.0005)
                capped += 0.0005
            else:
                time.sleep(max(0.0, start + submitted / rate - clock()))
        while self.pending > 0 and clock() < deadline + 0.05:
            time.sleep(0.002)
        cpu = time.process_time() - cpu0
        failed = sum(errors.values())
        return {
            "rate": rate,
            "seconds": seconds,
            "offered": n,
            "submitted": submitted,
            "committed": len(lat),
            "failed": failed,
            "late": late[0],
            "errors": errors,
            "capped_s": capped,
            "cpu": cpu,
            "wall": clock() - start,
            **_ctl.summarize(list(lat)),
        }


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--self", dest="me", required=True)
    p.add_argument("--others", required=True)
    p.add_argument("--emin", type=float, default=1.0)
    p.add_argument("--emax", type=float, default=2.0)
    p.add_argument("--conf", default="", help="extra SyncObjConf fields: k=v,k=v (JSON values)")
    p.add_argument("--max-life", type=float, default=900.0)
    a = p.parse_args()
    _ctl.exit_with_parent(a.max_life)
    extra = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in a.conf.split(",") if kv)}
    conf = SyncObjConf(**{"raftMinTimeout": a.emin, "raftMaxTimeout": a.emax, **extra})
    obj = Sink(a.me, a.others.split(","), conf)
    b = Bench(obj)
    server = await _ctl.serve({"status": b.status, "load": b.load, "write": b.write, "cpu": b.cpu})
    _ctl.announce(server, id=a.me)
    await asyncio.Event().wait()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
