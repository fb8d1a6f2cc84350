"""Clocks for the runtime: the real one, and a manual one for tests.

The core never reads a clock; the runtime turns time into ``tick()`` calls.
Tests drive a :class:`ManualClock` so a whole cluster runs without one real
sleep: ``await clock.advance(0.5)`` wakes every sleeper whose time has come,
in order, and lets the woken tasks run.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> object:
        """Do not run the callback (if it has not run)."""


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for timeouts and ticks)."""

    def wall(self) -> float:
        """Seconds since the epoch (for the leader-time stamp of commands)."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` on the event loop ``seconds`` from now on this
        clock (a timer without a task: the commit flush arms one per idle
        period)."""


class SystemClock:
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(seconds, callback)


class ManualClock:
    """Time moves only when a test calls :meth:`advance`."""

    def __init__(self, start: float = 1_000.0, wall_offset: float = 1.7e9) -> None:
        self._now = start
        self._wall_offset = wall_offset
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        await self._sleeper(seconds)

    def call_later(self, seconds: float, callback: Callable[[], None]) -> TimerHandle:
        fut = self._sleeper(seconds)
        fut.add_done_callback(lambda f: None if f.cancelled() else callback())
        return fut

    def _sleeper(self, seconds: float) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + max(0.0, seconds), next(self._seq), fut))
        return fut

    async def advance(self, seconds: float, step: float | None = None) -> None:
        """Move time forward by ``seconds``, waking sleepers in time order (in
        increments of ``step`` if given) and letting the loop run after each."""
        end = self._now + seconds
        while True:
            await settle()
            nxt = self._sleepers[0][0] if self._sleepers else end
            target = min(end, nxt if step is None else min(nxt, self._now + step))
            self._now = max(self._now, target)
            woke = False
            while self._sleepers and self._sleepers[0][0] <= self._now:
                _, _, fut = heapq.heappop(self._sleepers)
                if not fut.done():
                    fut.set_result(None)
                    woke = True
            if not woke and self._now >= end:
                await settle()
                return


async def settle(rounds: int = 20) -> None:
    """Let ready tasks (and the callbacks they schedule) run for a while."""
    for _ in range(rounds):
        await asyncio.sleep(0)
