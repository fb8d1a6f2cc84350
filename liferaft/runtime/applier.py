"""The apply boundary: the one owner of the state machine.

Theory of operation
-------------------
:class:`Applier` hands committed entries to the state machine, in log order
and exactly once, and keeps the applied index.  It works in batches (the
committed entries of one Ready): the state machine's part first, then the
runtime's (membership changes, outcomes for the callers, reads waiting for
those indexes, the apply event stream).  The durable state-machine contract
(docs/statemachine.md, "The durable contract") is kept here:

* **Exactly once, across restarts too.** ``applied`` is the state machine's
  applied index.  At start a durable state machine (``applied_index()``)
  that already holds the node's snapshot is not restored: ``applied``
  starts at its durable index, and the entries the core re-delivers up to
  it go to membership only, never again to the state machine.  The core
  itself starts at the snapshot, as always, so the membership changes after
  it are replayed into the configuration (liferaft/runtime/node.py).
* **The entry format.** A cluster's entries are raw (format 1, every
  cluster made before format 2) or wrapped in the runtime envelope that
  carries the leader's time (format 2; liferaft/runtime/entry_format.py).
  The format is a property of the cluster, learned from the snapshot header
  (liferaft/runtime/store.py), so every member reads the log alike; an
  entry whose envelope cannot be read is refused on every node alike.
* **Plain, batch and off-loop state machines.** A plain one gets
  ``apply(index, data, leader_time=...)`` per entry (the old
  ``apply(index, data)`` still works for one release), on the event loop,
  the fast path.  One with ``apply_batch`` gets every index of the batch
  (entries that carry nothing for it, no-ops and membership changes, with
  empty data, so its durable index is exact).  With ``apply_off_loop`` the
  batches run in a worker thread, one at a time and in order, through a
  queue that also orders snapshot installs and captures; the loop hands a
  batch over and goes on stepping and heartbeating meanwhile.
* **Apply events.** Each batch is published, in order, to the subscribers of
  the apply stream (liferaft/runtime/apply_events.py), and an installed
  snapshot as :class:`~liferaft.runtime.apply_events.Restored`.

It also restores the state machine: from the store's snapshot at start
and from one the leader sent (:meth:`Applier.install`; the waiters it covers
learn ``NodeTimeoutError``, outcome unknown).  Taking snapshots is
liferaft/runtime/snapshotter.py's, which asks :meth:`Applier.capture_point`
for a point where the applied index and the configuration agree.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from liferaft.core import (
    ConfChange,
    ConfChangeError,
    ConfState,
    Entry,
    EntryType,
    RawNode,
    ReadState,
    Snapshot,
    SnapshotMeta,
    apply_conf_change,
)

from . import address_book
from .apply_events import AppliedBatch, ApplyFeed, Restored
from .checkpoint import checkpoint_index, lost_store, split_marker
from .config import NodeConfig
from .entry_format import (
    ENTRY_FORMAT_ENVELOPED,
    ENTRY_FORMAT_RAW,
    ENVELOPE_VERSION,
    HEADER_SIZE,
    read_header,
    split,
    unwrap,
)
from .errors import BadConfigError, StoppedError
from .events import EventType
from .loop import RaftLoop
from .membership import Membership
from .proposals import ProposalTracker
from .reads import ReadBatcher
from .statemachine import (
    ApplyEntry,
    SettleRequest,
    StateMachine,
    applies_off_loop,
    durable_applied_index,
    takes_leader_time,
)
from .store import Store, unwrap_snapshot, wrap_snapshot

log = logging.getLogger("liferaft.runtime")

_NOTHING = ApplyEntry(0, b"", 0.0)

#: The most entry bytes an off-loop state machine's batch may hold to run on
#: the loop (NodeConfig.inline_apply_entries): 16 values of 1 MiB cost LMDB
#: about 0.1 s on the 2-core bench machine, a stall of every client and of
#: the heartbeats; a lone 64 KiB value about what a 100-byte one does
#: (bench/kv_apply_cost.py, BENCHMARKS.md).
INLINE_APPLY_BYTES = 64 << 10

#: A state machine with ``settle()`` (docs/statemachine.md) is settled at
#: once, not after NodeConfig.settle_delay, when the inline batches left
#: pending hold this many entries or bytes: an LMDB transaction keeps every
#: page it dirtied in memory until its commit.
SETTLE_ENTRIES = 4096
SETTLE_BYTES = 4 << 20


class StateMachineFailedError(RuntimeError):
    """``apply_batch`` raised (or broke its contract): the state machine is
    broken, the node stops, and no proposal of the batch is settled."""


@dataclass(eq=False)
class _Job:
    """One item of the off-loop queue: a batch, a snapshot install, or a
    capture request, in the order the loop handed them over."""

    ents: list[Entry] = field(default_factory=list)
    snap: Snapshot | None = None
    #: A hold (see :meth:`Applier.hold`): set when the worker parks here,
    #: and the future it waits on until the holder releases it.
    reached: asyncio.Future[None] | None = None
    released: asyncio.Future[None] | None = None
    #: The configuration once the core advanced past this batch.
    conf: ConfState | None = None
    #: Applied on the loop already (:meth:`Applier._apply_inline`): only
    #: its configuration is left to note, in :meth:`Applier.after_ready`.
    inline: bool = False


class Applier:
    """Applies entries and snapshots to the state machine."""

    def __init__(
        self,
        sm: StateMachine,
        loop: RaftLoop,
        tracker: ProposalTracker,
        membership: Membership,
        reads: ReadBatcher,
        config: NodeConfig,
        emit: Callable[..., None],
        feed: ApplyFeed,
    ) -> None:
        self.sm = sm
        self._loop = loop
        self._tracker = tracker
        self._membership = membership
        self._config = config
        self._emit = emit
        self._reads = reads
        self.feed = feed
        self.id = loop.id
        self.applied = 0
        self.snap_index = 0
        self.bytes_since_snap = 0
        #: The cluster's entry format; a new cluster's is 2, a snapshot says otherwise.
        self.entry_format = ENTRY_FORMAT_ENVELOPED
        #: The configuration as of ``conf_index`` (see :meth:`capture_point`).
        self.conf = ConfState()
        self.conf_index = 0
        self._takes_time = takes_leader_time(sm.apply)
        if not self._takes_time:
            warnings.warn(
                f"{type(sm).__name__}.apply(index, data) has no leader_time keyword; "
                "the old signature works until 0.2.0 (docs/statemachine.md)",
                DeprecationWarning,
                stacklevel=3,
            )
        batch = getattr(sm, "apply_batch", None)
        self._batch: Callable[[Sequence[ApplyEntry]], list[Any]] | None = (
            batch if callable(batch) else None
        )
        self.off_loop = applies_off_loop(sm)
        may = getattr(sm, "may_apply_inline", None)
        #: The state machine's word on a batch's cost (see :meth:`_inline_ok`).
        self._may_inline: Callable[[Sequence[ApplyEntry]], bool] | None = (
            may if callable(may) else None
        )
        #: Called with the seconds each apply_batch call took (the metrics'
        #: apply histogram), from whichever thread ran it.
        self.batch_seconds: Callable[[float], None] | None = None
        #: A membership change or a snapshot was handed over since the last
        #: Ready: the configuration may have changed (read it from the core).
        self._conf_moved = False
        self._jobs: deque[_Job] = deque()
        self._last_job: _Job | None = None
        self._worker: asyncio.Task[None] | None = None
        self._closing = False
        #: The worker died (the state machine broke): nothing queued behind
        #: the broken batch may ever run, or the store would skip it.
        self._failed = False
        settle, bind = getattr(sm, "settle", None), getattr(sm, "bind_settle", None)
        #: The state machine's ``settle`` (deferred commits of inline
        #: batches, docs/statemachine.md), and its ``bind_settle``, called
        #: on the first inline batch with :meth:`request_settle`.
        self._settle_sm: Callable[[], object] | None = (
            settle if self.off_loop and callable(settle) and callable(bind) else None
        )
        self._bind_settle: Callable[[SettleRequest], object] | None = (
            bind if self._settle_sm is not None else None
        )
        #: The loop the state machine was bound on (None: nothing deferred yet).
        self._settle_loop: asyncio.AbstractEventLoop | None = None
        self._settle_timer: asyncio.TimerHandle | None = None
        #: Entries and bytes of the inline batches applied since the last settle.
        self._unsettled = 0
        self._unsettled_bytes = 0

    # -- entries ---------------------------------------------------------------------

    def apply(self, ents: list[Entry]) -> bool:
        """Apply ``ents`` (a Ready's committed entries); True if a caller's
        future was settled now (never for an off-loop state machine)."""
        if self.off_loop:
            if self._inline_ok(ents):
                prepared = self._prepare(ents)
                if self._may_inline is None or self._cheap(prepared[1]):
                    return self._apply_inline(ents, prepared)
            job = _Job(list(ents))
            self._jobs.append(job)
            self._last_job = job
            self._kick()
            return False
        if self._batch is None:
            return self._apply_plain(ents)
        fresh, items, preset = self._prepare(ents)
        return self._finish(ents, fresh, items, self._call_on_loop(items), preset)

    def _inline_ok(self, ents: list[Entry]) -> bool:
        """May this batch of an off-loop state machine run on the loop?  Only
        a small one, when nothing is queued or running in the worker (so log
        order holds, and a hold or a snapshot install is never overtaken),
        and no write but this batch's own waits here: a write alone pays two
        thread hops for nothing (NodeConfig.inline_apply_entries).  Under
        load the worker keeps the loop free to read and batch.

        Few entries is not cheap work: one may carry a large value, or a
        range delete over 100 000 keys (over half a second in LMDB), which on
        the loop would stall every client and the heartbeats.  So the batch
        must also hold at most :data:`INLINE_APPLY_BYTES`, and a state
        machine with ``may_apply_inline`` is asked too (in :meth:`apply`)."""
        if len(ents) > self._config.inline_apply_entries or self._jobs:
            return False
        if self._failed or self._closing:
            return False
        w = self._worker
        if w is not None and not w.done():
            return False
        if self._tracker.in_flight() > len(ents):
            return False
        return sum(len(e.data) for e in ents) <= INLINE_APPLY_BYTES

    def _cheap(self, items: list[ApplyEntry]) -> bool:
        """The state machine's ``may_apply_inline``; a hint only, so one that
        raises (on an entry it cannot read, say) sends the batch to the
        worker, where ``apply_batch`` answers for it: a committed entry must
        never stop the node through a hint."""
        assert self._may_inline is not None
        try:
            return bool(self._may_inline(items))
        except Exception:  # noqa: BLE001 - any failure of the hint means "no"
            log.warning("node %s: may_apply_inline raised; the batch goes to the worker",
                        self.id, exc_info=True)  # fmt: skip
            return False

    def _apply_inline(
        self,
        ents: list[Entry],
        prepared: tuple[list[Entry], list[ApplyEntry], dict[int, tuple[bool, Any]]],
    ) -> bool:
        """One batch of an off-loop state machine, on the loop (see
        :meth:`_inline_ok`), ``prepared`` by :meth:`_prepare`.  It keeps
        every rule of the worker: the same :meth:`_finish`, and a failure
        stops the node as the worker's does, with nothing behind it run."""
        fresh, items, preset = prepared
        if self._bind_settle is not None and self._settle_loop is None and items:
            self._bind()
        settled = self._finish(ents, fresh, items, self._call_on_loop(items), preset)
        # As a worker's job: the core has not advanced past this batch
        # yet, so after_ready reads the configuration once it has.
        self._last_job = _Job(list(ents), inline=True)
        if self._settle_loop is not None and items:
            self._unsettled += len(items)
            self._unsettled_bytes += sum(len(i.data) for i in items)
            if self._unsettled >= SETTLE_ENTRIES or self._unsettled_bytes >= SETTLE_BYTES:
                self._settle_in_task()
            elif self._settle_timer is None:
                self._settle_timer = self._settle_loop.call_later(
                    self._config.settle_delay, self._settle_fired
                )
        return settled

    # -- deferred commits (docs/statemachine.md, "settle") ------------------------------

    def _bind(self) -> None:
        """Before the first inline batch: the state machine may defer from now
        on, and is given :meth:`request_settle` (in the node task)."""
        assert self._bind_settle is not None
        try:
            self._bind_settle(self.request_settle)
        except Exception as exc:  # noqa: BLE001 - the state machine's failure
            self._failed = True
            err = StateMachineFailedError(f"bind_settle failed: {exc!r}")
            self._loop.fail(err)
            raise asyncio.CancelledError from err
        self._settle_loop = asyncio.get_running_loop()

    def _settle_now(self) -> None:
        """Commit what inline batches left pending (on the loop).  Called even
        when nothing is counted as pending: a no-op for the state machine
        then, and no read can ever be left behind a batch the count missed.
        :class:`StateMachineFailedError` if it raises (the node must stop)."""
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        if self._settle_loop is None or self._settle_sm is None:
            return  # nothing was ever deferred
        self._unsettled = self._unsettled_bytes = 0
        try:
            self._settle_sm()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            self._failed = True
            raise StateMachineFailedError(f"settle failed: {exc!r}") from exc

    def _settle_in_task(self) -> None:
        """:meth:`_settle_now` in the node task: a failure ends it here, as
        :meth:`_call_on_loop` does for a failed batch."""
        try:
            self._settle_now()
        except StateMachineFailedError as exc:
            self._loop.fail(exc)
            raise asyncio.CancelledError from exc

    def _settle_fired(self) -> None:
        self._settle_timer = None
        try:
            self._settle_now()
        except StateMachineFailedError as exc:
            self._loop.fail(exc)

    def request_settle(self) -> concurrent.futures.Future[None]:
        """Thread-safe: have the loop settle the state machine; the future is
        done when it has (failed if the settle failed or the loop is gone).
        What the state machine's reads from other threads call first."""
        cf: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            if not cf.set_running_or_notify_cancel():
                return
            if self._failed:
                # The state machine broke (its open batches are gone from
                # it): a read must not go on as if it were settled.
                cf.set_exception(StoppedError(f"node {self.id}: the state machine failed"))
                return
            try:
                self._settle_now()
            except StateMachineFailedError as exc:
                self._loop.fail(exc)
                cf.set_exception(exc)
            else:
                cf.set_result(None)

        loop = self._settle_loop
        try:
            if loop is None:
                raise RuntimeError("never bound")
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed
            cf.set_exception(StoppedError(f"node {self.id}: stopped; the state machine "
                                          "cannot be settled"))  # fmt: skip
        return cf

    def _call_on_loop(self, items: list[ApplyEntry]) -> list[Any]:
        """:meth:`_call_batch` on the loop's own task (an inline batch, or a
        batch state machine that never leaves the loop)."""
        try:
            return self._call_batch(items)
        except StateMachineFailedError as exc:
            self._failed = True
            # The worker's door (logged as the state machine's failure, not
            # as a bug of the node task; ``crashed``), which cancels the
            # node task: this is that task, so end it here, before the rest
            # of this Ready (sends, advance) runs past the broken batch.
            self._loop.fail(exc)
            raise asyncio.CancelledError from exc
        except BaseException:
            self._failed = True
            raise

    def _apply_plain(self, ents: list[Entry]) -> bool:
        """The fast path: a plain state machine on the loop, entry by entry.

        Every committed entry of every node runs this loop, so it is kept
        lean (issue 13's side-by-side bench): the envelope's common case is
        read inline (:func:`entry_format.read_header`, a C call), and the
        outcome lists the tracker needs are built only when some caller
        waits here (on a follower, as a rule, none does)."""
        fmt = self.entry_format
        enveloped = fmt != ENTRY_FORMAT_RAW
        sm_apply, takes_time = self.sm.apply, self._takes_time
        published: list[tuple[ApplyEntry, Any]] | None = [] if self.feed.active else None
        tracked = self._tracker.watching()
        conf = self.conf
        applied = first = self.applied
        fresh: list[Entry] = []
        results: list[tuple[bool, Any]] = []
        n = 0
        conf_change = EntryType.CONF_CHANGE
        for e in ents:
            if e.type is conf_change:
                conf = self._change_members(e, conf)
            if e.index <= applied:
                continue  # the store holds it already: membership only
            ok, result = True, None
            d = e.data
            if d and e.type is not conf_change:
                t, data = 0.0, d
                try:
                    if enveloped:
                        if d[0] == ENVELOPE_VERSION and len(d) >= HEADER_SIZE:
                            t = read_header(d)[1]
                            if t - t == 0.0:  # finite: inf - inf and nan - nan are nan
                                data = d[HEADER_SIZE:]
                            else:
                                t, data = split(d)  # refuses it, with the reason
                        else:
                            t, data = split(d)
                    if takes_time:
                        result = sm_apply(e.index, data, leader_time=t)
                    else:
                        result = sm_apply(e.index, data)  # type: ignore[call-arg]
                except Exception as exc:  # the state machine refused this entry
                    ok, result = False, exc
                n += len(d)
                if published is not None:
                    published.append((ApplyEntry(e.index, data, t), result))
            applied = e.index
            if tracked:
                fresh.append(e)
                results.append((ok, result))
        self.applied = applied
        self.bytes_since_snap += n
        if published:
            self.feed.publish(
                AppliedBatch(
                    next(e.index for e in ents if e.index > first),
                    applied,
                    tuple(a for a, _ in published),
                    tuple(r for _, r in published),
                )
            )
        return self._settle(fresh, results)

    def _prepare(
        self, ents: list[Entry]
    ) -> tuple[list[Entry], list[ApplyEntry], dict[int, tuple[bool, Any]]]:
        """For a batch state machine: the entries past ``applied``, what it
        is handed for each, and the outcomes the runtime decides itself."""
        fresh: list[Entry] = []
        items: list[ApplyEntry] = []
        preset: dict[int, tuple[bool, Any]] = {}
        fmt = self.entry_format
        for e in ents:
            if e.index <= self.applied:
                continue
            fresh.append(e)
            if e.type is EntryType.CONF_CHANGE or not e.data:
                items.append(ApplyEntry(e.index, b"", 0.0))
                preset[e.index] = (True, None)
                continue
            try:
                t, data = unwrap(fmt, e.data)
            except ValueError as exc:  # refused alike on every node
                items.append(ApplyEntry(e.index, b"", 0.0))
                preset[e.index] = (False, exc)
                continue
            items.append(ApplyEntry(e.index, data, t))
        return fresh, items, preset

    def _call_batch(self, items: list[ApplyEntry]) -> list[Any]:
        """The state machine's part (maybe in a worker thread)."""
        if not items:
            return []
        assert self._batch is not None
        t0 = time.perf_counter()
        try:
            results = self._batch(items)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            # A CancelledError too: apply_batch is synchronous, so it is
            # never this task's own cancellation but the state machine's
            # (a cancelled future it waited on).  Passed on as one, it ended
            # the worker (or, on the loop, the node task) with no sign, and
            # the next batch was applied over the gap.
            raise StateMachineFailedError(f"apply_batch failed: {exc!r}") from exc
        if self.batch_seconds is not None:
            # Off the loop, the loop's own apply hook times only the hand-off.
            self.batch_seconds(time.perf_counter() - t0)
        if not isinstance(results, list) or len(results) != len(items):
            raise StateMachineFailedError(
                f"apply_batch returned {type(results).__name__} for {len(items)} entries, "
                "not one result per entry"
            )
        return results

    def _finish(
        self,
        ents: list[Entry],
        fresh: list[Entry],
        items: list[ApplyEntry],
        raw: list[Any],
        preset: dict[int, tuple[bool, Any]],
    ) -> bool:
        """The runtime's part of a batch state machine's batch, on the loop."""
        conf = self.conf
        for e in ents:
            if e.type is EntryType.CONF_CHANGE:
                conf = self._change_members(e, conf)
        results: list[tuple[bool, Any]] = []
        shown: list[tuple[ApplyEntry, Any]] = []
        for e, item, r in zip(fresh, items, raw, strict=True):
            outcome = preset.get(e.index)
            if outcome is None:
                outcome = (False, r) if isinstance(r, BaseException) else (True, r)
                self.bytes_since_snap += len(item.data)
                shown.append((item, r))
            results.append(outcome)
        if fresh:
            self.applied = max(self.applied, fresh[-1].index)
        if shown and self.feed.active:
            self.feed.publish(
                AppliedBatch(
                    fresh[0].index,
                    fresh[-1].index,
                    tuple(a for a, _ in shown),
                    tuple(r for _, r in shown),
                )
            )
        return self._settle(fresh, results)

    def _change_members(self, e: Entry, before: ConfState) -> ConfState:
        """The member table follows the change in ``e``, told the
        configuration before it; returns the one after it.  Not the core's
        own: off the loop, the core has advanced past this batch already."""
        self._membership.apply_change(e, before)
        self._conf_moved = True  # after_ready reads the core's configuration
        try:
            return apply_conf_change(before, ConfChange.decode(e.data))
        except ConfChangeError:  # ignored alike by the core
            return before

    def _settle(self, fresh: list[Entry], results: list[tuple[bool, Any]]) -> bool:
        settled = self._tracker.settle_applied(fresh, results) if fresh else False
        self._emit(EventType.APPLY, self.applied)
        self._reads.wake_applied(self.applied)
        return settled

    def read_states(self, states: list[ReadState]) -> None:
        """ReadIndex answers: served once this node has applied their index."""
        self._reads.on_read_states(states, self.applied)

    def after_ready(self, rn: RawNode, last_index: int) -> None:
        """The core advanced past a Ready whose last committed or installed
        index was ``last_index`` (0: none): note the configuration there."""
        if self._last_job is not None:
            job = self._last_job
            if job.snap is not None or any(e.type is EntryType.CONF_CHANGE for e in job.ents):
                job.conf = rn.conf_state()
            self._last_job = None
            if job.inline:
                self._conf_after(job)
        elif not self.off_loop and last_index:
            if self._conf_moved:
                self.conf = rn.conf_state()
                self._conf_moved = False
            self.conf_index = last_index

    def capture_point(self) -> tuple[int, ConfState] | None:
        """(applied index, its configuration) if a snapshot may be taken of
        the state machine now; None while the configuration known for the
        applied index is not (a durable store ahead of the core after a
        restart, until the core catches up)."""
        if self.conf_index != self.applied:
            return None
        return self.applied, self.conf

    # -- the off-loop worker ------------------------------------------------------------

    def _kick(self) -> None:
        if self._failed or self._closing:
            return
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"liferaft-apply-{self.id}"
            )

    async def _work(self) -> None:
        try:
            while self._jobs and not self._closing:
                # What the loop applied before this job is committed first:
                # the worker's own transaction, a hold's flush and an
                # install all need the store as the loop left it.
                self._settle_now()
                job = self._jobs.popleft()
                if job.reached is not None and job.released is not None:
                    # A batch boundary: the state machine is left alone
                    # until the holder releases it.
                    if not job.reached.done():
                        job.reached.set_result(None)
                    await job.released
                    continue
                if job.snap is not None:
                    snap = job.snap

                    def install(store: Store, snap: Snapshot = snap) -> None:
                        self._install_now(store, snap)

                    await self._loop.store_op(install)
                    continue
                job = self._merge_queued(job)
                fresh, items, preset = self._prepare(job.ents)
                raw = await asyncio.to_thread(self._call_batch, items) if items else []
                self._finish(job.ents, fresh, items, raw, preset)
                self._conf_after(job)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failed = True
            self._drop_holds()
            self._jobs.clear()
            self._loop.fail(exc)

    def _conf_after(self, job: _Job) -> None:
        """The configuration as of the end of ``job``, applied."""
        if job.ents:
            # None: no change or snapshot in this batch, the
            # configuration is the one before it.
            if job.conf is not None:
                self.conf = job.conf
            self.conf_index = job.ents[-1].index

    def _merge_queued(self, job: _Job) -> _Job:
        """``job`` and the batches queued right behind it, as one batch: the
        Readies that committed while the last batch ran cost one
        ``apply_batch`` (one LMDB transaction and its fsyncs for liferaft-kv)
        instead of one each (group commit).  A snapshot or a hold ends the
        run, and so does ``max_batch``: jobs are merged whole while the sum
        stays within it (one Ready's own batch may be larger).  Every queued
        job's ``conf`` is known here: the loop sets it in the same turn it
        hands the job over."""
        jobs = self._jobs
        if not jobs or jobs[0].snap is not None or jobs[0].reached is not None:
            return job
        ents = list(job.ents)
        conf = job.conf
        limit = self._config.max_batch
        while jobs:
            nxt = jobs[0]
            if nxt.snap is not None or nxt.reached is not None:
                break
            if len(ents) + len(nxt.ents) > limit:
                break  # whole jobs only: the next one starts the next batch
            jobs.popleft()
            ents.extend(nxt.ents)
            if nxt.conf is not None:
                conf = nxt.conf  # None: no change in that batch
        return _Job(ents, conf=conf)

    async def hold(self) -> asyncio.Future[None]:
        """Off the loop: return once the worker is parked between two
        batches; it stays there (what the loop hands over meanwhile waits)
        until the returned future is resolved.  Cancelled if the node stops."""
        if self._failed or self._closing:
            raise StoppedError(f"node {self.id}: the state machine is not applying")
        loop = asyncio.get_running_loop()
        job = _Job(reached=loop.create_future(), released=loop.create_future())
        self._jobs.append(job)
        self._kick()
        assert job.reached is not None and job.released is not None
        await job.reached
        return job.released

    def _drop_holds(self) -> None:
        for job in self._jobs:
            for f in (job.reached, job.released):
                if f is not None and not f.done():
                    f.cancel()

    async def close(self) -> None:
        """The node stops: let a batch in flight finish (a thread cannot be
        cancelled), run no more."""
        self._closing = True
        self._drop_holds()
        w = self._worker
        if w is not None and not w.done():
            await asyncio.wait([w])  # its failure, if any, the loop reported
        self._jobs.clear()
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        if not self._failed:
            try:
                self._settle_now()
            except StateMachineFailedError as exc:
                # Stopping anyway; the log still holds what it lost.
                log.error("node %s: %s", self.id, exc)
        self.feed.close()

    # -- snapshots in -------------------------------------------------------------------

    def initial_snapshot(self, members: dict[str, dict[str, Any]]) -> bytes:
        """The payload of a brand-new cluster's first snapshot: ``members``,
        this build's entry format, and the state machine as it is now."""
        snap = self.sm.snapshot()
        try:
            return b"".join(wrap_snapshot(members, snap.chunks(), self.entry_format))
        finally:
            snap.release()

    def check_durable(self, store: Store) -> None:
        """Refuse a durable state machine that holds more than this node's
        log: its store was written with another log (the data dir was wiped
        or replaced, or a brand-new cluster is started on an old store).
        Its applied index would be trusted, and the entries of this log up
        to it never handed to it, so this replica would silently differ."""
        durable = durable_applied_index(self.sm)
        if not durable:
            return
        last = 0 if store.is_empty() else store.reader.last_index()
        if durable > last and self._holds_checkpoint(store):
            # Installed from a leader's checkpoint at ``durable``, then
            # stopped before the log caught up to it: the leader's log
            # supplies the entries up to it (to membership only).
            log.info(
                "node %s: state machine at index %d from a checkpoint; log ends at %d",
                self.id, durable, last,
            )  # fmt: skip
            return
        if durable > last:
            raise BadConfigError(
                f"node {self.id}: the state machine holds index {durable} but this node's "
                f"log ends at {last}: its store belongs to another log (move it away, "
                "or start on the data dir it was written with)"
            )

    @staticmethod
    def _holds_checkpoint(store: Store) -> bool:
        """True if the node's snapshot is a checkpoint received from a leader."""
        meta = store.snapshot_meta()
        if not meta.index:
            return False
        header, _ = unwrap_snapshot(store.snapshot_chunks(meta))
        return header.checkpoint

    def restore_from(self, store: Store, meta: SnapshotMeta) -> None:
        """From the snapshot ``meta``: the member table, the entry format and
        (unless a durable state machine holds it already) the state.

        A deferred snapshot (liferaft/runtime/checkpoint.py) holds no state:
        the store must hold its index already.  A checkpoint (a copy of a
        leader's store) leaves ``applied`` at the copy's own index, at or
        past the snapshot's; the entries the core delivers up to it then go
        to membership only, as after a restart with the store ahead."""
        header, state = unwrap_snapshot(store.snapshot_chunks(meta))
        deferred, state = split_marker(state)
        durable = durable_applied_index(self.sm)
        if durable is not None and durable >= meta.index:
            # The store holds the snapshot and more: resume after it, never
            # re-applying (the durable contract).
            log.info(
                "node %s: state machine holds index %d (snapshot %d): not restored",
                self.id, durable, meta.index,
            )  # fmt: skip
            applied = durable
        elif deferred is not None:
            raise BadConfigError(lost_store(self.id, self.sm, meta.index, durable))
        else:
            self.sm.restore(state)
            applied = (
                checkpoint_index(self.id, self.sm, meta.index) if header.checkpoint else meta.index
            )
            if self.feed.active:
                self.feed.publish(Restored(applied))
        self._membership.members = header.members
        self.entry_format = header.entry_format
        self._membership.context_version = (
            address_book.LEGACY_CONTEXT
            if header.entry_format == ENTRY_FORMAT_RAW
            else address_book.CONTEXT_VERSION
        )
        self.applied = applied
        self.snap_index = meta.index
        self.conf, self.conf_index = meta.conf_state, meta.index
        self.bytes_since_snap = 0

    def install(self, snap: Snapshot) -> None:
        """A snapshot from the leader replaced our log: restore from it."""
        if self.off_loop:
            job = _Job(snap=snap)
            self._jobs.append(job)
            self._last_job = None
            self._kick()
            return
        store = self._loop.store
        assert store is not None
        self._conf_moved = True
        self._install_now(store, snap)

    def _install_now(self, store: Store, snap: Snapshot) -> None:
        self.restore_from(store, snap.meta)
        self._membership.update_peers()
        # A checkpoint may have carried the state past the snapshot: the
        # waiters up to the new applied index cannot learn their results.
        self._tracker.fail_covered(self.applied)
        self._emit(EventType.SNAPSHOT_INSTALLED, snap.index)
        self._reads.wake_applied(self.applied)
