"""The KV service: everything liferaft-kv does for a client, with no
transport in it.  The HTTP API (liferaft/kv/server.py) parses a request,
calls one method here and renders the result; gRPC and the console will do
the same over the same service, so no front end repeats a rule.

Results are typed (msgspec structs, so a front end can encode them as they
are) and so are errors: every failure is a :class:`KVError` whose
``retry_safe`` and ``outcome_unknown`` say what a client may do
(docs/architecture.md, "Outcomes"):

============================  =========================  ==============  ====
runtime error                 KVError                    code            HTTP
============================  =========================  ==============  ====
NotLeaderError, StoppedError  KVUnavailableError         no_leader       503
DroppedError                  KVUnavailableError         no_leader       503
StorageFailedError            KVUnavailableError         storage_failed  503
NodeTimeoutError              KVOutcomeUnknownError      timeout         504
MembershipError               KVConflictError            conflict        409
BadConfigError (any other)    KVBadRequestError          bad_request     400
============================  =========================  ==============  ====

``KVUnavailableError`` is ``retry_safe``: provably not applied (and never will be).
``KVOutcomeUnknownError`` is ``outcome_unknown``: it may apply; retry in the same
session.  A session write the store can no longer place is
``KVOutcomeUnknownError("session_expired")``; one whose ``seq`` holds another
write's outcome is ``KVConflictError("seq_reused")``; neither applied anything
(liferaft/kv/state.py).  Authentication is the front end's.

Cluster concerns are the runtime's: addresses come from the one address
book (liferaft/runtime/address_book.py), admin calls reach the leader over
the peer RPC (liferaft/runtime/admin.py).  At :meth:`KVService.start` the
service keeps this node's client address in the book.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec

from liferaft.runtime import (
    DroppedError,
    MembershipError,
    Node,
    NodeError,
    NodeTimeoutError,
    NotLeaderError,
    StoppedError,
    StorageFailedError,
)
from liferaft.runtime import address_book as book
from liferaft.runtime.admin import keep_member_info, transfer_leadership

from .errors import (
    KVBadRequestError,
    KVConflictError,
    KVError,
    KVNotFoundError,
    KVOutcomeUnknownError,
    KVPreconditionFailedError,
    KVTooLargeError,
    KVUnavailableError,
)
from .metrics import Metrics
from .state import (
    KV,
    MAX_KEY_BYTES,
    Delete,
    KVStore,
    Opened,
    OpenSession,
    Put,
    SessionRef,
    WriteResult,
    encode_command,
)

DEFAULT_MAX_VALUE = 1 << 20
DEFAULT_MAX_LIST_BYTES = 4 << 20
MAX_LIST = 10_000
MAX_SEQ = (1 << 63) - 1  # session ids and sequence numbers fit an int64
# A revision is a log index: an unsigned 64-bit number (msgpack's largest),
# so anything larger is refused as input, never met when encoding.
MAX_REVISION = 2**64 - 1
CONSISTENCY = ("linearizable", "lease", "stale")


# -- requests and results ------------------------------------------------------------------


class PutRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Write ``value`` at ``key`` if the conditions hold (None: no condition;
    ``if_revision=0``: only if absent), in ``session`` if given."""

    key: str
    value: str
    if_value: str | None = None
    if_revision: int | None = None
    session: SessionRef | None = None


class DeleteRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Delete ``key`` if the conditions hold, in ``session`` if given."""

    key: str
    if_value: str | None = None
    if_revision: int | None = None
    session: SessionRef | None = None


class ListRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One page of keys under ``prefix``, from ``start`` (inclusive)."""

    prefix: str = ""
    start: str = ""
    limit: int = MAX_LIST
    consistency: str = "linearizable"


