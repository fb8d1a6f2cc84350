"""The KV service: everything liferaft-kv does for a client, with no
transport in it.  The HTTP API (liferaft/kv/server.py) parses a request,
calls one method here and renders the result; gRPC and the console do the
same over the same service, so no front end repeats a rule.

Theory of operation (docs/kv.md)
--------------------------------
- **State.**  The node's state machine is :class:`~liferaft.kv.machine.KVMachine`:
  an MVCC store in LMDB, applied a batch of committed entries per
  transaction off the event loop.  Writes are commands of
  :mod:`liferaft.kv.mvcc.codec` proposed through the node; the answer is
  the result the machine computed when it applied the entry *on this node*.
- **Reads** run on this node's applied store, after the read barrier the
  consistency asks for (:meth:`Node.read`).  The store may be ahead of the
  barrier (a batch committed meanwhile): every revision in it is committed,
  so the read stays linearizable.
- **Conditional writes** (``if_value``, ``if_revision``) are single-key
  transactions: compare, then the write, or else a read of the key for the
  412's ``current``.
- **Watch.**  The machine hands each committed batch's events to this
  service from its apply thread (:meth:`KVService.committed`); they go to
  the :class:`~liferaft.kv.watch.WatchHub`, which serves every watcher of
  this node from its own applied state.
- **Leases.**  :mod:`liferaft.kv.lease_service`, on the leader's lease clock
  (:mod:`liferaft.kv.lessor`).

Results are typed (msgspec structs, :mod:`liferaft.kv.requests`) and so are
errors: every failure is a :class:`KVError` whose ``retry_safe`` and
``outcome_unknown`` say what a client may do (the runtime's errors map as
:mod:`liferaft.kv.node_errors` says).  A session write the machine can no
longer place is ``KVOutcomeUnknownError("session_expired")``; one whose
``seq`` holds another write's outcome is ``KVConflictError("seq_reused")``;
neither applied anything.  Authentication is the front end's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import msgspec

from liferaft.runtime import Node, NodeError, write_trace
from liferaft.runtime import address_book as book
from liferaft.runtime.admin import keep_member_info

from .cluster import AddMemberRequest, ClusterAdmin, ClusterStatus, Member, PeerState
from .compactor import CompactionPolicy, Compactor
from .errors import KVBadRequestError, KVNotFoundError, KVPreconditionFailedError
from .lease_service import Leases
from .lessor import Lessor
from .machine import Committed, KVMachine
from .metrics import Metrics
from .mvcc.codec import Command, OpenSession, SessionRef, Write, encode_command
from .mvcc.ops import (
    TO_END,
    Compact,
    CompactResult,
    Compare,
    DeleteRange,
    DeleteResult,
    KeyValue,
    PutResult,
    Range,
    RangeResult,
    Txn,
    TxnResult,
)
from .mvcc.writer import check_no_duplicate_keys
from .node_errors import node_error
from .requests import (
    MAX_LIMIT,
    MAX_TXN_OPS,
    Item,
    KeySpan,
    Page,
    TxnRange,
    TxnRequest,
    TxnResponse,
    Written,
    check_revision,
    compare_op,
    item,
    item_or_none,
    key_bytes,
    put_op,
    range_op,
    text,
    txn_op,
    txn_response,
)
from .watch import Watcher, WatchHub
from .watch_history import StoreHistory
from .watch_types import KeyRange

T = TypeVar("T")

DEFAULT_MAX_VALUE = 1 << 20
DEFAULT_MAX_LIST_BYTES = 4 << 20
#: Seconds a live watch may be idle before a progress line (`liferaft serve
#: --watch-progress-interval`).
DEFAULT_PROGRESS_INTERVAL = 10.0
MAX_LIST = MAX_LIMIT
MAX_SEQ = (1 << 63) - 1  # session ids and sequence numbers fit an int64
CONSISTENCY = ("linearizable", "lease", "stale")


# -- requests -------------------------------------------------------------------------------


class PutRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Write ``value`` at ``key`` (attached to ``lease``; 0: none) if the
    conditions hold (None: no condition; ``if_revision=0``: only if absent),
    in ``session`` if given."""

    key: str
    value: str
    lease: int = 0
    if_value: str | None = None
    if_revision: int | None = None
    session: SessionRef | None = None


class DeleteRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Delete ``key`` if the conditions hold, in ``session`` if given."""

    key: str
    if_value: str | None = None
    if_revision: int | None = None
    session: SessionRef | None = None


class RangeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The keys of ``span`` at ``revision`` (0: the current one)."""

    span: KeySpan
    revision: int = 0
    limit: int = MAX_LIMIT
    keys_only: bool = False
    count_only: bool = False
    consistency: str = "linearizable"


class Compacted(msgspec.Struct, frozen=True):
    revision: int
    compact_revision: int


# -- input rules, for every front end -------------------------------------------------------


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


def conditions(key: bytes, if_value: str | None, if_revision: int | None) -> tuple[Compare, ...]:
    """The compares of a conditional write (none for a plain one)."""
    out = []
    if if_revision is not None:
        check_revision(if_revision, "if_revision")
        # "Only if absent" is version 0: a missing key has version 0.
        if if_revision == 0:
            out.append(Compare(key, "version", "=", 0))
        else:
            out.append(Compare(key, "mod_revision", "=", if_revision))
    if if_value is not None:
        out.append(Compare(key, "value", "=", if_value.encode()))
    return tuple(out)


def _precondition_failed(res: TxnResult) -> KVPreconditionFailedError:
    got = res.results[0] if res.results else None
    kv = got.kvs[0] if isinstance(got, RangeResult) and got.kvs else None
    return KVPreconditionFailedError(item_or_none(kv))


def _most_keys(r: TxnRange) -> int:
    """The most keys a txn's range may return (a single key: one)."""
    return 1 if r.key is not None else r.limit or MAX_LIMIT


def _key_range(key: bytes, end: bytes | None) -> KeyRange:
    if end is None:
        return KeyRange.single(key)
    return KeyRange.between(key, None if end == TO_END else end)


# -- the service ----------------------------------------------------------------------------


