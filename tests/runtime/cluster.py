"""A cluster of runtime Nodes in one process, for tests.

Memory mode: MemoryNetwork + MemStore + ManualClock, so tests never sleep.
TCP mode: TcpTransport on 127.0.0.1 + DiskStorage in a temp dir + the real
clock (bounded waits)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liferaft.harness.ports import free_ports
from liferaft.runtime import ManualClock, Node, NodeConfig, ReplicatedCounter
from liferaft.runtime.store import MemStore
from liferaft.transport import MemoryNetwork, TcpTransport


def fast_config(nid: str, **kw: Any) -> NodeConfig:
    base: dict[str, Any] = dict(
        id=nid, tick_interval=0.01, election_ticks=10, heartbeat_ticks=1, seed=hash(nid) & 0xFFFF
    )
    base.update(kw)
    return NodeConfig(**base)


class MemCluster:
    def __init__(self, n: int = 3, sm: Callable[[], Any] = ReplicatedCounter, **cfg: Any) -> None:
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.clock = ManualClock()
        self.net = MemoryNetwork(seed=1)
        self.stores = {i: MemStore() for i in self.ids}
        self.sm_factory = sm
        self.cfg = cfg
        self.nodes: dict[str, Node] = {}
        self.sms: dict[str, Any] = {}

    def make(self, nid: str, initial: bool = True) -> Node:
        sm = self.sm_factory()
        node = Node(
            fast_config(nid, **self.cfg),
            sm,
            self.net.transport(nid),
            store=self.stores.setdefault(nid, MemStore()),
            initial_members={i: i for i in self.ids} if initial else None,
            clock=self.clock,
        )
        self.nodes[nid] = node
        self.sms[nid] = sm
        return node

    async def start(self) -> None:
        for nid in self.ids:
            await self.make(nid).start()

    async def run(self, seconds: float) -> None:
        await self.clock.advance(seconds, step=0.01)

    async def until(self, cond: Callable[[], bool], seconds: float = 10.0) -> None:
        t = 0.0
        while not cond():
            if t >= seconds:
                raise AssertionError(f"condition not met in {seconds} simulated seconds")
            await self.clock.advance(0.01)
            t += 0.01

    async def leader(self, seconds: float = 10.0) -> Node:
        await self.until(lambda: self._leader() is not None, seconds)
        ld = self._leader()
        assert ld is not None
        return ld

    def _leader(self) -> Node | None:
        ls = [n for n in self.nodes.values() if not n.loop.stopping and n.is_leader]
        return ls[0] if len(ls) == 1 else None

    async def drive(self, coro: Any, seconds: float = 10.0) -> Any:
        """Run ``coro`` while advancing the manual clock until it finishes."""
        task = asyncio.ensure_future(coro)
        t = 0.0
        while not task.done():
            if t >= seconds:
                task.cancel()
                raise AssertionError(f"operation did not finish in {seconds} simulated seconds")
            await self.clock.advance(0.01)
            t += 0.01
        return task.result()

    async def stop(self) -> None:
        for n in list(self.nodes.values()):
            await n.stop()


class TcpCluster:
    def __init__(
        self,
        tmp: Path,
        n: int = 3,
        sm: Callable[[], Any] = ReplicatedCounter,
        ssl_pair: tuple[Any, Any] | None = None,
        sm_at: Callable[[Path], Any] | None = None,
        **cfg: Any,
    ) -> None:
        """``sm_at``, if given, builds each node's state machine in a
        directory of that node's own (a durable one; closed at stop)."""
        self.ssl_pair = ssl_pair
        self.sm_at = sm_at
        self.tmp = tmp
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.cfg = cfg
        self.sm_factory = sm
        self.nodes: dict[str, Node] = {}
        self.sms: dict[str, Any] = {}
        self.addrs: dict[str, str] = {}

    async def _transport(self, nid: str) -> TcpTransport:
        srv, cli = self.ssl_pair or (None, None)
        return TcpTransport(
            nid, "test-cluster", self.addrs.get(nid, "127.0.0.1:0"), ssl_server=srv, ssl_client=cli
        )

    async def reserve_ports(self) -> None:
        # Held together while chosen (free_ports): a port bound and closed
        # one node at a time could come back for the next node, and two
        # nodes then share one address (seen once in make test: n1 dialed
        # n2's address and reached itself, and n2 could not bind).
        for nid, port in zip(self.ids, free_ports(len(self.ids)), strict=True):
            self.addrs[nid] = f"127.0.0.1:{port}"

    async def make(self, nid: str, initial: bool = True) -> Node:
        if self.sm_at is not None and nid in self.sms:
            self.sms[nid].close()  # a restart: LMDB opens an environment once per process
        sm = self.sm_at(self.tmp / nid / "sm") if self.sm_at else self.sm_factory()
        node = Node(
            NodeConfig(
                id=nid, tick_interval=0.02, election_ticks=15, heartbeat_ticks=2, **self.cfg
            ),
            sm,
            await self._transport(nid),
            data_dir=self.tmp / nid,
            initial_members={i: self.addrs[i] for i in self.ids} if initial else None,
        )
        self.nodes[nid] = node
        self.sms[nid] = sm
        return node

    async def start(self) -> None:
        await self.reserve_ports()
        for nid in self.ids:
            await (await self.make(nid)).start()

    async def leader(self, seconds: float = 10.0) -> Node:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            ls = [n for n in self.nodes.values() if not n.loop.stopping and n.is_leader]
            if len(ls) == 1:
                return ls[0]
            await asyncio.sleep(0.02)
        raise AssertionError("no leader")

    async def stop(self) -> None:
        for n in list(self.nodes.values()):
            await n.stop()
        if self.sm_at is not None:
            for sm in self.sms.values():
                sm.close()
