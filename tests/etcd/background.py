"""A long-running client (``etcdctl watch``, ``etcdctl lease keep-alive``)
as a child process whose output a test reads as it comes, with bounded
waits, and which is always stopped by its PID."""

from __future__ import annotations

import queue
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from tests.etcd.etcdctl import Etcdctl, etcdctl_env


class Background:
    """``argv`` running; :meth:`wait` for its output lines.  A context
    manager whose exit stops it (SIGTERM, then SIGKILL) by PID."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=etcdctl_env(),
        )  # fmt: skip
        self.lines: list[str] = []
        self.stderr = ""
        self._q: queue.Queue[str | None] = queue.Queue()
        self._err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # stderr is drained too, so a chatty client never blocks on a full pipe.
        self._err_reader = threading.Thread(target=self._read_err, daemon=True)
        self._err_reader.start()

    @classmethod
    def etcdctl(cls, ctl: Etcdctl, *args: str) -> Background:
        """``etcdctl --endpoints ... ARGS`` in the background."""
        auth = ["--user", ctl.user] if ctl.user else []
        return cls([ctl.path, "--endpoints", ",".join(ctl.endpoints), *auth, *args])

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line)

    def wait(
        self, done: Callable[[list[str]], bool], timeout: float, what: str, *, final: bool = True
    ) -> list[str]:
        """Read lines until ``done(lines so far)`` (returned), the output
        ends, or ``timeout`` seconds pass (AssertionError naming ``what``).
        The error stops etcdctl to report its stderr, unless ``final`` is
        false and it is still running (a caller that tries again)."""
        deadline = time.monotonic() + timeout
        while not done(self.lines):
            left = deadline - time.monotonic()
            try:
                line = self._q.get(timeout=max(left, 0.0)) if left > 0 else None
            except queue.Empty:
                line = None
            if line is None and not final and self.proc.poll() is None:
                raise AssertionError(f"no {what} within {timeout}s (still running)")
            if line is None:
                raise AssertionError(
                    f"no {what} within {timeout}s; output so far {self.lines!r}, "
                    f"exit {self.proc.poll()}, stderr {self.stop_and_stderr()!r}"
                )
            self.lines.append(line)
        return self.lines

    def drain(self) -> list[str]:
        """Take every line already written, without waiting."""
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                return self.lines
            if line is None:
                self._q.put(None)  # the end stays for wait()
                return self.lines
            self.lines.append(line)

    def exited(self, timeout: float) -> int:
        """Its exit status, waiting up to ``timeout`` seconds for it."""
        return self.proc.wait(timeout=timeout)

    def stop_and_stderr(self) -> str:
        """Stop it (by PID) and return what it wrote to stderr."""
        self.stop()
        return self.stderr

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._err_reader.join(timeout=5)
        self.stderr = "".join(self._err)

    def __enter__(self) -> Background:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        self._reader.join(timeout=5)
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


class PatientEtcdctl(Etcdctl):
    """etcdctl with a 15 s command timeout instead of its 5 s: on two
    shared cores under a parallel test run a linearizable read can take
    longer than 5 s to be answered, and these tests check answers, not
    speed."""

    def run(
        self, *args: str, timeout: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return super().run("--command-timeout", "15s", *args, timeout=timeout, input=input)