class KVService(ClusterAdmin):
    """liferaft-kv on one node: keys, transactions, watch, leases, sessions
    and cluster administration."""

    def __init__(
        self,
        node: Node,
        machine: KVMachine,
        *,
        client_addr: str,
        grpc_addr: str = "",
        name: str = "",
        max_value: int = DEFAULT_MAX_VALUE,
        timeout: float = 5.0,
        max_list_bytes: int = DEFAULT_MAX_LIST_BYTES,
        progress_interval: float = DEFAULT_PROGRESS_INTERVAL,
        compaction: CompactionPolicy | None = None,
    ) -> None:
        """Build on the event loop (the watch hub keeps it).  ``compaction``
        is the automatic retention (None or disabled: history is kept until
        ``POST /v1/compact``)."""
        self.node = node
        self.machine = machine
        self.client_addr = client_addr
        self.grpc_addr = grpc_addr  # etcd's gRPC API ("": not served)
        self.name = name  # its --id, when it runs under another id (kv/adopt.py)
        self.max_value = max_value
        self.timeout = timeout
        self.max_list_bytes = max_list_bytes
        self.metrics = Metrics(node, machine)
        self.hub = WatchHub(
            StoreHistory(machine), machine.revision(), progress_interval=progress_interval
        )
        self.lessor = Lessor()
        self.lessor.load(machine.leases())
        self.leases = Leases(
            node, machine, self.lessor, propose=self.propose, timeout=timeout
        )
        self._published = machine.revision()  # the apply thread's
        machine.listener = self
        self.compactor = Compactor(
            compaction or CompactionPolicy(retention=0),
            revision=machine.revision,
            compact_revision=machine.compact_revision,
            is_leader=lambda: node.is_leader,
            compact=self.compact,
        )
        self._tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        """Keep this node's client address in the address book, and run the
        lease clock and the watchers' progress timer."""
        if not self._tasks:
            info = {book.CLIENT_ADDR: self.client_addr}
            if self.grpc_addr:
                info[book.GRPC_ADDR] = self.grpc_addr
            if self.name:
                info[book.NAME] = self.name
            self._tasks = [
                asyncio.create_task(keep_member_info(self.node, info)),
                asyncio.create_task(self.leases.run()),
                asyncio.create_task(self.hub.run_progress()),
                asyncio.create_task(self.compactor.run()),
            ]

    async def close(self) -> None:
        self.hub.close()
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    def store_revision(self) -> int:
        return self.machine.revision()

    # -- from the machine's apply thread --------------------------------------------------

    def committed(self, batch: Committed) -> None:
        """A batch committed (called in the apply thread, in batch order)."""
        for lid, ttl in batch.granted:
            self.lessor.granted(lid, ttl)
        for lid in batch.revoked:
            self.lessor.revoked(lid)
        if batch.events or batch.revision > self._published:
            self._published = batch.revision
            self.hub.publish_threadsafe(batch.events, batch.revision)

    def restored(self, revision: int) -> None:
        """A snapshot replaced the store (called where the restore ran)."""
        self.lessor.load(self.machine.leases())
        self._published = revision
        self.hub.restored_threadsafe(revision)

    # -- reads --------------------------------------------------------------------------

    async def _read(self, fn: Callable[[], T], consistency: str) -> T:
        check_consistency(consistency)
        self.metrics.reads_served += 1
        try:
            return await self.node.read(fn, consistency=consistency, timeout=self.timeout)
        except NodeError as exc:
            raise node_error(exc) from exc

    async def barrier(self, consistency: str = "linearizable") -> None:
        """Wait until this node's store may be read at ``consistency``
        (front ends that read the store themselves: liferaft/etcd/)."""
        await self._read(lambda: None, consistency)

    async def get(self, key: str, consistency: str = "linearizable", revision: int = 0) -> Item:
        """``key`` at ``revision`` (0: now); :class:`KVNotFoundError` if absent."""
        k = key_bytes(key)
        check_revision(revision)

        def read() -> KeyValue | None:
            with self.machine.read() as view:
                return view.get(k, revision)

        kv = await self._read(read, consistency)
        if kv is None:
            raise KVNotFoundError(f"no key {key!r}")
        return item(kv)

    async def range(self, req: RangeRequest) -> Page:
        """One page of ``req.span``: at most ``limit`` keys and, past the
        first, about ``max_list_bytes`` of keys and values; ``next``
        continues it (read it at the page's ``read_revision``)."""
        op = range_op(req.span, req.revision, req.limit, req.keys_only, req.count_only)

        def read() -> tuple[RangeResult, int]:
            with self.machine.read() as view:
                return view.range(op), op.revision or view.revision

        # A range walks its whole span to count it, whatever its limit
        # (0.4 s for 200k keys): off the event loop, or heartbeats stop.
        # (The store's reads are safe in a worker thread: mvcc/store.py.)
        await self.barrier(req.consistency)
        res, at = await asyncio.to_thread(read)
        kvs, nxt = self._fit(res)
        more = nxt is not None
        return Page([item(kv) for kv in kvs], res.revision, res.count, at,
                    text(nxt) if more and nxt is not None else None)  # fmt: skip

    def _fit(self, res: RangeResult) -> tuple[Sequence[KeyValue], bytes | None]:
        """The keys of ``res`` that fit the page's byte budget, and the key
        the next page starts at (None: none follows)."""
        size = 0
        for i, kv in enumerate(res.kvs):
            size += len(kv.key) + len(kv.value) + 80  # 80: the JSON around one item
            if i and size > self.max_list_bytes:
                return res.kvs[:i], kv.key
        return res.kvs, res.next_key if res.more else None

    def watch(
        self, span: KeySpan, start_revision: int = 0, prev_kv: bool = False
    ) -> tuple[Watcher, int]:
        """A watcher of ``span`` from ``start_revision`` (0: the next
        revision), and the revision this node has published."""
        key, end = span.bounds()
        check_revision(start_revision, "start_revision")
        w = self.hub.watch(_key_range(key, end), start_revision=start_revision or None,
                           prev_kv=prev_kv)  # fmt: skip
        return w, self.hub.revision

    # -- writes -------------------------------------------------------------------------

    async def propose(self, cmd: Command) -> Any:
        """Propose ``cmd``; the result the machine computed for it here."""
        t0 = time.perf_counter()
        trace = write_trace.tracer
        if trace is not None:
            trace.arrived()
        try:
            res = await self.node.propose(encode_command(cmd), timeout=self.timeout)
        except NodeError as exc:
            self.metrics.proposal_failed(type(exc).__name__)
            raise node_error(exc) from exc
        if trace is not None:
            trace.responded()
        self.metrics.write_done(time.perf_counter() - t0)
        return res

    def put(self, req: PutRequest) -> Coroutine[Any, Any, Written]:
        """Propose the write; the coroutine answers with the outcome its apply
        computed.  Input is checked at the call (:class:`KVBadRequestError`,
        :class:`KVTooLargeError`)."""
        op = put_op(req.key, req.value, self.max_value, req.lease, prev_kv=True)
        cond = conditions(op.key, req.if_value, req.if_revision)
        if not cond:
            return self._put(Write(op, req.session))
        return self._conditional(Write(Txn(cond, (op,), (Range(op.key),)), req.session))

    async def _put(self, cmd: Write) -> Written:
        res: PutResult = await self.propose(cmd)
        return Written(res.revision, item_or_none(res.prev_kv))

    def delete(self, req: DeleteRequest) -> Coroutine[Any, Any, Written]:
        """As :meth:`put`: delete ``key`` (:class:`KVNotFoundError` if absent)."""
        op = DeleteRange(key_bytes(req.key), None, prev_kv=True)
        cond = conditions(op.key, req.if_value, req.if_revision)
        if not cond:
            return self._conditional(Write(op, req.session))
        return self._conditional(Write(Txn(cond, (op,), (Range(op.key),)), req.session))

    async def _conditional(self, cmd: Write) -> Written:
        res = await self.propose(cmd)
        if isinstance(res, TxnResult):
            if not res.succeeded:
                raise _precondition_failed(res)
            res = res.results[0]
        if isinstance(res, PutResult):
            return Written(res.revision, item_or_none(res.prev_kv))
        assert isinstance(res, DeleteResult)
        if not res.deleted:
            raise KVNotFoundError("no such key")
        return Written(res.revision, item(res.prev_kvs[0]))

    async def txn(self, req: TxnRequest) -> TxnResponse:
        """Compare, then one branch, at one revision (docs/kv.md, "Transactions")."""
        if max(len(req.compare), len(req.success), len(req.failure)) > MAX_TXN_OPS:
            raise KVBadRequestError(f"a txn holds at most {MAX_TXN_OPS} compares, and ops a branch")
        for branch in (req.success, req.failure):
            # One answer holds at most one page: 128 ranges of 10,000 keys
            # each were built in apply on every replica (GBs with big values).
            if sum(_most_keys(o.range) for o in branch if o.range) > MAX_LIMIT:
                raise KVBadRequestError(
                    f"the ranges of one txn branch return at most {MAX_LIMIT} keys "
                    "together: give each a limit, and page with GET /v1/kv"
                )
        txn = Txn(
            tuple(compare_op(c) for c in req.compare),
            tuple(txn_op(o, self.max_value) for o in req.success),
            tuple(txn_op(o, self.max_value) for o in req.failure),
        )
        # The machine refuses these too, but only once the entry is in the
        # log: checked here, bad input costs no entry (as every other 400).
        check_no_duplicate_keys(txn.success)
        check_no_duplicate_keys(txn.failure)
        session = session_ref(req.session, req.seq, req.lowest_pending)
        return txn_response(await self.propose(Write(txn, session)))

    async def compact(self, revision: int) -> Compacted:
        """Drop history below ``revision`` on every replica."""
        check_revision(revision)
        res: CompactResult = await self.propose(Compact(revision))
        return Compacted(res.revision, res.compact_revision)

    async def open_session(self) -> int:
        """Open a client session: one committed entry, whose index is its id."""
        sid: int = await self.propose(OpenSession())
        return sid


__all__ = [
    "AddMemberRequest",
    "ClusterStatus",
    "Compacted",
    "DeleteRequest",
    "Item",
    "KVService",
    "Member",
    "Page",
    "PeerState",
    "PutRequest",
    "RangeRequest",
    "Written",
    "check_consistency",
    "node_error",
    "session_ref",
]
