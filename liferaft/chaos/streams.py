"""Watchers of the soak: watch streams that survive faults (``GET /v1/watch``,
or etcd's Watch with ``--api etcd``: :meth:`liferaft.chaos.api.Api.watch`
gives both as the same lines).

A :class:`Watcher` is one logical watch (one
:class:`~liferaft.verify.watches.Stream` for the checker): a key or a
prefix, from the revision the first connection names.  It reads the NDJSON
lines (liferaft/kv/server_watch.py): the ``created`` head, one line per
revision (every event of that revision in the range), ``progress`` lines,
and a final ``error`` line.  When the connection drops (a killed, stopped or
cut-off node, a slow watcher cut off, or no line for ``idle`` seconds) it
reconnects to another node, at random, from the last complete revision + 1:
a line is a whole revision, so nothing is missed and nothing repeated, if the server
keeps its word; the checker says whether it did.  A ``compacted`` error
ends the watch (the soak does not compact: it would be a finding).

The watcher also drops its own connection every few seconds and waits a
moment before it resumes (:attr:`Watcher.drops`), as a client on a flaky
network does: the backlog then makes the resumed watch replay past
revisions from the store while new ones arrive live, which is the seam
where a watch server most easily loses or repeats an event
(liferaft/kv/watch.py).  Under faults alone, reconnects were too few and
too prompt to reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc

from liferaft.verify.rev_history import prefix_end
from liferaft.verify.watches import Stream, WEvent

from .cluster import ChaosCluster

#: A stream silent this long is taken for dead (a stopped or cut-off node).
#: Above the server's default progress interval (10 s, and up to a quarter
#: more until its check runs; the chaos nodes run with 1 s, NODE_FLAGS, but a
#: watcher may meet a node started otherwise): at 12 s a quiet single-key
#: watch was dropped just before its progress line every time, and never
#: covered the final revision.
IDLE = 25.0


@dataclass
class Watcher:
    """One logical watch of ``key`` (``prefix``: every key under it)."""

    c: ChaosCluster
    id: int
    key: str
    rng: random.Random
    prefix: bool = True
    prev_kv: bool = True
    idle: float = IDLE
    start: int = 0  # 0 until the first head names it
    last: int = 0  # the last revision seen complete (event line or progress)
    progress: int = 0
    events: list[WEvent] = field(default_factory=list)
    connects: int = 0
    #: Drop the connection after this many seconds (a range), then pause
    #: this long before resuming; None: never on purpose.
    drop_after: tuple[float, float] | None = (1.0, 5.0)
    pause: tuple[float, float] = (0.2, 2.5)
    drops: int = 0
    errors: list[str] = field(default_factory=list)
    #: Each key's first delete, by arrival time (lease keys seen gone).
    deleted: dict[str, float] = field(default_factory=dict)
    ended: str = ""  # why the watch ended for good (compacted), else ""

    async def run(self, stop: asyncio.Event) -> None:
        """Watch, reconnecting, until ``stop`` is set or the watch ends."""
        broken = ""  # a node whose stream broke: resume on another, as clientv3 does
        while not stop.is_set() and not self.ended:
            others = [n for n in self.c.members if n != broken]
            nid = self.rng.choice(others or list(self.c.members))
            task = asyncio.create_task(self._connect(nid))
            stopper = asyncio.create_task(stop.wait())
            drop = self.rng.uniform(*self.drop_after) if self.drop_after else None
            await asyncio.wait({task, stopper}, timeout=drop, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            dropped = not task.done() and not stop.is_set()
            if not task.done():
                task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except (aiohttp.ClientError, grpc.RpcError, TimeoutError, OSError, ValueError) as exc:
                self.errors.append(f"{nid}: {type(exc).__name__}")
            broken = "" if dropped else nid
            if dropped:
                self.drops += 1
                await asyncio.sleep(self.rng.uniform(*self.pause))
            elif not stop.is_set():
                await asyncio.sleep(0.1)

    async def catch_up(self, revision: int, budget: float) -> bool:
        """Watch until the stream has covered ``revision`` (after the run:
        so the checker sees it whole), at most ``budget`` seconds."""
        stop = asyncio.Event()
        self.drop_after = None
        task = asyncio.create_task(self.run(stop))
        end = time.monotonic() + budget
        while self.last < revision and time.monotonic() < end and not self.ended:
            await asyncio.sleep(0.2)
        stop.set()
        await task
        return self.last >= revision

    async def _connect(self, nid: str) -> None:
        self.connects += 1
        start = self.last + 1 if self.start else 0  # resume after the last revision seen
        lines = self.c.api.watch(nid, self.key, self.prefix, self.prev_kv, start, self.idle)
        async with contextlib.aclosing(lines):  # its connection closes here, not when collected
            async for d in lines:
                self.line(d, nid)
                if self.ended:
                    return

    def line(self, d: dict[str, Any], nid: str = "") -> None:
        """One NDJSON line of the stream."""
        now = time.monotonic()
        if d.get("created"):
            if not self.start:
                self.start = int(d["start_revision"])
                self.last = self.start - 1
        elif "events" in d:
            rev = int(d["revision"])
            for e in d["events"]:
                kv, prev = e["kv"], e.get("prev_kv")
                put = e["type"] == "put"
                self.events.append(WEvent(
                    rev, e["type"], kv["key"], kv["value"] if put else None,
                    prev["value"] if prev else None, now))  # fmt: skip
                if not put:
                    self.deleted.setdefault(kv["key"], now)
            self.last = max(self.last, rev)
        elif "progress" in d:
            self.progress = max(self.progress, int(d["progress"]))
            self.last = max(self.last, self.progress)
        elif "error" in d:
            self.errors.append(f"{nid}: {d['error']}")
            if "compact_revision" in d:
                self.ended = f"compacted at {d['compact_revision']} (from {self.last + 1})"

    def stream(self) -> Stream:
        """What the checker takes."""
        end = prefix_end(self.key) if self.prefix else None
        return Stream(self.id, self.key, self.start or 1, end, self.prev_kv, tuple(self.events),
                      self.progress)  # fmt: skip
