"""The running node: one asyncio task that owns the Raft core.

Theory of operation
-------------------
Everything that touches the core runs in one task, :meth:`Node._run`, so the
core needs no locks and the order of events is the order the task saw them.
Other tasks only queue work (messages from the transport, proposals, reads,
membership changes, ticks) and wake it.  Each turn of the loop:

1. steps every queued message and request into the core, and ticks it once
   per elapsed tick interval;
2. handles each Ready in the order of the core's contract: persist the hard
   state, entries and snapshot (a small Ready on the loop's thread, a big one
   in a worker thread so the loop keeps accepting work: everything that
   arrives meanwhile becomes the next group commit; a commit-index-only hard
   state is not synced), send the messages (a leader with ``send_first``
   sends while it persists, thesis §10.2.1), restore or apply, serve reads,
   ``advance()``.  Nothing is stepped into the core while a persist runs.

A proposal is a future keyed by the index its entry got; it resolves with
what the state machine's ``apply`` returned for that index, or fails with
:class:`Dropped` if a different term's entry was applied there.  A follower
forwards the proposal to the leader (a transport call), learns the index and
term the leader gave it, and waits for its *own* apply of that index: the
result comes from the local state machine, which is identical everywhere.

A disk that refuses a write (full, EIO) stops the node taking writes: the
Ready is retried with back-off, nothing is sent or applied from it until it
is durable, and proposals fail fast with :class:`StorageFailed` meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from liferaft.core import (
    ChangeType,
    ConfChange,
    ConfChangeError,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    InstallSnapshot,
    MemoryStorage,
    Message,
    NotLeaderError,
    RaftError,
    RawNode,
    ReadOnlyOption,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from liferaft.storage import DiskStorage, StorageError
from liferaft.transport.base import SnapshotSink, Transport

from . import address_book, admin, peer_rpc
from ._futures import _as_error, _fail, _resolve
from .clock import Clock, SystemClock
from .errors import (
    BadConfig,
    BadMember,
    Dropped,
    MembershipError,
    NodeError,
    NotLeader,
    Stopped,
    StorageFailed,
    Timeout,
)
from .events import Event, EventBus, EventType
from .membership import MembershipMixin, check_member
from .proposals import ProposalsMixin, _Prop
from .statemachine import StateMachine
from .store import DiskStore, MemStore, Store, unwrap_snapshot, wrap_snapshot

log = logging.getLogger("liferaft.runtime")
T = TypeVar("T")


@dataclass
class NodeConfig:
    """Tuning of one node.  Times are in seconds; the core counts ticks."""

    id: str
    cluster_id: str = "liferaft"
    tick_interval: float = 0.05
    election_ticks: int = 20  # 1 s with the default tick
    heartbeat_ticks: int = 2  # 100 ms
    commit_timeout: float = 5.0
    read_timeout: float = 5.0
    snapshot_entries: int = 10_000
    snapshot_bytes: int = 64 << 20
    #: Allow lease-based answers (thesis §6.4.1) to the reads that ask for
    #: one (``read(..., consistency="lease")``); linearizable reads always
    #: get a confirmed ReadIndex round.  Needs check_quorum.  Off, here and
    #: in ``liferaft serve`` alike: a lease is only as safe as the operator's
    #: clocks, so the operator turns it on (docs/runtime.md, "Lease reads").
    lease_reads: bool = False
    pre_vote: bool = True
    check_quorum: bool = True
    max_batch: int = 4096
    #: A Ready with at most this many new entries is fsynced on the event
    #: loop's thread; larger ones go to a worker thread so the loop keeps
    #: reading and batching meanwhile.  The thread hop cost about 0.1-0.25 ms
    #: per fsync on the 2-core bench machine, most of a lightly loaded write's
    #: latency; under load the batches grow and the thread pays for itself.
    inline_sync_entries: int = 16
    #: Seeds the node's randomness (election jitter, read nonces); tests only.
    #: None (the default) draws from the OS, so every start of a node differs,
    #: which read nonces need (liferaft.core.RawNode.read_index).
    seed: int | None = None

    def validate(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise BadConfig("id must be a non-empty string")
        if self.tick_interval <= 0:
            raise BadConfig("tick_interval must be > 0")
        if self.heartbeat_ticks <= 0 or self.election_ticks <= self.heartbeat_ticks:
            raise BadConfig("need 0 < heartbeat_ticks < election_ticks")
        if self.commit_timeout <= 0 or self.read_timeout <= 0:
            raise BadConfig("timeouts must be > 0")
        if self.snapshot_entries <= 0 or self.snapshot_bytes <= 0:
            raise BadConfig("snapshot thresholds must be > 0")
        if self.max_batch <= 0:
            raise BadConfig("max_batch must be > 0")
        if self.inline_sync_entries < 0:
            raise BadConfig("inline_sync_entries must be >= 0")
        if self.lease_reads and not self.check_quorum:
            raise BadConfig("lease_reads needs check_quorum")


@dataclass(frozen=True)
class PeerInfo:
    match: int
    lag: int
    state: str
    learner: bool
    active: bool


@dataclass(frozen=True)
class NodeStatus:
    id: str
    role: str
    term: int
    leader: str | None
    commit_index: int
    applied_index: int
    last_log_index: int
    snapshot_index: int
    members: dict[str, dict[str, Any]]
    voters: list[str]
    learners: list[str]
    peers: dict[str, PeerInfo] = field(default_factory=dict)
    storage_ok: bool = True
    #: Members this node cannot reach because their committed address is
    #: unusable (id -> reason); remove or re-add them to fix it.
    bad_peer_addresses: dict[str, str] = field(default_factory=dict)


class Node(ProposalsMixin, MembershipMixin):
    """A Raft node: drives the core over storage and a transport.

    ``initial_members`` ({id: peer address}) bootstraps a brand-new cluster
    when the storage is empty and is ignored otherwise.  A node started empty
    without it waits to be added by the cluster (see :meth:`join`).
    """

    def __init__(
        self,
        config: NodeConfig,
        state_machine: StateMachine,
        transport: Transport,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        store: Store | None = None,
        initial_members: Mapping[str, str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not isinstance(config, NodeConfig):
            raise BadConfig("config must be a NodeConfig")
        config.validate()
        if data_dir is not None and store is not None:
            raise BadConfig("give data_dir or store, not both")
        for attr in ("apply", "snapshot", "restore"):
            if not callable(getattr(state_machine, attr, None)):
                raise BadConfig(f"state_machine has no {attr}() method")
        if initial_members is not None and config.id not in initial_members:
            raise BadConfig(f"initial_members must include this node ({config.id})")
        self.config = config
        self.id = config.id
        self.sm = state_machine
        self.transport = transport
        self.clock: Clock = clock or SystemClock()
        self.events = EventBus()
        self._data_dir = data_dir
        self._store_arg = store
        self._initial = dict(initial_members) if initial_members else None
        self._rng = random.Random(config.seed)
        self.members: dict[str, dict[str, Any]] = {}
        #: Members whose address the transport cannot use: id -> why.
        self.bad_peer_addresses: dict[str, str] = {}
        self.store: Store | None = None
        self.rn: RawNode | None = None
        # Work queued for the node task.
        self._inbox: deque[Message] = deque()
        self._props: deque[_Prop] = deque()
        # Proposals with a deadline, in deadline order (see _expire); the
        # out-of-order few go to a heap.
        self._deadlines: deque[_Prop] = deque()
        self._late: list[tuple[float, int, _Prop]] = []
        self._seq = itertools.count()
        self._forwarding = 0  # callers waiting on an (index, term) from elsewhere
        self._ops: deque[Callable[[], None]] = deque()
        #: Futures of operations queued in _ops that would propose (a conf
        #: change): failed with Stopped if the node stops before they run.
        self._unproposed: set[asyncio.Future[Any]] = set()
        self._ticks_due = 0
        self._wake = asyncio.Event()
        #: Set if the node task died of an unexpected error: the node no
        #: longer runs Raft, and its process should exit (liferaft serve does).
        self.crashed = asyncio.Event()
        # Outcomes awaited by callers.
        self._pending: dict[int, _Prop] = {}
        #: Earlier waiters of an index a later term reused; settled by the
        #: apply of that index like the one in _pending (see proposals.py).
        self._displaced: dict[int, list[_Prop]] = {}
        self._recent: OrderedDict[int, tuple[int, bool, Any]] = OrderedDict()
        # ReadIndex requests: callers waiting for the next round, and the
        # rounds in flight (one ctx per round, shared by its callers).
        self._read_batch: list[asyncio.Future[int]] = []
        self._lease_batch: list[asyncio.Future[int]] = []
        self._reads: dict[bytes, list[asyncio.Future[int]]] = {}
        self._read_waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._leader_waiters: list[asyncio.Future[None]] = []
        self._ctx = itertools.count(1)
        # State.
        self.applied = 0
        self._snap_index = 0
        self._bytes_since_snap = 0
        self._snapshotting: asyncio.Task[None] | None = None
        self._storage_ok = True
        self._tasks: list[asyncio.Task[Any]] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopping = False
        self._last_tick = 0.0
        self._prev_term = 0
        self._prev_commit = 0
        self._prev_role: Role | None = None
        self._prev_leader: str | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the storage, restore the state machine, join the network."""
        if self._started:
            raise NodeError("node already started")
        if self._initial is not None:
            for nid, addr in self._initial.items():
                check_member(self.transport, nid, addr)
        self._started = True
        loop = asyncio.get_running_loop()
        if self._store_arg is not None:
            store = self._store_arg
        elif self._data_dir is not None:
            disk = await loop.run_in_executor(
                None,
                lambda: DiskStorage(self._data_dir, snapshot_data_in_memory=False),  # type: ignore[arg-type]
            )
            store = DiskStore(disk)
        else:
            store = MemStore()
        self.store = store
        restarted = not store.is_empty()
        if store.is_empty() and self._initial is not None:
            self._bootstrap(store, self._initial)
        meta = store.snapshot_meta()
        if meta.index:
            self._restore_from(meta)
        cfg = Config(
            id=self.id,
            election_tick=self.config.election_ticks,
            heartbeat_tick=self.config.heartbeat_ticks,
            rng=random.Random(self._rng.random()),
            pre_vote=self.config.pre_vote,
            check_quorum=self.config.check_quorum,
            read_only=ReadOnlyOption.LEASE_BASED
            if self.config.lease_reads
            else ReadOnlyOption.SAFE,
            applied=self.applied,
            # A lease needs every follower's promise kept across its restarts.
            quiet_after_start=self.config.lease_reads and restarted,
        )
        self.rn = RawNode(cfg, store.reader)
        self._prev_term = self.rn.term
        self._update_peers()
        self._attach_state_machine()
        await self.transport.start(self)
        self._last_tick = self.clock.monotonic()
        self._tasks = [
            asyncio.create_task(self._run(), name=f"liferaft-node-{self.id}"),
            asyncio.create_task(self._ticker(), name=f"liferaft-ticker-{self.id}"),
        ]
        log.info("node %s started (term %d, applied %d)", self.id, self.rn.term, self.applied)

    def _attach_state_machine(self) -> None:
        attach = getattr(self.sm, "attach", None)
        if callable(attach):
            attach(self)

    def _bootstrap(self, store: Store, members: Mapping[str, str]) -> None:
        """A brand-new cluster: an initial snapshot at index 1 whose membership
        is ``members`` and whose state is the state machine as it is now."""
        book = {nid: {"addr": addr} for nid, addr in members.items()}
        meta = SnapshotMeta(1, 1, ConfState(voters=frozenset(members)))
        snap = self.sm.snapshot()
        try:
            data = b"".join(wrap_snapshot(book, snap.chunks()))
        finally:
            snap.release()
        if isinstance(store, MemStore):
            store.mem = MemoryStorage.bootstrap(sorted(members), data)
            store.reader = store.mem
            return
        w = store.receive(meta)
        w.write(data)
        w.commit()
        store.save(HardState(term=1, vote=None, commit=1), [], Snapshot(meta))

    def _restore_from(self, meta: SnapshotMeta) -> None:
        assert self.store is not None
        members, state = unwrap_snapshot(self.store.snapshot_chunks(meta))
        self.sm.restore(state)
        self.members = members
        self.applied = self._snap_index = meta.index
        self._bytes_since_snap = 0

    async def stop(self) -> None:
        """Stop the node: pending operations fail with :class:`Stopped`."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._snapshotting is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._snapshotting
        for t in list(self._bg):
            t.cancel()
        with contextlib.suppress(Exception):
            await self.transport.close()
        err = Stopped(f"node {self.id} stopped")
        for idx, p in self._waiters():
            # Proposed, so it may still commit (on other nodes): unknown.
            _fail(
                p.fut,
                Timeout(f"node {self.id} stopped before entry {idx} applied; outcome unknown"),
            )
        self._displaced.clear()
        for pr in self._props:
            _fail(pr.fut, err)
        for uf in list(self._unproposed):
            _fail(uf, err)
        for batch in [*self._reads.values(), self._read_batch, self._lease_batch]:
            for rf in batch:
                _fail(rf, err)
        for _, wf in self._read_waiters:
            _fail(wf, err)
        for _, g in self._applied_waiters:
            _fail(g, err)
        self._pending.clear()
        self._props.clear()
        self._deadlines.clear()
        self._late.clear()
        self.events.close()
        if self.store is not None:
            self.store.close()
        log.info("node %s stopped", self.id)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the node task -------------------------------------------------------------------

    async def _ticker(self) -> None:
        iv = self.config.tick_interval
        while True:
            await self.clock.sleep(iv)
            now = self.clock.monotonic()
            late = now - self._last_tick - iv
            self._last_tick = now
            if late > 2 * iv:
                self._emit(EventType.HEARTBEAT_SLOW, late)
            self._ticks_due += 1
            self._wake.set()
            if self._deadlines or self._late:
                self._expire(now)

    async def _run(self) -> None:
        rn = self.rn
        assert rn is not None
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            try:
                self._drain()
                while rn.has_ready() and not self._stopping:
                    await self._handle_ready(rn.ready())
                    self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not wedge the node silently
                log.exception("node %s: unexpected error in the node task", self.id)
                self.crashed.set()
                raise

    def _drain(self) -> None:
        rn = self.rn
        assert rn is not None
        while self._ticks_due:
            self._ticks_due -= 1
            rn.tick()
        while self._inbox:
            m = self._inbox.popleft()
            try:
                rn.step(m)
            except RaftError as exc:
                log.debug("node %s: dropped %s from %s: %s", self.id, type(m).__name__, m.frm, exc)
        while self._ops:
            self._ops.popleft()()
        if self._props:
            self._propose_batch()

    async def _handle_ready(self, rd: Ready) -> None:
        rn = self.rn
        store = self.store
        assert rn is not None and store is not None
        send = self.transport.send
        if rd.must_sync:
            if rd.send_first:
                # A leader replicates while its own fsync runs (thesis
                # §10.2.1); nothing is stepped until the persist has finished.
                for m in rd.messages:
                    send(m)
            await self._persist(rd)
            if not rd.send_first:
                for m in rd.messages:
                    send(m)
        else:
            if rd.hard_state is not None:
                store.save(rd.hard_state, [], None)  # commit index only: no I/O
            if (
                rd.send_first
                and rd.committed_entries
                and not any(e.type is EntryType.CONF_CHANGE for e in rd.committed_entries)
            ):
                # Nothing to persist and nothing here depends on the apply:
                # answer the callers first and tell the followers after.  On
                # a loopback send the woken follower can take this CPU for
                # 0.1 ms, so let the callers' callbacks run before sending.
                # (Not with a membership change: its callers must see it in
                # force, which happens in advance().)
                settled = self._apply(rd.committed_entries)
                rd.committed_entries = []
                if settled and rd.messages:
                    await asyncio.sleep(0)
            for m in rd.messages:
                send(m)
        if rd.snapshot is not None:
            self._install(rd.snapshot)
        if rd.committed_entries:
            self._apply(rd.committed_entries)
        if rd.read_states:
            for rs in rd.read_states:
                for f in self._reads.pop(rs.ctx, ()):
                    if not f.done():
                        self._read_waiters.append((rs.index, f))
            self._wake_applied()
        self._soft_events(rd)
        rn.advance()
        self._after_apply()

    async def _persist(self, rd: Ready) -> None:
        store = self.store
        assert store is not None
        delay = 0.05
        while True:
            try:
                if store.threaded and (
                    len(rd.entries) > self.config.inline_sync_entries or rd.snapshot is not None
                ):
                    await asyncio.to_thread(
                        store.save, rd.hard_state, rd.entries, rd.snapshot, rd.sync_commit
                    )
                else:
                    store.save(rd.hard_state, rd.entries, rd.snapshot, rd.sync_commit)
            except StorageError as exc:
                if self._storage_ok:
                    self._storage_ok = False
                    log.error("node %s: storage failed, not taking writes: %s", self.id, exc)
                    self._emit(EventType.STORAGE_FAILED, str(exc))
                err = StorageFailed(str(exc))
                while self._props:
                    _fail(self._props.popleft().fut, err)
                await self.clock.sleep(delay)
                delay = min(delay * 2, 2.0)
                if self._stopping:
                    raise asyncio.CancelledError from exc
                continue
            if not self._storage_ok:
                self._storage_ok = True
                log.warning("node %s: storage recovered", self.id)
                self._emit(EventType.STORAGE_RECOVERED)
            return

    def _install(self, snap: Snapshot) -> None:
        """A snapshot from the leader replaced our log: restore from it."""
        self._restore_from(snap.meta)
        self._update_peers()
        outcome_unknown = Timeout("the entry was replaced by a snapshot; outcome unknown")
        for idx, p in list(self._waiters()):
            if idx <= snap.index:
                _fail(p.fut, outcome_unknown)
                self._unwait(p)
        self._emit(EventType.SNAPSHOT_INSTALLED, snap.index)
        self._wake_applied()

    def _apply(self, ents: list[Entry]) -> bool:
        """Apply ``ents``; True if a caller's future was settled."""
        settled = False
        for e in ents:
            ok, result = True, None
            if e.type is EntryType.CONF_CHANGE:
                self._apply_membership(e)
            elif e.data:
                try:
                    result = self.sm.apply(e.index, e.data)
                except Exception as exc:  # the state machine refused this entry
                    ok, result = False, exc
                self._bytes_since_snap += len(e.data)
            self.applied = e.index
            p = self._pending.pop(e.index, None)
            if p is not None:
                settled = True
                self._settle(p, e, ok, result)
            # Not only under p: the later waiter that set these aside may
            # have given up (and left) before this index was applied.
            if self._displaced:
                for q in self._displaced.pop(e.index, ()):
                    settled = True
                    self._settle(q, e, ok, result)
            if self._forwarding:
                self._recent[e.index] = (e.term, ok, result)
        while len(self._recent) > 4096:
            self._recent.popitem(last=False)
        self._emit(EventType.APPLY, self.applied)
        self._wake_applied()
        return settled

    @staticmethod
    def _settle(p: _Prop, e: Entry, ok: bool, result: Any) -> None:
        """Tell ``p``'s caller the outcome of the entry applied at its index."""
        if p.term != e.term:
            _fail(p.fut, Dropped(f"entry {e.index} was overwritten by term {e.term}"))
        elif ok:
            _resolve(p.fut, result)
        else:
            _fail(p.fut, _as_error(result))

    def _waiters(self) -> Iterator[tuple[int, _Prop]]:
        """Every (index, waiter) whose entry has not been applied yet."""
        yield from self._pending.items()
        for idx, ps in self._displaced.items():
            for p in ps:
                yield idx, p

    def _apply_membership(self, e: Entry) -> None:
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
                    self._emit(EventType.MEMBER_REMOVED, c.node_id)
            else:
                entry = dict(self.members.get(c.node_id, {}))
                entry.update(info.get(c.node_id, {}))
                new = c.node_id not in self.members
                self.members[c.node_id] = entry
                voter = c.type is ChangeType.ADD_VOTER
                # The core applies this change after us (advance()), so its
                # configuration is the one before it: a voter re-added to
                # record its own info (address_book.info_change) was one.
                promoted = (
                    voter and self.rn is not None and c.node_id not in self.rn.conf_state().voters
                )
                if new or promoted:
                    self._emit(
                        EventType.MEMBER_ADDED, c.node_id, voter=voter, addr=entry.get("addr")
                    )
        self._update_peers()

    def _wake_applied(self) -> None:
        a = self.applied
        if self._read_waiters:
            keep = []
            for idx, f in self._read_waiters:
                if idx <= a:
                    _resolve(f, idx)
                else:
                    keep.append((idx, f))
            self._read_waiters = keep
        if self._applied_waiters:
            keep2 = []
            for idx, g in self._applied_waiters:
                if idx <= a:
                    _resolve(g, None)
                else:
                    keep2.append((idx, g))
            self._applied_waiters = keep2

    def _soft_events(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            hs = rd.hard_state
            if hs.term != self._prev_term:
                self._prev_term = hs.term
                self._emit(EventType.TERM_CHANGE, hs.term)
            if hs.commit > self._prev_commit:
                self._prev_commit = hs.commit
                self._emit(EventType.COMMIT, hs.commit)
        if rd.soft_state is not None:
            ss = rd.soft_state
            if ss.role is not self._prev_role:
                self._prev_role = ss.role
                self._emit(EventType.STATE_CHANGE, ss.role.value)
            if ss.leader != self._prev_leader:
                self._prev_leader = ss.leader
                self._emit(EventType.LEADER_CHANGE, ss.leader)
                for f in self._leader_waiters:
                    _resolve(f, None)
                self._leader_waiters.clear()

    def _after_apply(self) -> None:
        if self._snapshotting is None and (
            self.applied - self._snap_index >= self.config.snapshot_entries
            or self._bytes_since_snap >= self.config.snapshot_bytes
        ):
            self._snapshotting = asyncio.create_task(self._take_snapshot())

    # -- snapshots ----------------------------------------------------------------------

    async def snapshot(self) -> int:
        """Take a snapshot now (unless one is running); returns its index."""
        self._check_running()
        if self._snapshotting is None:
            if self.applied <= self._snap_index:
                return self._snap_index
            self._snapshotting = asyncio.create_task(self._take_snapshot())
        task = self._snapshotting
        await asyncio.shield(task)
        return self._snap_index

    async def _take_snapshot(self) -> None:
        """Capture the state on the loop (cheap), write it in a thread while the
        node keeps applying, then adopt it and compact the log."""
        rn, store = self.rn, self.store
        assert rn is not None and store is not None
        try:
            index = self.applied
            conf = rn.conf_state()
            members = {k: dict(v) for k, v in self.members.items()}
            cap = self.sm.snapshot()
            writer = store.begin_snapshot(index, conf)

            def write() -> Any:
                try:
                    for chunk in wrap_snapshot(members, cap.chunks()):
                        writer.write(chunk)
                    return writer.commit()
                except BaseException:
                    writer.abort()
                    raise

            try:
                if store.threaded:
                    meta = await asyncio.to_thread(write)
                else:
                    meta = write()
            finally:
                cap.release()
            store.adopt_snapshot(meta)
            self._snap_index = max(self._snap_index, index)
            self._bytes_since_snap = 0
            store.compact(index)
            self._emit(EventType.SNAPSHOT_TAKEN, index)
            log.info("node %s: snapshot at %d", self.id, index)
        except (StorageError, OSError) as exc:
            log.error("node %s: snapshot failed: %s", self.id, exc)
        finally:
            self._snapshotting = None

    # -- TransportHandler ---------------------------------------------------------------

    def deliver(self, msg: Message) -> None:
        if self._stopping:
            return
        self._inbox.append(msg)
        self._wake.set()

    def unreachable(self, peer: str) -> None:
        if self.rn is not None and not self._stopping:
            self._ops.append(lambda: self.rn.report_unreachable(peer))  # type: ignore[union-attr]
            self._wake.set()

    def snapshot_source(self, msg: InstallSnapshot) -> Iterator[bytes]:
        assert self.store is not None
        return self.store.snapshot_chunks(msg.snapshot.meta)

    def snapshot_sink(self, msg: InstallSnapshot) -> SnapshotSink:
        assert self.store is not None
        return self.store.receive(msg.snapshot.meta)

    def snapshot_status(self, peer: str, ok: bool) -> None:
        if self.rn is not None and not self._stopping:
            self._ops.append(lambda: self.rn.report_snapshot(peer, not ok))  # type: ignore[union-attr]
            self._wake.set()

    async def handle_call(self, frm: str, payload: bytes, known_peer: bool) -> bytes:
        """Requests from other nodes (liferaft/runtime/peer_rpc.py):
        forwarded proposals and membership changes, and joins."""
        try:
            req = peer_rpc.decode_request(payload)
        except peer_rpc.RpcError as exc:
            raise ValueError(str(exc)) from None
        if isinstance(req, peer_rpc.Join):
            if not known_peer and req.node_id != frm:
                # A stranger may only ask to add the id it proved in the
                # handshake: a hijacked (relayed) joiner's connection must
                # not add whatever id and address the hijacker likes.  A
                # member forwarding a join to the leader is trusted.
                return peer_rpc.encode(
                    peer_rpc.Refused(
                        peer_rpc.Refusal.BAD_MEMBER,
                        f"a join from {frm!r} may only ask to add {frm!r}",
                    )
                )
            return await self._handle_join(req)
        if not known_peer:
            raise PermissionError(f"{frm} is not a member")
        if isinstance(req, peer_rpc.TransferLeader):
            return await admin.serve_transfer(self, req)
        try:
            if isinstance(req, peer_rpc.Propose):
                index, term = await self._propose_local(req.data, req.stamp)
            elif isinstance(req, peer_rpc.SetMemberInfo):
                if req.node_id != frm:  # a member sets its own entry only
                    raise BadMember(f"{frm!r} may not set the member info of {req.node_id!r}")
                index, term = await self._info_local(req)
            else:
                try:
                    cc = ConfChange.decode(req.change)
                except ConfChangeError as exc:
                    raise MembershipError(f"unreadable membership change: {exc}") from None
                index, term = await self._conf_local(cc)
        except (NotLeader, MembershipError, StorageFailed, BadMember, Stopped) as exc:
            # Refused before anything was proposed: the caller gets the same
            # typed error it would get here (not an "unknown outcome").  A
            # Stopped here never proposed (stop() answers a proposed one
            # Timeout): the caller retries through the next leader.
            return peer_rpc.encode(peer_rpc.refusal(exc))
        return peer_rpc.encode(peer_rpc.Accepted(index, term))

    # -- reads --------------------------------------------------------------------------

    async def read_index(self, timeout: float | None = None, *, lease: bool = False) -> int:
        """A linearizable read index (thesis §6.4), once this node has applied
        it: any read of local state after this returns is linearizable.
        ``lease=True`` accepts an answer from the leader's lease without a
        heartbeat round (§6.4.1; it assumes bounded clock drift), which only
        a cluster configured with ``lease_reads`` gives."""
        self._check_running()
        t = self.config.read_timeout if timeout is None else timeout
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        batch = self._lease_batch if lease else self._read_batch
        if not batch:
            self._ops.append(lambda: self._start_reads(lease))
            self._wake.set()
        batch.append(fut)
        return await self._bounded(fut, t, "read index not confirmed in time")

    def _start_reads(self, lease: bool) -> None:
        """One ReadIndex round for every caller that arrived since the last:
        each arrived before the round began, so the round's index serves all
        of them (etcd batches the same way).  One heartbeat round per batch,
        not per read."""
        if lease:
            batch = [f for f in self._lease_batch if not f.done()]
            self._lease_batch = []
        else:
            batch = [f for f in self._read_batch if not f.done()]
            self._read_batch = []
        if not batch:
            return
        rn = self.rn
        assert rn is not None
        # Rounds whose callers all gave up (a lost request never comes back).
        for c in [c for c, fs in self._reads.items() if all(f.done() for f in fs)]:
            del self._reads[c]
        ctx = b"%s:%d" % (self.id.encode(), next(self._ctx))
        try:
            rn.read_index(ctx, lease)
        except NotLeaderError as exc:
            for f in batch:
                _fail(f, NotLeader(str(exc), rn.leader))
            return
        self._reads[ctx] = batch

    async def read(
        self,
        fn: Callable[[], T],
        *,
        consistency: str = "linearizable",
        timeout: float | None = None,
    ) -> T:
        """Run ``fn`` on local state: ``linearizable`` (after a ReadIndex round),
        ``lease`` (served without the heartbeat round when the cluster allows
        lease reads, ``NodeConfig.lease_reads``, and the lease holds; else the
        same as linearizable) or ``stale`` (right away, from whatever this
        node has applied)."""
        if consistency == "stale":
            self._check_running()
            return fn()
        if consistency not in ("linearizable", "lease"):
            raise BadConfig(f"unknown consistency {consistency!r}")
        await self.read_index(timeout, lease=consistency == "lease")
        return fn()

    async def wait_applied(self, index: int, timeout: float | None = None) -> None:
        """Wait until this node has applied ``index``."""
        if index <= self.applied:
            return
        f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, f))
        t = self.config.read_timeout if timeout is None else timeout
        await self._bounded(f, t, f"index {index} not applied in time")

    # -- leadership ---------------------------------------------------------------------

    async def transfer_leadership(self, to: str | None = None, timeout: float | None = None) -> str:
        """Hand leadership to ``to`` (or the most caught-up voter); returns the
        new leader once it has taken over."""
        self._check_running()
        rn = self.rn
        assert rn is not None
        if rn.role is not Role.LEADER:
            raise NotLeader(f"{self.id} is not the leader", rn.leader)
        if to is None:
            st = rn.status()
            cands = [
                (p.match, nid)
                for nid, p in st.progress.items()
                if nid != self.id and nid in st.conf_state.voters
            ]
            if not cands:
                raise MembershipError("no other voter to transfer to")
            to = max(cands)[1]
        elif to != self.id and to not in rn.conf_state().voters:
            raise BadConfig(f"cannot transfer leadership to {to!r}: it is not a voter")
        target = to

        def start() -> None:
            try:
                rn.transfer_leader(target)
            except (NotLeaderError, ConfChangeError) as exc:
                log.info("node %s: transfer to %s refused: %s", self.id, target, exc)

        self._ops.append(start)
        self._wake.set()
        t = (
            timeout
            if timeout is not None
            else 2 * self.config.tick_interval * self.config.election_ticks
        )
        deadline = self.clock.monotonic() + t
        while rn.leader != target:
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise Timeout(f"leadership did not move to {target}")
            await self._wait_leader_change(left)
        return target

    # -- introspection ------------------------------------------------------------------

    def status(self) -> NodeStatus:
        rn = self.rn
        if rn is None:
            raise Stopped("node not started")
        st = rn.status()
        peers = {
            nid: PeerInfo(
                p.match, max(0, st.last_index - p.match), p.state.value, p.learner, p.recent_active
            )
            for nid, p in st.progress.items()
        }
        cs = st.conf_state
        return NodeStatus(
            id=self.id,
            role=st.role.value,
            term=st.term,
            leader=st.leader,
            commit_index=st.commit,
            applied_index=self.applied,
            last_log_index=st.last_index,
            snapshot_index=self._snap_index,
            members={k: dict(v) for k, v in self.members.items()},
            voters=sorted(cs.voters | cs.voters_outgoing),
            learners=sorted(cs.learners | cs.learners_next),
            peers=peers,
            storage_ok=self._storage_ok,
            bad_peer_addresses=dict(self.bad_peer_addresses),
        )

    @property
    def data_dir(self) -> str | os.PathLike[str] | None:
        """Where this node keeps its state (None for an in-memory store)."""
        return self._data_dir

    @property
    def is_leader(self) -> bool:
        return self.rn is not None and self.rn.role is Role.LEADER

    @property
    def leader(self) -> str | None:
        return self.rn.leader if self.rn is not None else None

    def _check_running(self) -> None:
        if self._stopping or not self._started:
            raise Stopped(f"node {self.id} is not running")

    def _emit(self, kind: EventType, value: Any = None, **detail: Any) -> None:
        term = self.rn.term if self.rn is not None else 0
        self.events.emit(Event(kind, value, term, detail))
