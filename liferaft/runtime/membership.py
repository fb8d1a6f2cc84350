"""Membership changes of a running node (part of :class:`~liferaft.runtime.Node`).

Every change goes through the core's rules: one change at a time, none before
the leader has committed an entry of its term, joint consensus for anything
that touches more than one voter (thesis §4.3), and learners promoted only
once caught up.  On top of that the runtime never adds an empty voter: a new
member is a learner first.  Member addresses travel in the conf change's
context, so every node (and every snapshot) knows where its peers are.

Member ids and addresses are checked before anything is proposed
(:func:`check_member`): the address by the transport's own rules.  Applying
a committed change never raises, whatever its context holds (docs/architecture.md,
"Trust model"): an address the transport cannot use is left out of the peer
table, logged, and reported in :attr:`NodeStatus.bad_peer_addresses`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from liferaft.codec import MAX_NODE_ID
from liferaft.core import (
    ChangeType,
    ConfChange,
    ConfChangeError,
    ConfChangeSingle,
    ConfState,
    NotLeaderError,
    RawNode,
    Role,
)
from liferaft.transport.base import Transport

from . import address_book, peer_rpc
from ._futures import _fail, _resolve
from .clock import Clock
from .errors import BadMember, MembershipError, NodeError, NotLeader, Timeout

log = logging.getLogger("liferaft.runtime")

#: Longest member id: the codec's limit on node ids.
MAX_ID = MAX_NODE_ID
#: Characters that would make an id ambiguous where ids are written as text
#: (``--initial-cluster n1=host:port,n2=...``, URLs, logs).
_ID_FORBIDDEN = frozenset(",=/")


def check_member_id(node_id: object) -> str:
    """``node_id`` if it can name a member; else :class:`BadMember`."""
    if not isinstance(node_id, str) or not node_id:
        raise BadMember(f"a member id must be a non-empty string, not {node_id!r}")
    if len(node_id) > MAX_ID:
        raise BadMember(f"member id longer than {MAX_ID} characters")
    bad = [ch for ch in node_id if ch.isspace() or not ch.isprintable() or ch in _ID_FORBIDDEN]
    if bad:
        raise BadMember(f"member id {node_id!r} contains {bad[0]!r}")
    if node_id in (".", ".."):
        # /v1/members/.. is /v1/: such a member could never be removed by URL.
        raise BadMember(f"member id {node_id!r} names a path, not a member")
    return node_id


def check_member(
    transport: Transport, node_id: object, addr: object, info: dict[str, Any] | None = None
) -> None:
    """Refuse (:class:`BadMember`) a member the cluster could not use: a bad
    id, a peer address ``transport`` cannot dial, a ``client_addr`` that is not
    "host:port", or extra info that does not encode as JSON."""
    check_member_id(node_id)
    if not isinstance(addr, str):
        raise BadMember(f"peer address of {node_id} must be a string, not {addr!r}")
    try:
        transport.check_address(addr)
    except ValueError as exc:
        raise BadMember(f"peer address of {node_id}: {exc}") from None
    address_book.check_info(str(node_id), info or {})


def check_conf_change(transport: Transport, cc: ConfChange) -> None:
    """:func:`check_member` for every node a raw change adds with a context."""
    try:
        info = address_book.decode_context(cc.context, strict=True)
    except address_book.ContextError as exc:
        raise BadMember(str(exc)) from None
    for c in cc.changes:
        if c.type is ChangeType.REMOVE_NODE:
            # Removing is the way out of a bad member, whatever its id.
            continue
        check_member_id(c.node_id)
        entry = info.get(c.node_id)
        if entry is None:
            continue
        rest = {k: v for k, v in entry.items() if k != "addr"}
        check_member(transport, c.node_id, entry.get("addr"), rest)


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
        bad_peer_addresses: dict[str, str]
        transport: Transport
        _ops: deque[Callable[[], None]]
        _unproposed: set[asyncio.Future[Any]]
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
            req: peer_rpc.Request,
            t: float,
        ) -> tuple[int, int]: ...

    async def _conf_local(
        self, cc: ConfChange | Callable[[ConfState], ConfChange]
    ) -> tuple[int, int]:
        """Propose ``cc`` here, the leader; a callable builds the change from
        the configuration in force when it is proposed (address_book.info_change)."""
        self._check_running()
        for c in cc.changes if isinstance(cc, ConfChange) else ():
            # Unlike a bad address, an id the codec cannot carry is not
            # survivable: every later InstallSnapshot holds it in its conf
            # state and no follower could decode one.  Refused here, where
            # every change enters the log (a check=False change, a member's
            # conf call), not only where an operator's change starts.
            if c.type is not ChangeType.REMOVE_NODE and len(c.node_id) > MAX_ID:
                raise MembershipError(f"member id longer than {MAX_ID} characters")
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()

        def start() -> None:
            rn = self.rn
            assert rn is not None
            try:
                change = cc if isinstance(cc, ConfChange) else cc(rn.conf_state())
                idx = rn.propose_conf_change(change)
            except MembershipError as exc:
                _fail(fut, exc)
                return
            except NotLeaderError as exc:
                _fail(fut, NotLeader(str(exc), rn.leader))
                return
            except ConfChangeError as exc:
                _fail(fut, MembershipError(str(exc)))
                return
            _resolve(fut, (idx, rn.term))

        # Until start() runs nothing is proposed; if the node stops first,
        # stop() answers Stopped (true) rather than leaving it to a timeout.
        self._unproposed.add(fut)
        fut.add_done_callback(self._unproposed.discard)
        self._ops.append(start)
        self._wake.set()
        return await fut

    async def change_membership(
        self, cc: ConfChange, timeout: float | None = None, *, check: bool = True
    ) -> None:
        """Propose a raw membership change and wait until it is applied here.

        The ids, and the addresses in ``cc.context`` (``{id: {"addr": ...}}``),
        are checked first (:class:`BadMember`).  ``check=False`` proposes the
        change as given: for tests and fault injection that show a committed
        bad change cannot hurt a node, never for operators."""
        if check:
            check_conf_change(self.transport, cc)
        t = self.config.commit_timeout if timeout is None else timeout
        req = peer_rpc.ChangeConf(cc.encode())
        await self._submit(lambda: self._route(lambda: self._conf_local(cc), req, t), t)

    async def add_learner(self, node_id: str, addr: str, **info: Any) -> None:
        """Add a non-voting member that receives the log (etcd's learner)."""
        check_member(self.transport, node_id, addr, info)
        ctx = address_book.encode_context({node_id: {address_book.PEER_ADDR: addr, **info}})
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
        check_member(self.transport, node_id, addr, info)
        if node_id not in self.members:
            await self.add_learner(node_id, addr, **info)
        await self._promote_when_caught_up(node_id, catch_up_timeout)

    async def replace(
        self, old: str, new: str, addr: str, catch_up_timeout: float = 30.0, **info: Any
    ) -> None:
        """Swap ``old`` for ``new`` in one joint-consensus step (thesis §4.3),
        after ``new`` has caught up as a learner."""
        check_member(self.transport, new, addr, info)
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

    async def set_member_info(self, timeout: float | None = None, **info: Any) -> None:
        """Record ``info`` (e.g. ``client_addr``) in this node's own address
        book entry, through the leader (peer_rpc.SetMemberInfo); returns once
        applied here.  A no-op change to the configuration (address_book.py)."""
        address_book.check_info(self.id, info)
        t = self.config.commit_timeout if timeout is None else timeout
        req = peer_rpc.SetMemberInfo(self.id, address_book.encode_info(info))
        await self._submit(lambda: self._route(lambda: self._info_local(req), req, t), t)

    async def _info_local(self, req: peer_rpc.SetMemberInfo) -> tuple[int, int]:
        info = address_book.decode_info(req.node_id, req.info)
        return await self._conf_local(
            lambda conf: address_book.info_change(conf, req.node_id, info)
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
        check_member(self.transport, self.id, addr)
        req = peer_rpc.encode(peer_rpc.Join(self.id, addr, voter))
        raw = await self.transport.call_address(contact, req, timeout)
        try:
            rep = peer_rpc.decode_reply(raw)
        except peer_rpc.RpcError as exc:
            raise MembershipError(f"join: {contact} answered {exc}") from None
        if isinstance(rep, peer_rpc.Refused):
            raise MembershipError(f"join refused: {rep.message}")
        if not isinstance(rep, peer_rpc.Joined):
            raise MembershipError(f"join: {contact} answered {rep!r}")
        self.members = {str(k): dict(v) for k, v in rep.members.items()}
        self._update_peers()

    async def _handle_join(self, req: peer_rpc.Join) -> bytes:
        # Checked by every node it passes through: a joiner is not a member
        # yet, and nothing it sends may reach the log unchecked.
        try:
            check_member(self.transport, req.node_id, req.addr)
        except BadMember as exc:
            return peer_rpc.encode(peer_rpc.refusal(exc))
        rn = self.rn
        assert rn is not None
        if rn.role is not Role.LEADER:
            if rn.leader is None:
                return peer_rpc.encode(
                    peer_rpc.Refused(peer_rpc.Refusal.NO_LEADER, "no leader yet; try again")
                )
            raw: bytes = await self.transport.call(
                rn.leader, peer_rpc.encode(req), self.config.commit_timeout * 2
            )
            return raw
        try:
            if req.node_id not in self.members:
                await self.add_learner(req.node_id, req.addr)
        except NodeError as exc:
            return peer_rpc.encode(peer_rpc.refusal(exc))
        if req.voter:
            task = asyncio.create_task(self._promote_when_caught_up(req.node_id, 60.0))
            self._bg.add(task)
            task.add_done_callback(self._bg.discard)
        return peer_rpc.encode(peer_rpc.Joined(self.members))

    def _update_peers(self) -> None:
        """Hand the members' addresses to the transport.  Runs while applying
        committed changes, so it never raises: an address the transport
        cannot use is left out (that peer is unreachable), logged once and
        reported by :meth:`status` until the member is removed or fixed."""
        table: dict[str, str] = {}
        bad: dict[str, str] = {}
        for nid, m in self.members.items():
            addr = m.get("addr")
            if nid == self.id or not addr:
                continue
            try:
                if not isinstance(addr, str):
                    raise ValueError(f"address {addr!r} is not a string")
                self.transport.check_address(addr)
            except ValueError as exc:
                bad[nid] = str(exc)
                if self.bad_peer_addresses.get(nid) != bad[nid]:
                    log.error("node %s: member %s is unreachable: %s", self.id, nid, exc)
                continue
            table[nid] = addr
        self.bad_peer_addresses = bad
        try:
            self.transport.set_peers(table)
        except Exception:  # a transport bug must not take the node down with it
            log.exception("node %s: the transport refused the peer table", self.id)
