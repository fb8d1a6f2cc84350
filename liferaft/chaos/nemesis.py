"""Faults, one at a time, each healed before the next (so a majority of the
cluster is always recoverable and the run measures safety, not bad luck):

- ``kill``: SIGKILL a node (the leader half the time), restart it 1-4 s later;
- ``stop``: SIGSTOP a node (the leader half the time), SIGCONT 1-4 s later;
- ``partition``: cut links with blackhole routes (random halves, one node
  isolated, the leader isolated, or the "bridge"), heal 2-6 s later; needs
  network namespaces (:mod:`liferaft.chaos.netns`);
- ``transfer``: ask the leader to hand over to a random voter;
- ``churn``: remove a node from the cluster, wipe its data, and bring it
  back as a fresh member through ``--join`` (a learner, promoted once caught
  up).

Leaderless intervals (:attr:`Nemesis.leaderless`, for the lease check,
liferaft/verify/leases.py): a fault that can cost the cluster its leader
(a kill, stop or churn of the node that led when it began, or of any node
when none was known; every partition and transfer) opens one at its start;
it closes when, after the fault is healed, the nodes agree on one leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from typing import Any

from .cluster import ChaosCluster

FAULTS = ("kill", "stop", "partition", "transfer", "churn")


class Nemesis:
    def __init__(
        self, c: ChaosCluster, kinds: list[str], rng: random.Random, lab: Any = None
    ) -> None:
        self.c = c
        self.kinds = kinds
        self.rng = rng
        self.lab = lab
        self.done: Counter[str] = Counter()
        self.log: list[tuple[float, str]] = []
        self.t0 = time.monotonic()
        # (start, end) on the monotonic clock; see the module docstring.
        self.leaderless: list[tuple[float, float]] = []
        self._hit: set[str] | None = None  # the nodes the fault hit (None: any)

    def note(self, what: str) -> None:
        self.log.append((round(time.monotonic() - self.t0, 3), what))

    async def _leader_or_random(self) -> str:
        if self.rng.random() < 0.5:
            try:
                return await self.c.leader(timeout=3)
            except Exception:  # no leader right now: any node will do
                pass
        return self.rng.choice(list(self.c.members))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _sleep(stop, self.rng.uniform(1.0, 3.0))
            if stop.is_set():
                break
            kind = self.rng.choice(self.kinds)
            began, led = time.monotonic(), await self._leader_now()
            self._hit = None
            try:
                await getattr(self, "_" + kind)(stop)
                self.done[kind] += 1
            finally:
                await self.heal()
            if led is None or self._hit is None or led in self._hit:
                await self._leader_known(began)

    async def _leader_now(self, timeout: float = 1.0) -> str | None:
        try:
            return await self.c.leader(timeout=timeout)
        except Exception:  # none within the timeout
            return None

    async def _leader_known(self, began: float) -> None:
        """Close the leaderless interval that began at ``began`` once the
        nodes agree on a leader (at most a minute: then it stays open to
        the end of the run, which only weakens the lease check)."""
        for _ in range(6):
            if await self._leader_now(10) is not None:
                self.leaderless.append((began, time.monotonic()))
                return
        self.leaderless.append((began, float("inf")))

    async def heal(self) -> None:
        if self.lab is not None:
            self.lab.heal()
        for nid, m in self.c.members.items():
            if m.stopped:
                self.c.cont(nid)
            if not m.alive:
                self.c.restart(nid)

    async def _kill(self, stop: asyncio.Event) -> None:
        nid = await self._leader_or_random()
        self._hit = {nid}
        self.note(f"kill -9 {nid}")
        self.c.kill(nid)
        await _sleep(stop, self.rng.uniform(1.0, 4.0))
        self.note(f"restart {nid}")
        self.c.restart(nid)

    async def _stop(self, stop: asyncio.Event) -> None:
        nid = await self._leader_or_random()
        self._hit = {nid}
        self.note(f"SIGSTOP {nid}")
        self.c.stop(nid)
        await _sleep(stop, self.rng.uniform(1.0, 4.0))
        self.note(f"SIGCONT {nid}")
        self.c.cont(nid)

    async def _partition(self, stop: asyncio.Event) -> None:
        lab = self.lab
        assert lab is not None
        ids = list(self.c.members)
        how = self.rng.choice(["halves", "isolate", "isolate-leader", "bridge"])
        if how == "bridge" and len(ids) != 5:
            how = "halves"
        if how == "halves":
            self.rng.shuffle(ids)
            k = self.rng.randint(1, len(ids) // 2)
            groups = [ids[:k], ids[k:]]
            lab.partition(groups)
        elif how == "isolate":
            groups = [[self.rng.choice(ids)]]
            lab.isolate(groups[0][0])
        elif how == "isolate-leader":
            ld = await self._leader_or_random()
            groups = [[ld]]
            lab.isolate(ld)
        else:
            self.rng.shuffle(ids)
            groups = [ids[:2], ids[2:3], ids[3:]]
            lab.bridge(*groups)
        self.note(f"partition {how} {groups}")
        await _sleep(stop, self.rng.uniform(2.0, 6.0))
        self.note("heal")
        lab.heal()

    async def _transfer(self, stop: asyncio.Event) -> None:
        try:
            ld = await self.c.leader(timeout=3)
        except Exception:
            return
        voters = sorted((await self.c.voters()) - {ld})
        if not voters:
            return
        to = self.rng.choice(voters)
        st, body = await self.c.call(ld, "POST", "/v1/leader/transfer", {"to": to}, timeout=5)
        self.note(f"transfer {ld} -> {to}: {st}")

    async def _churn(self, stop: asyncio.Event) -> None:
        """Remove a node, wipe it, and add it back as a new member."""
        ids = list(self.c.members)
        victim = self.rng.choice(ids)
        self._hit = {victim}
        others = [i for i in ids if i != victim]
        # Remove it through any other member (routed to the leader).  A
        # removed node may stop by itself: that exit is not a crash.
        self.c.expect_exit(victim)
        for _ in range(20):
            via = self.rng.choice(others)
            st, body = await self.c.call(via, "DELETE", f"/v1/members/{victim}", timeout=5)
            if st in (200, 404):
                break
            await _sleep(stop, 0.5)
        else:
            self.note(f"churn: could not remove {victim}")
            self.c.members[victim].expected_exit = False
            self.c.check_exits()
            return
        self.note(f"churn: removed {victim} ({st})")
        self.c.kill(victim)
        self.c.wipe(victim)
        await _sleep(stop, self.rng.uniform(0.5, 2.0))
        self.c.start_joining(victim, self.rng.choice(others))
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while loop.time() < end:
            if victim in await self.c.voters():
                self.note(f"churn: {victim} is a voter again")
                return
            await asyncio.sleep(0.5)
        self.note(f"churn: {victim} not a voter after 30 s")


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
