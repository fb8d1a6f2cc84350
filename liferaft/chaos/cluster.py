"""Real ``liferaft serve`` processes under a fault harness.

Each node is a child process (``python -m liferaft.cli serve``), on
127.0.0.1 with free ports, or, with a :class:`~liferaft.chaos.netns.NetLab`,
inside its own network namespace on a private address (so links can be cut).
The harness knows every child by PID and stops only those: SIGCONT (a
stopped node could not exit), SIGTERM, then SIGKILL after a grace period,
on every exit path.

Peer authentication: the cluster writes a fresh peer secret (mode 0600) in
its directory and hands it to every node with ``--peer-secret-file``, as
``cluster up`` does, when this version of ``liferaft serve`` has the flag
(nodes in network namespaces have non-loopback peer addresses, which serve
refuses to bind without a secret).

Exits: the harness kills nodes on purpose (the nemesis); any other exit of a
node process is recorded in :attr:`ChaosCluster.exits` with its code and the
end of its log, and fails a soak.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from liferaft.kv.serve import serve_argv
from liferaft.transport.secret import ensure_secret_file, read_secret_file

NODE_FLAGS = [
    "--election-timeout",
    "500",
    "--heartbeat-interval",
    "50",
    "--request-timeout",
    "2",
    "--snapshot-entries",
    "300",
    "--log-level",
    "WARNING",
]


class ChaosError(Exception):
    pass


@dataclass
class Member:
    id: str
    peer: str
    client: str
    data: Path
    log: Path
    prefix: list[str] = field(default_factory=list)  # e.g. ip netns exec NS
    proc: subprocess.Popen[bytes] | None = None
    logf: IO[bytes] | None = None
    stopped: bool = False  # SIGSTOPped
    # The harness ended (or expects the end of) this process: not a crash.
    expected_exit: bool = False
    started: float = 0.0  # time.monotonic() of the last spawn

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the OS hands out on 127.0.0.1 (held together, then
    released for child processes to bind)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


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


class ChaosCluster:
    """N nodes; ``lab`` (a NetLab) puts each in its own network namespace."""

    cluster_id = "liferaft"

    def __init__(
        self, ids: list[str], base: Path, lab: Any = None, rng: random.Random | None = None
    ):
        self.base = base
        self.lab = lab
        self.rng = rng or random.Random()
        self.members: dict[str, Member] = {}
        # (node id, exit code, last lines of its log) of every unexpected exit.
        self.exits: list[tuple[str, int, str]] = []
        base.mkdir(parents=True, exist_ok=True)
        # One secret per cluster, made by the transport's own helper (as
        # `cluster up` does); the harness keeps it for its operator faults.
        self.secret_file = ensure_secret_file(base)
        self.secret = read_secret_file(self.secret_file)
        self.auth_flags = ["--peer-secret-file", str(self.secret_file)]
        ports = free_ports(2 * len(ids)) if lab is None else []
        for i, nid in enumerate(ids):
            if lab is None:
                peer, client, prefix = (
                    f"127.0.0.1:{ports[2 * i]}",
                    f"127.0.0.1:{ports[2 * i + 1]}",
                    [],
                )
            else:
                ip = lab.addr(nid)
                peer, client, prefix = f"{ip}:7000", f"{ip}:8000", lab.exec_prefix(nid)
            self.members[nid] = Member(nid, peer, client, base / nid, base / f"{nid}.log", prefix)
        self.http: aiohttp.ClientSession | None = None
        self.events: list[tuple[float, str]] = []  # what the harness did, for the log

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, m: Member, args: list[str]) -> None:
        m.data.mkdir(parents=True, exist_ok=True)
        if m.logf is None:
            m.logf = open(m.log, "ab")  # noqa: SIM115 (closed in shutdown)
        flags = [*NODE_FLAGS, *self.auth_flags]
        cmd = [*m.prefix, *serve_argv(m.id, m.data, m.peer, m.client, *flags, *args)]
        m.proc = subprocess.Popen(
            cmd,
            stdout=m.logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        m.stopped = False
        m.expected_exit = False
        m.started = time.monotonic()

    def check_exits(self) -> list[tuple[str, int, str]]:
        """Record (and return) node processes that exited while nobody asked
        them to; each exit is recorded once."""
        new = []
        for m in self.members.values():
            if m.proc is None or m.expected_exit:
                continue
            code = m.proc.poll()
            if code is None:
                continue
            m.expected_exit = True  # recorded; a restart clears it
            new.append((m.id, code, _tail(m.log)))
        self.exits.extend(new)
        return new

    def expect_exit(self, nid: str) -> None:
        """The harness is about to end ``nid`` (or make it leave): not a crash."""
        self.members[nid].expected_exit = True

    def start_all(self) -> None:
        spec = ",".join(f"{m.id}={m.peer}" for m in self.members.values())
        for m in self.members.values():
            self._spawn(m, ["--initial-cluster", spec])

    def restart(self, nid: str) -> None:
        """Start a dead node again on its data (it rejoins on its own)."""
        m = self.members[nid]
        if m.alive:
            return
        self.check_exits()
        self._spawn(m, [])

    def start_joining(self, nid: str, via: str) -> None:
        """Start ``nid`` on an empty data dir, joining through member ``via``."""
        m = self.members[nid]
        self._spawn(m, ["--join", f"http://{self.members[via].client}"])

    def wipe(self, nid: str) -> None:
        m = self.members[nid]
        if m.alive:
            raise ChaosError(f"wipe of a running node {nid}")
        shutil.rmtree(m.data, ignore_errors=True)

    def kill(self, nid: str) -> None:
        m = self.members[nid]
        self.check_exits()  # an exit before this kill is still a crash
        m.expected_exit = True
        if m.alive and m.proc is not None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait()
        m.stopped = False

    def stop(self, nid: str) -> None:
        m = self.members[nid]
        if m.alive and m.proc is not None:
            m.proc.send_signal(signal.SIGSTOP)
            m.stopped = True

    def cont(self, nid: str) -> None:
        m = self.members[nid]
        if m.alive and m.proc is not None and m.stopped:
            m.proc.send_signal(signal.SIGCONT)
        m.stopped = False

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop every process this harness started (only those, by PID)."""
        self.check_exits()
        for m in self.members.values():
            m.expected_exit = True
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGCONT)
                    m.proc.send_signal(signal.SIGTERM)
        for m in self.members.values():
            if m.proc is None:
                continue
            try:
                m.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.kill()
                m.proc.wait()
            if m.logf is not None:
                m.logf.close()
                m.logf = None

    def rss(self) -> dict[str, tuple[int, float]]:
        """Each running node's (RSS in bytes, seconds since it started)."""
        now = time.monotonic()
        out = {}
        for m in self.members.values():
            if m.alive and m.proc is not None:
                r = rss_bytes(m.proc.pid)
                if r is not None:
                    out[m.id] = (r, now - m.started)
        return out

    # -- HTTP -----------------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        if self.http is None:
            self.http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False)
            )
        return self.http

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()
            self.http = None

    async def call(
        self, nid: str, method: str, path: str, body: Any = None, timeout: float = 3.0
    ) -> tuple[int, Any]:
        """One request; (status, JSON body), or (0, error text) if no answer."""
        url = f"http://{self.members[nid].client}{path}"
        try:
            async with self.session().request(
                method, url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as r:
                try:
                    data = await r.json(content_type=None)
                except ValueError:
                    data = None
                return r.status, data
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"

    async def status(self, nid: str) -> dict[str, Any] | None:
        st, body = await self.call(nid, "GET", "/v1/status", timeout=1.0)
        return body if st == 200 and isinstance(body, dict) else None

    async def leader(self, timeout: float = 20.0) -> str:
        """The node a majority of reachable nodes agree leads (waits)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            sts = await asyncio.gather(*(self.status(n) for n in self.members))
            leaders = [s["id"] for s in sts if s and s["role"] == "leader"]
            if len(leaders) == 1:
                return str(leaders[0])
            await asyncio.sleep(0.1)
        raise ChaosError(f"no leader within {timeout:g} s")

    async def voters(self) -> set[str]:
        for nid in self.rng.sample(list(self.members), len(self.members)):
            st = await self.status(nid)
            if st is not None:
                return {m["id"] for m in st["members"] if m["voter"]}
        return set()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
