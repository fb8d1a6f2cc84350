"""A registry of the child processes one harness started, by PID.

Every harness that runs real processes (``cluster up``, the fault harness,
the system tests, the benchmarks) keeps the same two promises, so they are
kept here once:

* **Only its own children.** A process is signalled only while it is in
  the registry, and it leaves the registry only once it has been reaped, so
  a PID the kernel has recycled for someone else is never signalled.
* **Every exit path cleans up.** :meth:`ProcessGroup.close` (also the
  context manager's exit) ends every live child: SIGCONT (a SIGSTOPped
  process could not act on SIGTERM), SIGTERM, then SIGKILL after a grace
  period; an ``atexit`` hook is the last resort for a group nobody closed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL


@dataclass
class Child:
    """One process a :class:`ProcessGroup` started."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None = None
    logf: IO[bytes] | None = field(default=None, repr=False)
    started: float = 0.0  # time.monotonic() at the spawn

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def alive(self) -> bool:
        """Running (or stopped), not yet exited."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        return tail(self.log, lines) if self.log is not None else "(no log)"


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log (for an error message), never raising."""
    try:
        text = path.read_bytes()[-64_000:].decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# Strong references on purpose: a group its caller dropped without closing
# it is exactly the one the atexit hook is for, and a WeakSet would forget
# it (and so its live children) at the next garbage collection.  A group
# leaves the set when it is closed.
_open_groups: set[ProcessGroup] = set()


@atexit.register
def _kill_leftovers() -> None:  # the last resort, for a group nobody closed
    for g in list(_open_groups):
        g.kill_all_now()


class ProcessGroup:
    """Start processes, signal them, and end them all, by PID.

    ``new_session``: children get their own session (a terminal's Ctrl-C
    then reaches only the harness, which stops them in order), unless a
    :meth:`start` call says otherwise."""

    def __init__(self, *, new_session: bool = False) -> None:
        self.new_session = new_session
        self.live: dict[int, Child] = {}
        _open_groups.add(self)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        log: Path | None = None,
        header: bool = False,
        stdin: int = DEVNULL,
        stdout: int | None = None,
        cwd: Path | str | None = None,
        env: dict[str, str] | None = None,
        cpu: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
        new_session: bool | None = None,
    ) -> Child:
        """Start ``cmd``; its stdout and stderr go to ``log`` (appended; with
        ``header``, a ``---- start CMD`` line first), unless ``stdout=PIPE``
        (then only stderr goes to the log).  ``cpu`` pins it with taskset."""
        argv = list(cmd)
        if cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(cpu), *argv]
        logf = open(log, "ab") if log is not None else None  # noqa: SIM115 (closed at reap)
        if logf is not None and header:
            logf.write(f"---- start {' '.join(argv)}\n".encode())
            logf.flush()
        out = logf if stdout is None else stdout
        err: Any = logf if logf is not None else DEVNULL
        if stdout is None and logf is not None:
            err = subprocess.STDOUT
        try:
            popen = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=out if out is not None else DEVNULL,
                stderr=err,
                cwd=cwd,
                env=env,
                preexec_fn=preexec_fn,
                start_new_session=self.new_session if new_session is None else new_session,
            )
        except BaseException:
            if logf is not None:
                logf.close()
            raise
        child = Child(name, popen, log, logf, time.monotonic())
        self.live[popen.pid] = child
        return child

    def signal(self, child: Child, sig: int) -> bool:
        """Send ``sig`` to ``child`` if it is ours and not yet reaped."""
        if child.pid not in self.live or child.popen.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            child.popen.send_signal(sig)
            return True
        return False

    def reap(self, child: Child, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``child`` to exit; True once reaped
        (it then leaves the registry and its log is closed)."""
        try:
            child.popen.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return False
        self.live.pop(child.pid, None)
        if child.logf is not None:
            with contextlib.suppress(OSError):
                child.logf.close()
            child.logf = None
        return True

    def kill(self, child: Child, timeout: float = 10.0) -> int | None:
        """kill -9 and reap; the exit status (None if it would not die)."""
        self.signal(child, signal.SIGKILL)
        self.reap(child, timeout)
        return child.popen.returncode

    def terminate(self, children: Iterable[Child] | None = None, grace: float = 5.0) -> None:
        """SIGCONT + SIGTERM each, SIGKILL whatever is left after ``grace``
        seconds, and reap them all (default: every live child)."""
        todo = list(self.live.values()) if children is None else list(children)
        for c in todo:
            if self.signal(c, signal.SIGCONT):
                self.signal(c, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for c in todo:
            if c.pid in self.live and not self.reap(c, deadline - time.monotonic()):
                self.kill(c)
        for c in todo:  # exited before we asked: reap it, close its log
            if c.pid in self.live:
                self.reap(c, 5.0)

    def close(self, grace: float = 5.0) -> None:
        """End every process this group started (idempotent)."""
        self.terminate(None, grace)
        _open_groups.discard(self)

    def kill_all_now(self) -> None:
        """Synchronous last resort (atexit, a signal handler): SIGKILL every
        live child by PID, then reap it."""
        for child in list(self.live.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child.pid, signal.SIGKILL)
        for child in list(self.live.values()):
            self.reap(child, 5.0)
        self.live.clear()


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 on), or
    None if ``pid`` is gone.  The name is cut at its last ")": it may hold
    spaces and parentheses itself."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (Linux /proc)."""
    fields = _stat(pid)
    return fields is not None and bool(fields) and fields[0] != "Z"


def start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot, /proc
    field 22), or None if it is gone: with the PID it names one process
    for good, so a recycled PID is told apart (see :mod:`.pidfile`)."""
    fields = _stat(pid)
    try:
        return None if fields is None else int(fields[19])
    except (IndexError, ValueError):
        return None


def cpu_seconds(pid: int) -> float | None:
    """CPU time ``pid`` has used so far (utime + stime, /proc fields 14 and
    15, all threads), or None if it is gone."""
    fields = _stat(pid)
    try:
        ticks = int(fields[11]) + int(fields[12]) if fields is not None else None
    except (IndexError, ValueError):
        return None
    return None if ticks is None else ticks / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (Linux /proc), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
