"""Membership of a running node: the member table, its changes, the peer table.

Theory of operation
-------------------
:class:`Membership` owns the member table (id -> address and info) and the
transport's peer table built from it.  It proposes changes through the loop
(liferaft/runtime/loop.py) and routes them to the leader like any write
(liferaft/runtime/router.py); it applies a committed change to the member
table (:meth:`Membership.apply_change`) when the applier hands it one.

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
from collections.abc import Callable
from typing import Any

from liferaft.codec import MAX_NODE_ID
from liferaft.core import (
    ChangeType,
    ConfChange,
    ConfChangeError,
    ConfChangeSingle,
    ConfState,
    Entry,
    ProposalDroppedError,
    Role,
)
from liferaft.core import (
    NotLeaderError as CoreNotLeaderError,
)
from liferaft.transport.base import Transport

from . import address_book, peer_rpc
from ._futures import _fail, _resolve
from .clock import Clock
from .config import NodeConfig
from .errors import BadMemberError, MembershipError, NodeError, NodeTimeoutError, NotLeaderError
from .events import EventType
from .loop import RaftLoop
from .router import Router

log = logging.getLogger("liferaft.runtime")

#: Longest member id: the codec's limit on node ids.
MAX_ID = MAX_NODE_ID
#: Characters that would make an id ambiguous where ids are written as text
#: (``--initial-cluster n1=host:port,n2=...``, URLs, logs).
_ID_FORBIDDEN = frozenset(",=/")


def check_member_id(node_id: object) -> str:
    """``node_id`` if it can name a member; else :class:`BadMemberError`."""
    if not isinstance(node_id, str) or not node_id:
        raise BadMemberError(f"a member id must be a non-empty string, not {node_id!r}")
    if len(node_id) > MAX_ID:
        raise BadMemberError(f"member id longer than {MAX_ID} characters")
    bad = [ch for ch in node_id if ch.isspace() or not ch.isprintable() or ch in _ID_FORBIDDEN]
    if bad:
        raise BadMemberError(f"member id {node_id!r} contains {bad[0]!r}")
    if node_id in (".", ".."):
        # /v1/members/.. is /v1/: such a member could never be removed by URL.
        raise BadMemberError(f"member id {node_id!r} names a path, not a member")
    return node_id


def check_member(
    transport: Transport, node_id: object, addr: object, info: dict[str, Any] | None = None
) -> None:
    """Refuse (:class:`BadMemberError`) a member the cluster could not use: a bad
    id, a peer address ``transport`` cannot dial, a ``client_addr`` that is not
    "host:port", or extra info that does not encode as JSON."""
    check_member_id(node_id)
    if not isinstance(addr, str):
        raise BadMemberError(f"peer address of {node_id} must be a string, not {addr!r}")
    try:
        transport.check_address(addr)
    except ValueError as exc:
        raise BadMemberError(f"peer address of {node_id}: {exc}") from None
    address_book.check_info(str(node_id), info or {})


def check_conf_change(transport: Transport, cc: ConfChange) -> None:
    """:func:`check_member` for every node a raw change adds with a context."""
    try:
        info = address_book.decode_context(cc.context, strict=True)
    except address_book.ContextError as exc:
        raise BadMemberError(str(exc)) from None
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


class Membership:
    """add_learner / promote / remove / add_voter / replace / join, the
    apply of committed changes, and the transport's peer table."""

    def __init__(
        self,
        loop: RaftLoop,
        router: Router,
        transport: Transport,
        clock: Clock,
        config: NodeConfig,
        emit: Callable[..., None],
    ) -> None:
        self._loop = loop
        self._router = router
        self.transport = transport
        self.clock = clock
        self.config = config
        self._emit = emit
        self.id = loop.id
        self.members: dict[str, dict[str, Any]] = {}
        #: The context version this node writes: the unversioned one in a
        #: cluster of entry format 1, whose older members read only that
        #: (set with the entry format, by the applier).
        self.context_version = address_book.CONTEXT_VERSION
        #: Members whose address the transport cannot use: id -> why.
        self.bad_peer_addresses: dict[str, str] = {}
        #: Futures of changes queued on the loop, not yet proposed: failed
        #: with StoppedError if the node stops before they run.
        self._unproposed: set[asyncio.Future[Any]] = set()

    async def conf_local(
        self, cc: ConfChange | Callable[[ConfState], ConfChange]
    ) -> tuple[int, int]:
        """Propose ``cc`` on this node (the leader); its (index, term).  A
        callable builds the change from the configuration in force when it
        is proposed, on the loop (address_book.info_change)."""
        self._loop.check_running()
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
            rn = self._loop.rn
            assert rn is not None
            try:
                change = cc if isinstance(cc, ConfChange) else cc(rn.conf_state())
                idx = rn.propose_conf_change(change)
            except MembershipError as exc:
                _fail(fut, exc)
                return
            except (CoreNotLeaderError, ProposalDroppedError) as exc:
                # Not leader, or handing leadership over (a transfer,
                # SIGTERM's hand-over) or leaving the voters: nothing was
                # proposed, so the router waits for the next leader, as
                # for a write.
                _fail(fut, NotLeaderError(str(exc), rn.leader))
                return
            except ConfChangeError as exc:
                _fail(fut, MembershipError(str(exc)))
                return
            _resolve(fut, (idx, rn.term))

        # Until start() runs nothing is proposed; if the node stops first,
        # stop() answers StoppedError (true) rather than leaving it to a timeout.
        self._unproposed.add(fut)
        fut.add_done_callback(self._unproposed.discard)
        self._loop.call(start)
        return await fut

    async def change_membership(
        self, cc: ConfChange, timeout: float | None = None, *, check: bool = True
    ) -> None:
        """Propose a raw membership change and wait until it is applied here.

        The ids, and the addresses in ``cc.context`` (``{id: {"addr": ...}}``),
        are checked first (:class:`BadMemberError`).  ``check=False`` proposes the
        change as given: for tests and fault injection that show a committed
        bad change cannot hurt a node, never for operators."""
        if check:
            check_conf_change(self.transport, cc)
        t = self.config.commit_timeout if timeout is None else timeout
        req = peer_rpc.ChangeConf(cc.encode())
        router = self._router
        await router.submit(lambda: router.route(lambda: self.conf_local(cc), req, t), t)

    async def add_learner(self, node_id: str, addr: str, **info: Any) -> None:
        """Add a non-voting member that receives the log (etcd's learner)."""
        check_member(self.transport, node_id, addr, info)
        ctx = address_book.encode_context(
            {node_id: {address_book.PEER_ADDR: addr, **info}}, self.context_version
        )
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
        router = self._router
        await router.submit(lambda: router.route(lambda: self.info_local(req), req, t), t)

    async def info_local(self, req: peer_rpc.SetMemberInfo) -> tuple[int, int]:
        """Propose ``req``'s member info on this node (the leader)."""
        info = address_book.decode_info(req.node_id, req.info)
        return await self.conf_local(
            lambda conf: address_book.info_change(conf, req.node_id, info, self.context_version)
        )

    async def _wait_caught_up(self, node_id: str, t: float) -> None:
        deadline = self.clock.monotonic() + t
        rn = self._loop.rn
        assert rn is not None
        while True:
            st = rn.status()
            p = st.progress.get(node_id)
            if st.role is Role.LEADER and p is not None and p.match >= st.commit:
                return
            if self.clock.monotonic() >= deadline:
                raise NodeTimeoutError(f"{node_id} did not catch up")
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
        self._loop.check_running()
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
        self.update_peers()

    async def handle_join(self, req: peer_rpc.Join) -> bytes:
        """The peer ``join`` call: add the joiner (on the leader), or pass
        the call on to the leader."""
        # Checked by every node it passes through: a joiner is not a member
        # yet, and nothing it sends may reach the log unchecked.
        try:
            check_member(self.transport, req.node_id, req.addr)
        except BadMemberError as exc:
            return peer_rpc.encode(peer_rpc.refusal(exc))
        rn = self._loop.rn
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
            self._loop.spawn(self._promote_when_caught_up(req.node_id, 60.0))
        return peer_rpc.encode(peer_rpc.Joined(self.members))

    def apply_change(self, e: Entry, before: ConfState | None = None) -> None:
        """Apply the committed change in ``e`` to the member table.  Never
        raises, whatever the entry holds (docs/architecture.md, "Trust
        model"): committed entries are trusted data, never trusted code.
        ``before``: the configuration before the change (by default the
        core's, which is that only while the core has not advanced past it)."""
        try:
            cc = ConfChange.decode(e.data)
        except ConfChangeError:
            return
        try:
            info = address_book.decode_context(cc.context)
        except Exception as exc:  # committed data: never raise out of apply
            log.warning("node %s: entry %d: member context ignored: %s", self.id, e.index, exc)
            info = {}
        for c in cc.changes:
            if c.type is ChangeType.REMOVE_NODE:
                if self.members.pop(c.node_id, None) is not None:
                    self._log_member(e.index, c.node_id, "removed")
                    self._emit(EventType.MEMBER_REMOVED, c.node_id)
            else:
                entry = dict(self.members.get(c.node_id, {}))
                entry.update(info.get(c.node_id, {}))
                new = c.node_id not in self.members
                self.members[c.node_id] = entry
                voter = c.type is ChangeType.ADD_VOTER
                # A voter re-added to record its own info
                # (address_book.info_change) was one before.
                rn = self._loop.rn
                conf = before if before is not None else rn.conf_state() if rn else None
                promoted = voter and conf is not None and c.node_id not in conf.voters
                if new or promoted:
                    what = "added as a voter" if voter else "added as a learner"
                    self._log_member(e.index, c.node_id, "promoted to voter" if promoted and not new
                                     else what, entry.get("addr"))
                    self._emit(
                        EventType.MEMBER_ADDED, c.node_id, voter=voter, addr=entry.get("addr")
                    )
        self.update_peers()

    def _log_member(self, index: int, nid: str, what: str, addr: Any = None) -> None:
        """One INFO line per membership change this node applied
        (docs/operations.md, "Logs")."""
        at = f" at {addr}" if addr else ""
        log.info(
            "node %s: member %s %s%s (conf change at index %d applied)", self.id, nid, what, at,
            index, extra={"member": nid, "change": what, "index": index},
        )

    def stop(self, err: BaseException) -> None:
        """Fail the changes that were never proposed (the node stops)."""
        for uf in list(self._unproposed):
            _fail(uf, err)

    def update_peers(self) -> None:
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
