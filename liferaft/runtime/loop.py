"""The node's loop: the one owner of the Raft core and of the store.

Theory of operation
-------------------
Everything that touches the core (:class:`~liferaft.core.RawNode`) or the
store (the WAL, hard state and snapshot adoption) runs in one asyncio task,
:meth:`RaftLoop._run`, so neither needs locks and the order of events is the
order the task saw them.  Other tasks only queue work and wake it:

* messages from the transport (:meth:`RaftLoop.deliver`);
* operations on the core (:meth:`RaftLoop.call`: a ReadIndex round, a
  membership change, a leadership transfer, an unreachable peer);
* proposals, which the proposal tracker queues and the loop pumps into the
  core once per turn (``Hooks.propose``);
* storage operations (:meth:`RaftLoop.store_op`): snapshot capture,
  adoption and log compaction.  They run between two Readies, never while a
  persist is in flight, in the same single I/O thread the persists use:
  the WAL is not thread-safe, and before this loop owned it, compaction ran
  on the event loop while an append ran in a worker thread
  (tests/runtime/test_storage_owner.py);
* ticks, once per elapsed tick interval, from the ticker task.

Each turn runs the queued storage operations, steps the queued messages and
operations, proposes the queued writes, then handles each Ready in the
order of the core's contract (docs/core.md, docs/runtime.md):

1. persist: a small Ready (at most ``NodeConfig.inline_sync_entries`` new
   entries) on the loop's thread when it is all the node has to do, a
   bigger one, or any while other writes are in flight
   (``Hooks.writes_in_flight``), in the I/O thread so the loop keeps
   accepting work meanwhile: what arrives during one fsync is proposed
   together and costs the next one (group commit); a commit-index-only hard
   state is not synced.  A disk that refuses a write is retried with
   back-off, and nothing of that Ready is sent or applied until it is
   durable;
2. send: a follower or candidate after the persist (§5.1); a leader whose
   term and vote did not change (``Ready.send_first``) before it, so
   replication overlaps its own fsync (thesis §10.2.1);
3. install a snapshot, apply committed entries (``Hooks.apply``: the loop
   knows nothing of the state machine), hand read states on, emit the
   core's state changes, ``advance()``.

Nothing is stepped into the core while a persist runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from liferaft.core import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    MemoryStorage,
    Message,
    RaftError,
    RawNode,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
    StateChange,
)
from liferaft.storage import StorageError
from liferaft.transport.base import Transport

from . import write_trace
from ._futures import _fail, _resolve, bounded
from .clock import Clock, TimerHandle
from .config import NodeConfig
from .errors import NodeTimeoutError, StoppedError, StorageFailedError
from .events import EventType
from .metrics import PeerRtt
from .store import MemStore, Store

#: The most entry bytes a Ready may carry to be written and fsynced on the
#: loop's thread (beside NodeConfig.inline_sync_entries): a few entries may
#: still be megabytes, and writing them with the loop blocked stalls every
#: caller and the heartbeats, while the thread hop is small beside them.
INLINE_SYNC_BYTES = 64 << 10

log = logging.getLogger("liferaft.runtime")
T = TypeVar("T")


@dataclass
class Hooks:
    """What the loop hands on; the :class:`~liferaft.runtime.Node` wires its
    parts in here.  Each runs on the loop's task."""

    #: Propose the queued writes into the core (the proposal tracker).
    propose: Callable[[RawNode], None]
    #: Apply committed entries; True if a caller's future was settled.
    apply: Callable[[list[Entry]], bool]
    #: A snapshot from the leader replaced the log: restore from it.
    install: Callable[[Snapshot], None]
    #: ReadIndex answers (the read batcher).
    read_states: Callable[[list[ReadState]], None]
    #: After each Ready, once the core advanced past it, with the Ready's
    #: last committed (or installed) index, 0 if none: the configuration
    #: there is known, and a snapshot may be due.
    after_ready: Callable[[int], None]
    #: The disk refused a write: fail what waits to be proposed.
    storage_failed: Callable[[StorageFailedError], None]
    #: Once a tick, with the loop clock's time (proposal deadlines).
    tick: Callable[[float], None]
    #: How many writes wait for their apply on this node (proposed, not yet
    #: applied).  More of them than a Ready holds means other callers are in
    #: flight, and its fsync goes to the I/O thread (group commit, see
    #: :meth:`RaftLoop._persist`).
    writes_in_flight: Callable[[], int] = lambda: 0


