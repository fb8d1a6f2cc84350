"""The pidfile registry of ``liferaft cluster up``: which processes it
started, so that ``liferaft cluster down`` (another process, another
terminal) can stop exactly those and nothing else.

Each entry is a name with a PID *and* the kernel's start time of that PID
(:func:`~liferaft.harness.procs.start_time`).  A PID the kernel recycled
for another process after ours exited has another start time, so it is
never signalled.  The file is JSON with a format version; a file of another
version is refused with one line naming both, never misread
(docs/architecture.md, issue 13).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from .procs import pid_alive, start_time

VERSION = 1
NAME = "cluster.pids"


class PidfileError(Exception):
    """The registry cannot be read (another version, or not a registry)."""


@dataclass(frozen=True)
class Entry:
    name: str
    pid: int
    start: int  # /proc start time of pid, when it was recorded

    def running(self) -> bool:
        """Still the very process that was recorded (not a recycled PID)."""
        return pid_alive(self.pid) and start_time(self.pid) == self.start


def write(path: Path, pids: dict[str, int]) -> None:
    """Record ``name -> pid`` (atomically: tmp file, then rename)."""
    entries = {}
    for name, pid in pids.items():
        st = start_time(pid)
        if st is not None:
            entries[name] = {"pid": pid, "start": st}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"version": VERSION, "pids": entries}, indent=1) + "\n")
    os.replace(tmp, path)


def read(path: Path) -> list[Entry]:
    """The recorded entries ([] without a file); PidfileError naming both
    versions for a file of another version."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise PidfileError(f"{path}: not a cluster pid registry ({exc})") from None
    version = raw.get("version") if isinstance(raw, dict) else None
    if version != VERSION:
        raise PidfileError(
            f"{path}: pid registry version {version}, this liferaft reads version {VERSION}"
        )
    try:
        return [Entry(n, int(e["pid"]), int(e["start"])) for n, e in raw["pids"].items()]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise PidfileError(f"{path}: not a cluster pid registry ({exc!r})") from None


def stop(entries: list[Entry], grace: float = 10.0) -> list[Entry]:
    """SIGCONT + SIGTERM every recorded process that still runs, SIGKILL
    whichever is left after ``grace`` s; the entries that were running."""
    live = [e for e in entries if e.running()]
    for e in live:
        for sig in (signal.SIGCONT, signal.SIGTERM):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(e.pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(e.running() for e in live):
        time.sleep(0.05)
    for e in live:
        if e.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(e.pid, signal.SIGKILL)
    return live
