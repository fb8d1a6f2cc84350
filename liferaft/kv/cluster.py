"""Cluster administration of the KV service: members, status, leadership,
snapshots and readiness (docs/kv.md, "One service, one address book").

Cluster concerns are the runtime's: addresses come from the one address
book (liferaft/runtime/address_book.py), admin calls reach the leader over
the peer RPC (liferaft/runtime/admin.py).  :class:`ClusterAdmin` is the part
of :class:`~liferaft.kv.service.KVService` that serves them; it holds no
state of its own beyond the node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec

from liferaft.runtime import Node, NodeError
from liferaft.runtime import address_book as book
from liferaft.runtime.admin import transfer_leadership

from .errors import KVBadRequestError, KVNotFoundError
from .node_errors import node_error


class AddMemberRequest(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    peer_addr: str
    client_addr: str = ""
    voter: bool = True


class Member(msgspec.Struct, frozen=True):
    id: str
    peer_addr: str
    client_addr: str
    voter: bool


class PeerState(msgspec.Struct, frozen=True):
    match: int
    lag: int
    active: bool


class ClusterStatus(msgspec.Struct, frozen=True):
    id: str
    role: str
    term: int
    leader: str | None
    leader_client_addr: str
    commit_index: int
    applied_index: int
    last_log_index: int
    snapshot_index: int
    members: list[Member]
    peers: dict[str, PeerState]
    storage_ok: bool
    bad_peer_addresses: dict[str, str]
    revision: int = 0
    """The store revision this node has applied."""



class ClusterAdmin:
    """Members, status, leadership transfer, snapshots and readiness of ``node``."""

    node: Node
    timeout: float

    def store_revision(self) -> int:
        """The store revision this node has applied (the KV service's)."""
        return 0

    # -- cluster ------------------------------------------------------------------------

    def members(self) -> list[Member]:
        """Every member, with its addresses from the address book."""
        try:
            st = self.node.status()
        except NodeError as exc:
            raise node_error(exc) from exc
        voters = set(st.voters)
        out = []
        for nid in sorted(voters | set(st.learners)):
            a = book.addresses(st.members.get(nid))
            out.append(Member(nid, a.peer_addr, a.client_addr, nid in voters))
        return out

    def status(self) -> ClusterStatus:
        try:
            st = self.node.status()
        except NodeError as exc:
            raise node_error(exc) from exc
        leader = book.addresses(st.members.get(st.leader or ""))
        return ClusterStatus(
            id=st.id,
            role=st.role,
            term=st.term,
            leader=st.leader,
            leader_client_addr=leader.client_addr,
            commit_index=st.commit_index,
            applied_index=st.applied_index,
            last_log_index=st.last_log_index,
            snapshot_index=st.snapshot_index,
            members=self.members(),
            peers={n: PeerState(p.match, p.lag, p.active) for n, p in st.peers.items()},
            storage_ok=st.storage_ok,
            bad_peer_addresses=st.bad_peer_addresses,
            revision=self.store_revision(),
        )

    async def add_member(self, req: AddMemberRequest) -> list[Member]:
        """Add a learner, or a voter: a learner promoted once caught up (the
        call waits for that, up to 60 s)."""
        if not req.id or not req.peer_addr:
            raise KVBadRequestError("id and peer_addr are required")
        info = {book.CLIENT_ADDR: req.client_addr} if req.client_addr else {}
        try:
            if req.voter:
                await self.node.add_voter(req.id, req.peer_addr, catch_up_timeout=60.0, **info)
            else:
                await self.node.add_learner(req.id, req.peer_addr, **info)
        except NodeError as exc:
            raise node_error(exc) from exc
        return self.members()

    def _member(self, node_id: str) -> str:
        if not any(m.id == node_id for m in self.members()):
            raise KVNotFoundError(f"no member {node_id!r}")
        return node_id

    async def remove_member(self, node_id: str) -> list[Member]:
        return await self._member_change(self.node.remove, node_id)

    async def promote_member(self, node_id: str) -> list[Member]:
        return await self._member_change(self.node.promote, node_id)

    async def _member_change(
        self, change: Callable[[str], Awaitable[None]], node_id: str
    ) -> list[Member]:
        try:
            await change(self._member(node_id))
        except NodeError as exc:
            raise node_error(exc) from exc
        return self.members()

    async def transfer(self, to: str | None = None) -> str:
        """Move leadership to ``to`` (None: the most caught-up voter); from a
        follower the leader is asked over the peer RPC.  The new leader."""
        try:
            return await transfer_leadership(self.node, to, self.timeout)
        except NodeError as exc:
            raise node_error(exc) from exc

    async def snapshot(self) -> int:
        """Snapshot this node now; the snapshot's index."""
        try:
            return await self.node.snapshot()
        except NodeError as exc:
            raise node_error(exc) from exc

    def readiness(self) -> str | None:
        """None if ready (a leader is known, the disk takes writes, and what
        this node knew to be committed is applied); else why not."""
        try:
            st = self.node.status()
        except NodeError:
            return "the node is not running"
        why = []
        if st.leader is None:
            why.append("no leader")
        if not st.storage_ok:
            why.append("storage failed")
        if st.applied_index < st.commit_index:
            why.append(f"applying ({st.applied_index}/{st.commit_index})")
        return "; ".join(why) or None