class RaftLoop:
    """The node task: owns the :class:`RawNode` and the :class:`Store`."""

    def __init__(
        self,
        node_id: str,
        config: NodeConfig,
        clock: Clock,
        transport: Transport,
        emit: Callable[..., None],
    ) -> None:
        self.id = node_id
        self.config = config
        self.clock = clock
        self.transport = transport
        self._emit = emit
        self.rn: RawNode | None = None
        self.store: Store | None = None
        self._hooks: Hooks | None = None
        self._inbox: deque[Message] = deque()
        self.ops: deque[Callable[[], None]] = deque()
        self._store_ops: deque[tuple[Callable[[Store], Any], bool, asyncio.Future[Any]]] = deque()
        self._ticks_due = 0
        # The lazy commit broadcast (RawNode.commit_pending): one timer at a
        # time, armed when the node task goes idle with a commit pending;
        # when it fires, the node task flushes (if nothing carried it since).
        self._flush_timer: TimerHandle | None = None
        self._flush_due = False
        self._wake = asyncio.Event()
        #: Wake the node task (a proposal was queued).  The event's own
        #: ``set``, not a method around it: every write calls it.
        self.wake: Callable[[], None] = self._wake.set
        #: Set if the node task died of an unexpected error: the node no
        #: longer runs Raft, and its process should exit (liferaft serve does).
        self.crashed = asyncio.Event()
        self.storage_ok = True
        self.started = False
        self.stopping = False
        self._tasks: list[asyncio.Task[Any]] = []
        #: Tasks of the node's parts (forwards, background promotions),
        #: cancelled when the loop closes.
        self.background: set[asyncio.Task[Any]] = set()
        # One thread for the store: whatever runs off the event loop still
        # runs one call at a time.
        self._io = concurrent.futures.ThreadPoolExecutor(1, f"liferaft-io-{node_id}")
        self._io_busy: concurrent.futures.Future[Any] | None = None
        self._store_lock = asyncio.Lock()
        self._runners: set[asyncio.Task[None]] = set()
        self._store_closed = False
        self._last_tick = 0.0
        self._prev_term = 0
        self._prev_commit = 0
        self._prev_role: Role | None = None
        self._prev_leader: str | None = None
        self._logged_role = Role.FOLLOWER  # a node starts as one
        self._leader_waiters: list[asyncio.Future[None]] = []
        #: Heartbeat round trips, when the node keeps metrics (else no cost).
        self.peer_rtt: PeerRtt | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def bootstrap(self, store: Store, conf_voters: list[str], snapshot: bytes) -> None:
        """Write a brand-new cluster's first state (before the loop runs):
        a snapshot at index 1 holding ``snapshot`` and the voters."""
        meta = SnapshotMeta(1, 1, ConfState(voters=frozenset(conf_voters)))
        if isinstance(store, MemStore):
            store.mem = MemoryStorage.bootstrap(sorted(conf_voters), snapshot)
            store.reader = store.mem
            return
        w = store.receive(meta)
        w.write(snapshot)
        w.commit()
        store.save(HardState(term=1, vote=None, commit=1), [], Snapshot(meta))

    def attach(self, rn: RawNode, store: Store, hooks: Hooks) -> None:
        """Own ``rn`` and ``store`` from now on; work may be queued."""
        self.rn, self.store, self._hooks = rn, store, hooks
        self._prev_term = rn.term

    def run(self) -> None:
        """Start the node task and the ticker."""
        self._last_tick = self.clock.monotonic()
        self._tasks = [  # the node task first (fail() cancels it alone)
            asyncio.create_task(self._run(), name=f"liferaft-node-{self.id}"),
            asyncio.create_task(self._ticker(), name=f"liferaft-ticker-{self.id}"),
        ]

    async def close(self) -> None:
        """Stop the tasks, wait for the I/O thread, run what storage
        operations are left (nothing else runs now), cancel the parts' tasks."""
        self.stopping = True
        self._wake.set()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self._io_idle()
        await self._run_store_ops()
        for t in list(self.background):
            t.cancel()

    def close_store(self) -> None:
        """Close the store: last, once every part is done with it."""
        self._store_closed = True
        if self.store is not None:
            self.store.close()
        self._io.shutdown(wait=False)

    @property
    def running(self) -> bool:
        """Started and not stopping."""
        return self.started and not self.stopping

    def check_running(self) -> None:
        """:class:`StoppedError` unless the node runs."""
        if not self.running:
            raise StoppedError(f"node {self.id} is not running")

    def fail(self, exc: BaseException) -> None:
        """A part of the node failed for good (the state machine raised out
        of ``apply_batch``): stop running Raft, as a bug in the node task
        does, and let the process exit (``crashed``).  The ticker goes on,
        as after such a bug: it times out the callers waiting on this node,
        whose writes would otherwise never be answered."""
        log.error("node %s: stopping: %s", self.id, exc, exc_info=exc)
        self.crashed.set()
        if self._tasks:
            self._tasks[0].cancel()  # the node task (see run())

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """A task of one of the node's parts, cancelled when the loop closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    # -- work for the loop ------------------------------------------------------------

    def deliver(self, msg: Message) -> None:
        """A message from a peer, stepped on the next turn."""
        if self.stopping:
            return
        rtt = self.peer_rtt
        if rtt is not None and type(msg) is HeartbeatResponse:
            rtt.answered(msg.frm, self.clock.monotonic())
        t = write_trace.tracer
        if t is not None:
            t.received(msg)
        self._inbox.append(msg)
        self._wake.set()

    def call(self, op: Callable[[], None]) -> None:
        """Run ``op`` on the loop's task (it may use :attr:`rn`)."""
        self.ops.append(op)
        self._wake.set()

    def store_op(self, fn: Callable[[Store], T], *, thread: bool = False) -> asyncio.Future[T]:
        """Run ``fn(store)`` between two Readies, never beside a persist:
        on the loop's thread, or in the I/O thread when ``thread`` and the
        store is threaded.  Once the loop has closed, runs it at once
        (nothing else touches the store then)."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._store_ops.append((fn, thread, fut))
        if self.stopping or not self._tasks or self._tasks[0].done():
            # No node task to run it (stopped, or died of a bug).
            # Kept apart from background: close() must not cancel it.
            task = asyncio.get_running_loop().create_task(self._run_store_ops())
            self._runners.add(task)
            task.add_done_callback(self._runners.discard)
        else:
            self._wake.set()
        return fut

    async def wait_leader_change(self, t: float) -> None:
        """Wait at most ``t`` seconds for the leader this node knows to change."""
        f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._leader_waiters.append(f)
        try:
            await bounded(self.clock, f, t, "")
        except NodeTimeoutError:
            pass
        finally:
            if f in self._leader_waiters:
                self._leader_waiters.remove(f)

    # -- the node task -------------------------------------------------------------------

    async def _ticker(self) -> None:
        iv = self.config.tick_interval
        hooks = self._hooks
        assert hooks is not None
        while True:
            await self.clock.sleep(iv)
            now = self.clock.monotonic()
            late = now - self._last_tick - iv
            self._last_tick = now
            if late > 2 * iv:
                self._emit(EventType.HEARTBEAT_SLOW, late)
            self._ticks_due += 1
            self._wake.set()
            # Not on the node task: a node stuck on a failing disk still
            # times its callers out.
            hooks.tick(now)

    async def _run(self) -> None:
        rn = self.rn
        assert rn is not None
        while not self.stopping:
            await self._wake.wait()
            self._wake.clear()
            try:
                while True:
                    if self._store_ops:
                        await self._run_store_ops()
                    self._drain()
                    if self.stopping:
                        break
                    if not rn.has_ready():
                        if not rn.commit_pending:
                            break
                        if self.config.commit_flush_delay > 0:
                            self._arm_flush()
                            break
                        rn.flush_commit()
                        continue
                    await self._handle_ready(rn.ready())
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not wedge the node silently
                log.exception("node %s: unexpected error in the node task", self.id)
                self.crashed.set()
                raise

    def _arm_flush(self) -> None:
        """Flush the pending commit after ``commit_flush_delay`` unless a
        write carries it first.  Once per idle period, not per write."""
        if self._flush_timer is None:
            # On the node's clock, like every timeout (a ManualClock test
            # does not depend on how fast real time passes).
            self._flush_timer = self.clock.call_later(
                self.config.commit_flush_delay, self._flush_fired
            )

    def _flush_fired(self) -> None:
        self._flush_timer = None
        self._flush_due = True
        self._wake.set()

    def _drain(self) -> None:
        rn, hooks = self.rn, self._hooks
        assert rn is not None and hooks is not None
        while self._ticks_due:
            self._ticks_due -= 1
            rn.tick()
        if self._flush_due:
            self._flush_due = False
            rn.flush_commit()  # sends nothing if appends carried it meanwhile
        while self._inbox:
            m = self._inbox.popleft()
            try:
                rn.step(m)
            except RaftError as exc:
                log.debug("node %s: dropped %s from %s: %s", self.id, type(m).__name__, m.frm, exc)
        while self.ops:
            self.ops.popleft()()
        hooks.propose(rn)

    async def _handle_ready(self, rd: Ready) -> None:
        rn, store, hooks = self.rn, self.store, self._hooks
        assert rn is not None and store is not None and hooks is not None
        send = self.transport.send
        rtt = self.peer_rtt
        if rtt is not None and rd.messages:
            now = self.clock.monotonic()
            for m in rd.messages:
                if type(m) is Heartbeat:
                    rtt.sent(m.to, now)
        t = write_trace.tracer
        if t is not None:
            t.committed(rd.committed_entries)
        if rd.committed_entries:
            last = rd.committed_entries[-1].index
        else:
            last = rd.snapshot.index if rd.snapshot is not None else 0
        if rd.must_sync:
            if rd.send_first:
                # A leader replicates while its own fsync runs (thesis
                # §10.2.1); nothing is stepped until the persist has finished.
                if t is not None:
                    t.sending(rd.messages)
                for m in rd.messages:
                    send(m)
            await self._persist(rd)
            if not rd.send_first:
                if t is not None:
                    t.sending(rd.messages)
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
                settled = hooks.apply(rd.committed_entries)
                if t is not None:
                    t.committed(rd.committed_entries, "apply")
                rd.committed_entries = []
                if settled and rd.messages:
                    await asyncio.sleep(0)
            if t is not None:
                t.sending(rd.messages)
            for m in rd.messages:
                send(m)
        if rd.snapshot is not None:
            hooks.install(rd.snapshot)
        if rd.committed_entries:
            hooks.apply(rd.committed_entries)
            if t is not None:
                t.committed(rd.committed_entries, "apply")
        if rd.read_states:
            hooks.read_states(rd.read_states)
        self._soft_events(rd)
        rn.advance()
        hooks.after_ready(last)

    async def _persist(self, rd: Ready) -> None:
        store, hooks = self.store, self._hooks
        assert store is not None and hooks is not None
        delay = 0.05
        t = write_trace.tracer
        if t is not None:
            t.saving(rd.entries, False)
        while True:
            try:
                if store.threaded and (
                    len(rd.entries) > self.config.inline_sync_entries
                    or sum(len(e.data) for e in rd.entries) > INLINE_SYNC_BYTES
                    or rd.snapshot is not None
                    or (rd.entries and hooks.writes_in_flight() > len(rd.entries))
                ):
                    # Off the loop, a front end that hands the loop one call
                    # per wakeup (grpcio's asyncio server accepts one RPC per
                    # completion) still gets its calls read while the disk
                    # works, and they share the next fsync.  Alone, a write
                    # is synced inline: the thread hop would be most of its
                    # latency (NodeConfig.inline_sync_entries).
                    await self._in_io_thread(
                        store.save, rd.hard_state, rd.entries, rd.snapshot, rd.sync_commit
                    )
                else:
                    store.save(rd.hard_state, rd.entries, rd.snapshot, rd.sync_commit)
            except StorageError as exc:
                if self.storage_ok:
                    self.storage_ok = False
                    log.error("node %s: storage failed, not taking writes: %s", self.id, exc)
                    self._emit(EventType.STORAGE_FAILED, str(exc))
                hooks.storage_failed(StorageFailedError(str(exc)))
                await self.clock.sleep(delay)
                delay = min(delay * 2, 2.0)
                if self.stopping:
                    raise asyncio.CancelledError from exc
                continue
            if not self.storage_ok:
                self.storage_ok = True
                log.warning("node %s: storage recovered", self.id)
                self._emit(EventType.STORAGE_RECOVERED)
            if t is not None:
                t.saving(rd.entries, True)
            return

    def _submit_io(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` in the store's one I/O thread.  Cancelling the
        returned future leaves the call running; :meth:`close` waits for it."""
        cf = self._io.submit(fn, *args)
        self._io_busy = cf
        return asyncio.wrap_future(cf)

    async def _in_io_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._submit_io(fn, *args)

    async def _io_idle(self) -> None:
        cf = self._io_busy
        if cf is not None and not cf.done():
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(cf)

    async def _run_store_ops(self) -> None:
        async with self._store_lock:  # at close, a late op may start a second runner
            while self._store_ops:
                fn, thread, fut = self._store_ops.popleft()
                store = self.store
                if fut.done():
                    continue
                if store is None or self._store_closed:
                    _fail(fut, StoppedError(f"node {self.id} is not running"))
                    continue
                if thread and store.threaded:
                    io = self._submit_io(fn, store)
                    io.add_done_callback(functools.partial(_copy_outcome, dst=fut))
                    # Shielded: if the loop is cancelled meanwhile, the caller
                    # still learns what the call did.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(io)
                    continue
                try:
                    result = fn(store)
                except Exception as exc:  # the caller decides what a failure means
                    _fail(fut, exc)
                else:
                    _resolve(fut, result)

    def _soft_events(self, rd: Ready) -> None:
        # The core says why role, term or leader changed (Ready.changes);
        # the events carry the last reason, and each change is logged: a
        # failover must leave lines in the log (docs/operations.md, "Logs").
        reason = ""
        for c in rd.changes:
            reason = c.reason
            self._log_change(c)
        if rd.hard_state is not None:
            hs = rd.hard_state
            if hs.term != self._prev_term:
                self._prev_term = hs.term
                self._emit(EventType.TERM_CHANGE, hs.term, reason=reason)
            if hs.commit > self._prev_commit:
                self._prev_commit = hs.commit
                self._emit(EventType.COMMIT, hs.commit)
        if rd.soft_state is not None:
            ss = rd.soft_state
            if ss.role is not self._prev_role:
                self._prev_role = ss.role
                self._emit(EventType.STATE_CHANGE, ss.role.value, reason=reason)
            if ss.leader != self._prev_leader:
                self._prev_leader = ss.leader
                self._emit(EventType.LEADER_CHANGE, ss.leader, reason=reason)
                for f in self._leader_waiters:
                    _resolve(f, None)
                self._leader_waiters.clear()

    def _log_change(self, c: StateChange) -> None:
        """One INFO line per change, its fields also as structured data
        (``extra``: the JSON log format shows them as keys)."""
        became = "became " if c.role is not self._logged_role else ""
        self._logged_role = c.role
        log.info(
            "node %s: %s%s in term %d, leader %s (%s)",
            self.id, became, c.role.value, c.term, c.leader or "unknown", c.reason,
            extra={"term": c.term, "role": c.role.value, "leader": c.leader or "",
                   "reason": c.reason},
        )  # fmt: skip


def _copy_outcome(src: asyncio.Future[Any], dst: asyncio.Future[Any]) -> None:
    if src.cancelled():
        _fail(dst, StoppedError("the storage operation was cancelled"))
    elif src.exception() is not None:
        _fail(dst, src.exception())  # type: ignore[arg-type]
    else:
        _resolve(dst, src.result())
