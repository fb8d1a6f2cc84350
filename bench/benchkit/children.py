"""Child processes that announce a control port (bench/_ctl.py): the bench
nodes, the echo server, the failover client, py-spy.  Every one is in one
:class:`liferaft.harness.procs.ProcessGroup`, killed by PID on the way out;
the blocking waits run in a thread, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liferaft.harness.procs import PIPE, Child, ProcessGroup, tail

HERE = Path(__file__).resolve().parent.parent  # bench/
ROOT = HERE.parent


@dataclass
class Proc:
    """A child of this run and, once it announced one, its control port."""

    child: Child
    ctl_port: int = 0

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def popen(self) -> Any:
        return self.child.popen


class Children:
    """Every process this run started, in one ProcessGroup (liferaft.harness):
    killed by PID on the way out, whatever the way out is; a PID leaves the
    registry only once reaped, so a recycled PID is never signalled.  The
    blocking waits run in a thread, off the event loop."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.group = ProcessGroup()

    async def start(
        self,
        name: str,
        script: str,
        args: Sequence[str],
        cpu: int | None = None,
        announce: bool = True,
    ) -> Proc:
        """Start ``python bench/<script> args`` (or, with ``script=""``, the
        command ``args``); wait for its ``{"ctl": port}`` line if ``announce``."""
        cmd = [sys.executable, str(HERE / script), *args] if script else list(args)
        log = self.logs / f"{name}-{time.monotonic_ns()}.log"
        child = self.group.start(name, cmd, log=log, stdin=PIPE, stdout=PIPE, cwd=ROOT, cpu=cpu)
        proc = Proc(child)
        if not announce:
            return proc
        try:
            line = await asyncio.wait_for(asyncio.to_thread(child.popen.stdout.readline), 30)
            proc.ctl_port = int(json.loads(line).get("ctl", 0))
        except (TimeoutError, ValueError) as exc:
            await self.kill(proc)
            why = f"{name} did not start ({exc!r}); its log:\n{tail(log)}"
            raise RuntimeError(why) from None
        return proc

    async def kill(self, proc: Proc) -> None:
        """SIGKILL ``proc`` (if still running) and reap it."""
        await asyncio.to_thread(self.group.kill, proc.child, 5.0)

    async def stop(self, proc: Proc) -> None:
        """Close its stdin (it exits by itself), then SIGKILL if it lingers."""
        with contextlib.suppress(Exception):
            proc.popen.stdin.close()
        await asyncio.to_thread(self.group.reap, proc.child, 1.0)
        await self.kill(proc)

    def kill_all_now(self) -> None:
        """Synchronous last resort (SIGTERM handler, error paths)."""
        self.group.kill_all_now()
