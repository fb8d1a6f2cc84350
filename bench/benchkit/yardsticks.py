"""What the hardware allows, measured in the same run as the systems:
raw fdatasync, a loopback round trip, liferaft's hard-state write.  Every
yardstick returns ``{"p50": ms, "p99": ms, "n": samples}``; p50 and p99 are
None when there was no sample (0 ms would be a figure, and a divisor)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .stats import summarize

Yardstick = dict[str, float | None]


def _timed(step: Callable[[], None], seconds: float, cap: int, skip: int = 0) -> Yardstick:
    lat: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and len(lat) < cap:
        t0 = time.perf_counter()
        step()
        lat.append(time.perf_counter() - t0)
    return _figures(lat, skip)


def _figures(lat: list[float], skip: int = 0) -> Yardstick:
    s = summarize(lat[skip:] or lat)
    return {"p50": s["p50"], "p99": s["p99"], "n": len(lat)}


def measure_fsync(directory: Path, seconds: float, cap: int = 20000) -> Yardstick:
    """write(100 B) + fdatasync in a loop, in the directory the data lives in:
    what one durable write costs on this disk right now."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    buf = b"x" * 100

    def step() -> None:
        os.write(fd, buf)
        os.fdatasync(fd)

    try:
        return _timed(step, seconds, cap)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def measure_hardstate(directory: Path, seconds: float) -> Yardstick:
    """liferaft's hard-state write (tmp file, fsync, rename, fsync of the
    directory), which DiskStorage.save does whenever term, vote or commit
    changed: not a yardstick of the target, an explanation of the gap."""
    from liferaft.core import HardState
    from liferaft.storage.hardstate import HardStateStore

    d = directory / "hardstate-probe"
    d.mkdir(exist_ok=True)
    store = HardStateStore(d)
    commit = [0]

    def step() -> None:
        commit[0] += 1
        store.save(HardState(1, None, commit[0]))

    try:
        return _timed(step, seconds, 20000)
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def measure_rtt(port: int, seconds: float) -> Yardstick:
    """Ping-pong 100 bytes with an echo process (asyncio on both ends); the
    first 10 round trips (connection warm-up) are left out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lat: list[float] = []
    msg = b"y" * 100
    try:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and len(lat) < 50000:
            t0 = time.perf_counter()
            writer.write(msg)
            await reader.readexactly(len(msg))
            lat.append(time.perf_counter() - t0)
    finally:
        writer.close()
    return _figures(lat, skip=10)
