"""Real ``liferaft serve`` processes under a fault harness.

Each node is a child process (``python -m liferaft.cli serve``), on
127.0.0.1 with free ports, or, with a :class:`~liferaft.chaos.netns.NetLab`,
inside its own network namespace on a private address (so links can be cut).
The processes are a :class:`liferaft.harness.serve.ServeCluster`, the one
process harness: it knows every child by PID and stops only those: SIGCONT
(a stopped node could not exit), SIGTERM, then SIGKILL after a grace
period, on every exit path.

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
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from liferaft.harness.ports import free_ports
from liferaft.harness.procs import rss_bytes, tail
from liferaft.harness.serve import ServeCluster, ServeNode
from liferaft.transport.secret import ensure_secret_file, read_secret_file

from .api import Api, HttpApi

__all__ = ["NODE_FLAGS", "ChaosCluster", "ChaosError", "Member", "free_ports", "rss_bytes"]

NODE_FLAGS = [
    "--election-timeout",
    "500",
    "--heartbeat-interval",
    "50",
    "--request-timeout",
    "2",
    "--snapshot-entries",
    "300",
    # Idle watchers learn how far they are covered every second, not every
    # 10 s: a soak's watchers prove they saw the final revision that soon.
    "--watch-progress-interval",
    "1",
    "--log-level",
    "WARNING",
]


class ChaosError(Exception):
    pass


@dataclass
class Member(ServeNode):
    """A node of the fault harness (a :class:`~liferaft.harness.serve.ServeNode`)."""

    @property
    def stopped(self) -> bool:
        """SIGSTOPped by the nemesis (the harness's word for paused)."""
        return self.paused


class _Nodes(ServeCluster):
    node_class = Member


class ChaosCluster:
    """N nodes; ``lab`` (a NetLab) puts each in its own network namespace.

    The processes are a :class:`~liferaft.harness.serve.ServeCluster`
    (:attr:`procs`); this class adds the fault bookkeeping (expected and
    unexpected exits, SIGSTOP/SIGCONT by the nemesis) and async HTTP."""

    cluster_id = "liferaft"

    def __init__(
        self,
        ids: list[str],
        base: Path,
        lab: Any = None,
        rng: random.Random | None = None,
        flags: list[str] | None = None,
        grpc: bool = False,
        env: dict[str, str] | None = None,
    ):
        self.base = base
        self.lab = lab
        self.rng = rng or random.Random()
        # (node id, exit code, last lines of its log) of every unexpected exit.
        self.exits: list[tuple[str, int, str]] = []
        base.mkdir(parents=True, exist_ok=True)
        # One secret per cluster, made by the transport's own helper (as
        # `cluster up` does); the harness keeps it for its operator faults.
        self.secret_file = ensure_secret_file(base)
        self.secret = read_secret_file(self.secret_file)
        self.auth_flags = ["--peer-secret-file", str(self.secret_file)]
        self.procs = _Nodes(
            base,
            flags=[*NODE_FLAGS, *self.auth_flags, *(flags or [])],
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        per = 3 if grpc else 2
        ports = free_ports(per * len(ids)) if lab is None else []
        for i, nid in enumerate(ids):
            if lab is None:
                peer, client = f"127.0.0.1:{ports[per * i]}", f"127.0.0.1:{ports[per * i + 1]}"
                rpc = f"127.0.0.1:{ports[per * i + 2]}" if grpc else ""
                self.procs.add(nid, peer=peer, client=client, grpc=rpc)
            else:
                ip = lab.addr(nid)
                self.procs.add(
                    nid, peer=f"{ip}:7000", client=f"{ip}:8000", prefix=lab.exec_prefix(nid),
                    grpc=f"{ip}:9000" if grpc else "",
                )  # fmt: skip
        self.members: dict[str, Member] = self.procs.nodes  # type: ignore[assignment]
        self.http: aiohttp.ClientSession | None = None
        #: What the clients speak (``--api``): liferaft's /v1 unless the soak
        #: puts etcd's gRPC API here (every node then serves it: ``grpc``).
        self.api: Api = HttpApi(self)
        self.events: list[tuple[float, str]] = []  # what the harness did, for the log

    # -- processes ------------------------------------------------------------------------

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
            new.append((m.id, code, tail(m.log, 5)))
        self.exits.extend(new)
        return new

    def expect_exit(self, nid: str) -> None:
        """The harness is about to end ``nid`` (or make it leave): not a crash."""
        self.members[nid].expected_exit = True

    def start_all(self) -> None:
        self.procs.start_all()

    def restart(self, nid: str) -> None:
        """Start a dead node again on its data (it rejoins on its own)."""
        if self.members[nid].alive:
            return
        self.check_exits()
        self.procs.start(nid, mode=[])

    def start_joining(self, nid: str, via: str) -> None:
        """Start ``nid`` on an empty data dir, joining through member ``via``."""
        self.procs.start(nid, mode=["--join", f"http://{self.members[via].client}"])

    def wipe(self, nid: str) -> None:
        m = self.members[nid]
        if m.alive:
            raise ChaosError(f"wipe of a running node {nid}")
        shutil.rmtree(m.data, ignore_errors=True)

    def kill(self, nid: str) -> None:
        self.check_exits()  # an exit before this kill is still a crash
        self.procs.kill(nid)

    def stop(self, nid: str) -> None:
        """SIGSTOP (the node freezes; ``cont`` wakes it)."""
        self.procs.pause(nid)

    def cont(self, nid: str) -> None:
        self.procs.resume(nid)

    def shutdown(self, grace: float = 5.0) -> None:
        """Stop every process this harness started (only those, by PID)."""
        self.check_exits()
        self.procs.close(grace)

    def rss(self) -> dict[str, tuple[int, float]]:
        """Each running node's (RSS in bytes, seconds since it started)."""
        now = time.monotonic()
        out = {}
        for m in self.members.values():
            if m.alive:
                r = rss_bytes(m.pid)
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
        await self.api.close()
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

    async def caught_up(self, timeout: float) -> bool:
        """Wait until every member has applied all the leader knew to be
        committed when the wait began (at most ``timeout`` seconds): the
        quiet period after healing.  False if one had not by then."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        target = None
        while loop.time() < end:
            sts = await asyncio.gather(*(self.status(n) for n in self.members))
            if target is None:
                target = max((s["commit_index"] for s in sts if s and s["role"] == "leader"),
                             default=None)  # fmt: skip
            if target is not None and all(s and s["applied_index"] >= target for s in sts):
                return True
            await asyncio.sleep(0.1)
        return False

    async def voters(self) -> set[str]:
        for nid in self.rng.sample(list(self.members), len(self.members)):
            st = await self.status(nid)
            if st is not None:
                return {m["id"] for m in st["members"] if m["voter"]}
        return set()

