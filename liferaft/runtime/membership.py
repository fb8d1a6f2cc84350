"""Membership changes of a running node (part of :class:`~liferaft.runtime.Node`).

Every change goes through the core's rules: one change at a time, none before
the leader has committed an entry of its term, joint consensus for anything
that touches more than one voter (thesis §4.3), and learners promoted only
once caught up.  On top of that the runtime never adds an empty voter: a new
member is a learner first.  Member addresses travel in the conf change's
context, so every node (and every snapshot) knows where its peers are.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from liferaft.core import (
    ChangeType,
    ConfChange,
    ConfChangeError,
    ConfChangeSingle,
    NotLeaderError,
    RawNode,
    Role,
)
from liferaft.transport.base import Transport

from ._futures import _fail, _resolve
from .clock import Clock
from .errors import MembershipError, NodeError, NotLeader, Timeout

if TYPE_CHECKING:
    from .node import NodeConfig, NodeStatus


class MembershipMixin:
    """add_learner / promote / remove / add_voter / replace / join."""

    if TYPE_CHECKING:  # provided by Node
        id: str
        config: NodeConfig
        clock: Clock
        rn: RawNode | None
        members: dict[str, dict[str, Any]]
        transport: Transport
        _ops: deque[Callable[[], None]]
        _wake: asyncio.Event
        _bg: set[asyncio.Task[Any]]

        def _check_running(self) -> None: ...
        def status(self) -> NodeStatus: ...
        async def _submit(
            self, start: Callable[[], Awaitable[tuple[int, int]]], t: float
        ) -> Any: ...
        async def _route(
            self,
            local: Callable[[], Awaitable[tuple[int, int]]],
            req: list[Any],
            t: float,
        ) -> tuple[int, int]: ...

    async def _conf_local(self, cc: ConfChange) -> tuple[int, int]:
        self._check_running()
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

        def start() -> None:
            rn = self.rn
            assert rn is not None
            try:
                idx = rn.propose_conf_change(cc)
            except NotLeaderError as exc:
                _fail(fut, NotLeader(str(exc), rn.leader))
                return
            except ConfChangeError as exc:
                _fail(fut, MembershipError(str(exc)))
                return
            _resolve(fut, (idx, rn.term))

        self._ops.append(start)
        self._wake.set()
        return await fut

    async def change_membership(self, cc: ConfChange, timeout: float | None = None) -> None:
        """Propose a raw membership change and wait until it is applied here."""
        t = self.config.commit_timeout if timeout is None else timeout
        req = ["conf", cc.encode()]
        await self._submit(lambda: self._route(lambda: self._conf_local(cc), req, t), t)

    async def add_learner(self, node_id: str, addr: str, **info: Any) -> None:
        """Add a non-voting member that receives the log (etcd's learner)."""
        ctx = json.dumps({node_id: {"addr": addr, **info}}).encode()
        await self.change_membership(
            ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, node_id),), context=ctx)
        )

    async def promote(self, node_id: str) -> None:
        """Make a caught-up learner a voter (refused while it lags)."""
        await self.change_membership(ConfChange((ConfChangeSingle(ChangeType.ADD_VOTER, node_id),)))

    async def remove(self, node_id: str) -> None:
        """Remove a member (a removed leader steps down once it is applied)."""
        await self.change_membership(
            ConfChange((ConfChangeSingle(ChangeType.REMOVE_NODE, node_id),))
        )

    async def add_voter(
        self, node_id: str, addr: str, catch_up_timeout: float = 30.0, **info: Any
    ) -> None:
        """Add a voter safely: as a learner first, promoted once caught up."""
        if node_id not in self.members:
            await self.add_learner(node_id, addr, **info)
        await self._promote_when_caught_up(node_id, catch_up_timeout)

    async def replace(
        self, old: str, new: str, addr: str, catch_up_timeout: float = 30.0, **info: Any
    ) -> None:
        """Swap ``old`` for ``new`` in one joint-consensus step (thesis §4.3),
        after ``new`` has caught up as a learner."""
        if new not in self.members:
            await self.add_learner(new, addr, **info)
        await self._wait_caught_up(new, catch_up_timeout)
        await self.change_membership(
            ConfChange(
                (
                    ConfChangeSingle(ChangeType.ADD_VOTER, new),
                    ConfChangeSingle(ChangeType.REMOVE_NODE, old),
                )
            )
        )

    async def _wait_caught_up(self, node_id: str, t: float) -> None:
        deadline = self.clock.monotonic() + t
        while True:
            st = self.status()
            p = st.peers.get(node_id)
            if st.role == "leader" and p is not None and p.match >= st.commit_index:
                return
            if self.clock.monotonic() >= deadline:
                raise Timeout(f"{node_id} did not catch up")
            await self.clock.sleep(self.config.tick_interval * 2)

    async def _promote_when_caught_up(self, node_id: str, t: float) -> None:
        deadline = self.clock.monotonic() + t
        while True:
            try:
                await self.promote(node_id)
                return
            except MembershipError:
                if self.clock.monotonic() >= deadline:
                    raise
                await self.clock.sleep(self.config.tick_interval * 2)

    async def join(
        self, contact: str, addr: str, voter: bool = True, timeout: float = 30.0
    ) -> None:
        """Ask a running cluster, through any member's address, to add this
        (empty) node; returns once the cluster has accepted it."""
        self._check_running()
        req = ["join", self.id, addr, voter]
        raw = await self.transport.call_address(contact, msgspec.msgpack.encode(req), timeout)
        rep = msgspec.msgpack.decode(raw)
        if rep[0] != "ok":
            raise MembershipError(f"join refused: {rep[1] if len(rep) > 1 else rep}")
        self.members = {str(k): dict(v) for k, v in rep[1].items()}
        self._update_peers()

    async def _handle_join(self, req: list[Any]) -> bytes:
        _, node_id, addr, voter = req
        rn = self.rn
        assert rn is not None
        if rn.role is not Role.LEADER:
            if rn.leader is None:
                return msgspec.msgpack.encode(["error", "no leader"])
            raw: bytes = await self.transport.call(
                rn.leader, msgspec.msgpack.encode(req), self.config.commit_timeout * 2
            )
            return raw
        try:
            if node_id not in self.members:
                await self.add_learner(str(node_id), str(addr))
        except NodeError as exc:
            return msgspec.msgpack.encode(["error", str(exc)])
        if voter:
            task = asyncio.create_task(self._promote_when_caught_up(str(node_id), 60.0))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
        return msgspec.msgpack.encode(["ok", self.members])

    def _update_peers(self) -> None:
        self.transport.set_peers(
            {nid: str(m["addr"]) for nid, m in self.members.items() if m.get("addr")}
        )