class AddMemberRequest(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    peer_addr: str
    client_addr: str = ""
    voter: bool = True


class Item(msgspec.Struct, frozen=True):
    key: str
    value: str
    revision: int


class Page(msgspec.Struct, frozen=True, omit_defaults=True):
    """``next`` (absent when done) is the ``start`` of the following page."""

    items: list[Item]
    revision: int
    next: str | None = None


class Written(msgspec.Struct, frozen=True):
    """A write applied at ``revision``; ``prev`` is what it replaced."""

    revision: int
    prev: KV | None


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


# -- input rules, for every front end -------------------------------------------------------


def check_key(key: str) -> str:
    if not key:
        raise KVBadRequestError("empty key")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise KVBadRequestError(f"key longer than {MAX_KEY_BYTES} bytes")
    return key


def check_consistency(c: str) -> str:
    if c not in CONSISTENCY:
        raise KVBadRequestError(f"consistency must be one of {', '.join(CONSISTENCY)}")
    return c


def session_ref(
    session: int | None, seq: int | None, lowest_pending: int | None
) -> SessionRef | None:
    """A write's session fields: all three (checked) or none (a plain write)."""
    if session is None and seq is None and lowest_pending is None:
        return None
    if session is None or seq is None or lowest_pending is None:
        raise KVBadRequestError("session, seq and lowest_pending come together, or none")
    if not (0 < session <= MAX_SEQ and 0 < lowest_pending <= seq <= MAX_SEQ):
        raise KVBadRequestError(f"need 1 <= session, 1 <= lowest_pending <= seq, all <= {MAX_SEQ}")
    return SessionRef(session, seq, lowest_pending)


def _check_revision(if_revision: int | None) -> None:
    if if_revision is not None and not 0 <= if_revision <= MAX_REVISION:
        raise KVBadRequestError("if_revision must be in 0..2^64-1")


def node_error(exc: NodeError) -> KVError:
    """The service error for a runtime error (the table in the module doc)."""
    if isinstance(exc, NotLeaderError):
        return KVUnavailableError("no_leader", f"no leader: {exc}; not proposed, safe to retry")
    if isinstance(exc, DroppedError):
        return KVUnavailableError("no_leader", f"{exc}; not applied, safe to retry")
    if isinstance(exc, StorageFailedError):
        return KVUnavailableError("storage_failed", f"{exc}; not proposed")
    if isinstance(exc, StoppedError):
        return KVUnavailableError("no_leader", f"{exc}; not proposed")
    if isinstance(exc, NodeTimeoutError):
        return KVOutcomeUnknownError("timeout", f"{exc}; the outcome is unknown")
    if isinstance(exc, MembershipError):
        return KVConflictError("conflict", str(exc))
    return KVBadRequestError(str(exc))


def _written(res: WriteResult) -> Written:
    """The answer to a write, from the outcome its apply computed."""
    if res.outcome == "ok":
        return Written(res.revision, res.prev)
    if res.outcome == "not_found":
        raise KVNotFoundError("no such key")
    if res.outcome == "session_expired":
        raise KVOutcomeUnknownError(
            "session_expired",
            "the session or this request's outcome is no longer held: not applied "
            "now; if an earlier attempt was, the outcome is unknown",
        )
    if res.outcome == "seq_reused":
        raise KVConflictError(
            "seq_reused",
            "this session's seq already holds the outcome of a different request: "
            "not applied (is another client using this session?)",
        )
    raise KVPreconditionFailedError(res.current)


# -- the service ----------------------------------------------------------------------------


class KVService:
    """liferaft-kv on one node: keys, sessions and cluster administration."""

    def __init__(
        self,
        node: Node,
        store: KVStore,
        *,
        client_addr: str,
        max_value: int = DEFAULT_MAX_VALUE,
        timeout: float = 5.0,
        max_list_bytes: int = DEFAULT_MAX_LIST_BYTES,
    ) -> None:
        self.node = node
        self.store = store
        self.client_addr = client_addr
        self.max_value = max_value
        self.timeout = timeout
        self.max_list_bytes = max_list_bytes
        self.metrics = Metrics(node, store)
        self._announce: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Keep this node's client address in the address book (proposed
        once this node is a member, until the book holds it)."""
        if self._announce is None:
            info = {book.CLIENT_ADDR: self.client_addr}
            self._announce = asyncio.create_task(keep_member_info(self.node, info))

    async def close(self) -> None:
        if self._announce is not None:
            self._announce.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._announce
            self._announce = None

    # -- keys ---------------------------------------------------------------------------

    async def get(self, key: str, consistency: str = "linearizable") -> Item:
        """The value at ``key`` (:class:`KVNotFoundError` if none)."""
        check_key(key)
        check_consistency(consistency)
        store = self.store
        try:
            kv = await self.node.read(
                lambda: store.get(key), consistency=consistency, timeout=self.timeout
            )
        except NodeError as exc:
            raise node_error(exc) from exc
        if kv is None:
            raise KVNotFoundError(f"no key {key!r}")
        return Item(key, kv.value, kv.revision)

    async def list_keys(self, req: ListRequest) -> Page:
        """One page: at most ``limit`` items and, past the first item, about
        ``max_list_bytes`` of keys and values (never empty if a key follows)."""
        if not 1 <= req.limit <= MAX_LIST:
            raise KVBadRequestError(f"limit must be in 1..{MAX_LIST}")
        check_consistency(req.consistency)
        try:
            items, nxt, rev = await self.node.read(
                lambda: self.store.page(req.prefix, req.start, req.limit, self.max_list_bytes),
                consistency=req.consistency,
                timeout=self.timeout,
            )
        except NodeError as exc:
            raise node_error(exc) from exc
        return Page([Item(k, v.value, v.revision) for k, v in items], rev, nxt)

    def put(self, req: PutRequest) -> Coroutine[Any, Any, Written]:
        """Propose the write; the coroutine answers with the outcome its apply
        computed.  Input is checked at the call (:class:`KVBadRequestError`,
        :class:`KVTooLargeError`).  Not itself a coroutine, so the hot path awaits
        no more frames than before the service existed."""
        check_key(req.key)
        if len(req.value.encode()) > self.max_value:
            raise KVTooLargeError(f"value larger than {self.max_value} bytes")
        _check_revision(req.if_revision)
        cmd = Put(req.key, req.value, req.if_value, req.if_revision, session=req.session)
        return self._write(cmd)

    def delete(self, req: DeleteRequest) -> Coroutine[Any, Any, Written]:
        """As :meth:`put`: delete ``key`` (:class:`KVNotFoundError` if absent)."""
        check_key(req.key)
        _check_revision(req.if_revision)
        return self._write(Delete(req.key, req.if_value, req.if_revision, session=req.session))

    async def open_session(self) -> int:
        """Open a client session: one committed entry, whose index is its id."""
        opened: Opened = await self._write(OpenSession())
        return opened.session

    async def _write(self, cmd: Put | Delete | OpenSession) -> Any:
        t0 = time.perf_counter()
        try:
            res = await self.node.propose(encode_command(cmd), timeout=self.timeout)
        except NodeError as exc:
            self.metrics.proposal_failed(type(exc).__name__)
            raise node_error(exc) from exc
        self.metrics.commit_latency.observe(time.perf_counter() - t0)
        return _written(res) if isinstance(res, WriteResult) else res

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


__all__ = [
    "AddMemberRequest",
    "ClusterStatus",
    "DeleteRequest",
    "Item",
    "KVService",
    "ListRequest",
    "Member",
    "Page",
    "PeerState",
    "PutRequest",
    "Written",
    "check_consistency",
    "check_key",
    "node_error",
    "session_ref",
]
