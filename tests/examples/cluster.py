"""Three processes of one example program, started and killed by PID.

The examples print one JSON object a line (examples/peer_node.py, ``emit``);
:class:`ExampleCluster` reads those lines back from each node's log, so a
test can wait for what a node did, find the Raft leader and kill -9 it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from liferaft.harness import Child, ProcessGroup, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
IDS = ("n1", "n2", "n3")
T = TypeVar("T")


class ExampleCluster:
    """``examples/<script>`` as nodes n1..n3 on 127.0.0.1; logs under ``tmp``."""

    def __init__(self, group: ProcessGroup, script: str, tmp: Path) -> None:
        self.group = group
        self.script = EXAMPLES / script
        self.tmp = tmp
        self.peers = ",".join(f"{nid}=127.0.0.1:{free_port()}" for nid in IDS)
        self.children: dict[str, Child] = {}

    def start(self, nid: str, *args: str) -> Child:
        cmd = [sys.executable, str(self.script), "--id", nid, "--peers", self.peers,
               "--data-dir", str(self.tmp / f"data-{nid}"), "--election-timeout", "0.5", *args]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        child = self.group.start(nid, cmd, log=self.tmp / f"{nid}.log", env=env, cwd=self.tmp)
        self.children[nid] = child
        return child

    def events(self, nid: str, kind: str | None = None) -> list[dict[str, Any]]:
        """The JSON lines ``nid`` printed so far (of one ``kind`` if given)."""
        out = []
        path = self.tmp / f"{nid}.log"
        for line in path.read_text(errors="replace").splitlines() if path.exists() else ():
            if line.startswith("{"):
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue  # a line still being written
                if kind is None or ev.get("event") == kind:
                    out.append(ev)
        return out

    def alive(self) -> list[str]:
        return [nid for nid, c in self.children.items() if c.alive()]

    def leader(self) -> str | None:
        """The live node whose latest role is leader, in the highest such term."""
        best: tuple[int, str] | None = None
        for nid in self.alive():
            roles = self.events(nid, "role")
            if roles and roles[-1]["role"] == "leader":
                best = max(best or (0, ""), (roles[-1]["term"], nid))
        return best[1] if best else None

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float = 15.0) -> T:
        """Poll ``probe`` until it returns something other than None (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for nid, child in self.children.items():
                if not child.alive() and child.returncode not in (-9, 0):
                    raise AssertionError(f"{nid} exited {child.returncode}:\n{child.log_tail()}")
            got = probe()
            if got is not None:
                return got
            time.sleep(0.05)
        logs = "\n".join(f"--- {nid}\n{c.log_tail()}" for nid, c in self.children.items())
        raise AssertionError(f"timed out waiting for {what}\n{logs}")

    def kill(self, nid: str) -> None:
        """kill -9 ``nid``."""
        assert self.group.kill(self.children[nid]) == -9

    def pause(self, nid: str, paused: bool = True) -> None:
        """SIGSTOP ``nid`` (a process that hangs, or a machine cut off), or SIGCONT it."""
        assert self.group.signal(self.children[nid], signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self, nid: str) -> None:
        """SIGTERM ``nid`` and wait for it to exit (the examples then print their state)."""
        self.group.terminate([self.children[nid]], grace=15.0)
        assert self.children[nid].returncode == 0, self.children[nid].log_tail()


@contextmanager
def example_cluster(script: str, tmp: Path) -> Iterator[ExampleCluster]:
    """An :class:`ExampleCluster` whose processes all end when the block does:
    by kill -9, since a node left without a quorum would spend its read
    timeout on the state it prints at SIGTERM (:meth:`ExampleCluster.stop`
    is the graceful way)."""
    with ProcessGroup() as group:
        try:
            yield ExampleCluster(group, script, tmp)
        finally:
            group.kill_all_now()
