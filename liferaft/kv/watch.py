"""The watch hub: every change of a key range, exactly once, in revision order.

Theory of operation (docs/kv.md, "Watch (hub)")
------------------------------------------------
The applier calls :meth:`WatchHub.publish` after each applied batch with the
events of the revisions it produced, in revision order, on the event loop
(:meth:`WatchHub.publish_threadsafe` from an apply thread).  ``publish``
puts each event in the queue of every watcher whose range holds its key
(:mod:`liferaft.kv.watch_index` finds them without scanning every watcher)
and returns; it never waits for a watcher.

A watcher (:meth:`WatchHub.watch`) starts at a revision, by default the
next one.  One that starts in the past is registered *first*, so that
every live event from then on is buffered in its queue, and then reads the
past from the store (:class:`~liferaft.kv.watch_types.WatchHistory`), whose
read is taken after the registration and so covers every revision
published before it.  When that replay ends at revision L, the buffered
events at or below L are the ones the replay already gave and are dropped
(the *seam*); the rest follow.  So nothing is missed or given twice.

A watcher's queue is bounded in events and bytes, and holds whole
revisions only.  When a revision does not fit, the watcher leaves the hub
at once (its queue stops growing) and, once it has handed out what it had
queued, raises :class:`~liferaft.kv.watch_types.WatchCutOffError` with the
first revision it did not queue; watching again from there misses nothing
and repeats nothing.

Idle watchers get a :class:`~liferaft.kv.watch_types.Progress` item (the
revision they are complete up to) every ``progress_interval`` seconds, from
:meth:`WatchHub.tick` (one timer for the hub, :meth:`WatchHub.run_progress`),
on an injectable clock.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from types import TracebackType

from .errors import KVBadRequestError, KVUnavailableError
from .watch_index import WatchIndex
from .watch_types import (
    CompactedError,
    KeyRange,
    Progress,
    WatchCutOffError,
    WatchEvent,
    WatchHistory,
    WatchItem,
    WatchLimitError,
)

__all__ = ["WatchHub", "Watcher"]

# How many items a consumer takes in a row before __anext__ yields to the
# loop once, so a watcher with a long backlog cannot starve the node.
_STREAK = 256


def _cost(item: WatchItem) -> int:
    return item.cost() if isinstance(item, WatchEvent) else 0


# One revision's events for one group of watchers, and their queue cost.
_Chunk = tuple[int, list[WatchEvent], int]


def _chunks(evs: list[WatchEvent]) -> list[_Chunk]:
    """``evs`` (in revision order) cut into whole revisions: a queue takes
    a revision whole or not at all, so a cut-off falls between revisions."""
    out: list[_Chunk] = []
    for ev in evs:
        if out and out[-1][0] == ev.revision:
            rev, group, size = out[-1]
            group.append(ev)
            out[-1] = (rev, group, size + ev.cost())
        else:
            out.append((ev.revision, [ev], ev.cost()))
    return out


class _Sink:
    """One watcher's queue: written by the hub, read by its :class:`Watcher`."""

    __slots__ = (
        "__weakref__", "bytes", "error", "hub", "items", "key_range", "last_activity",
        "live_lost", "max_bytes", "max_events", "next_rev", "prev_kv", "replaying", "wake",
    )

    def __init__(
        self, hub: WatchHub, key_range: KeyRange, prev_kv: bool, start: int, replaying: bool,
        max_events: int, max_bytes: int, now: float,
    ) -> None:
        self.hub = hub
        self.key_range = key_range
        self.prev_kv = prev_kv
        # Live: every event below next_rev is queued or taken.  Replaying:
        # the start revision (the seam sets it when the replay ends).
        self.next_rev = start
        self.replaying = replaying
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.items: deque[WatchItem] = deque()
        self.bytes = 0
        self.last_activity = now
        self.live_lost: str | None = None  # cut off while replaying: why
        self.error: BaseException | None = None
        self.wake = asyncio.Event()

    def offer(self, chunks: list[_Chunk], now: float) -> None:
        """Queue whole revisions (in order), or cut off at the first that
        does not fit."""
        for rev, evs, size in chunks:
            if rev < self.next_rev and not self.replaying:
                # Only a watcher that starts in the future (or a replay
                # that read ahead of the hub) gets here: its start filters.
                continue
            if self.items and (
                len(self.items) + len(evs) > self.max_events or self.bytes + size > self.max_bytes
            ):
                self.cut_off("slow")
                return
            self.items.extend(evs)
            self.bytes += size
            if not self.replaying:
                self.next_rev = rev + 1
        self.last_activity = now
        self.wake.set()

    def cut_off(self, reason: str) -> None:
        """Leave the hub; end with a WatchCutOffError once what was
        delivered is handed out."""
        self.hub._detach(self)
        if self.replaying:
            # The replay still gives every past event; the watcher ends
            # where it ends (Watcher._end_replay), without the live ones.
            self.items.clear()
            self.bytes = 0
            self.live_lost = reason
            return
        # What is queued stays (it is bounded) and is handed out first:
        # every revision below next_rev, and none from it on.
        self.error = WatchCutOffError(self.next_rev, reason)
        self.wake.set()


class Watcher:
    """An async iterator of :data:`~liferaft.kv.watch_types.WatchItem`
    (events, and progress notifications when idle).

    Ends with :class:`~liferaft.kv.watch_types.WatchCutOffError` (resume
    from its ``resume_revision``) or
    :class:`~liferaft.kv.watch_types.CompactedError`, or stops after
    :meth:`close`.  Closing it, cancelling the task that waits on it, or
    dropping the last reference to it unregisters it from the hub.
    """

    def __init__(
        self, sink: _Sink, start: int, replay: Iterator[WatchEvent | None] | None
    ) -> None:
        self._sink = sink
        self._start = start
        self._replay = replay
        self._replay_last = 0
        self._done = False
        self._streak = 0
        # Detach from the hub when this object goes, even if never closed
        # (a consumer that breaks out of `async for` and drops it).
        self._finalizer = weakref.finalize(self, sink.hub._detach, sink)

    @property
    def key_range(self) -> KeyRange:
        """The keys watched."""
        return self._sink.key_range

    @property
    def start_revision(self) -> int:
        """The first revision this watcher may deliver."""
        return self._start

    @property
    def replaying(self) -> bool:
        """True while it still reads the past from the store."""
        return self._replay is not None

    @property
    def queued(self) -> tuple[int, int]:
        """(items, bytes) held in its queue now."""
        return len(self._sink.items), self._sink.bytes

    def ready(self, limit: int = _STREAK) -> list[WatchItem]:
        """Up to ``limit`` items available now, without waiting (a front
        end writes them as one chunk).  Raises the watcher's error once
        everything before it is handed out; [] when none is ready or the
        watcher is closed."""
        out: list[WatchItem] = []
        if self._done:
            return out
        sink = self._sink
        if self._replay is not None:
            self._pull_replay(out, limit)
        if self._replay is None:
            while sink.items and len(out) < limit:
                item = sink.items.popleft()
                sink.bytes -= _cost(item)
                out.append(item)
        if not out and sink.error is not None and self._replay is None:
            err = sink.error
            self.close()
            raise err
        return out

    def _pull_replay(self, out: list[WatchItem], limit: int) -> None:
        assert self._replay is not None
        sink = self._sink
        try:
            while len(out) < limit:
                ev = next(self._replay)
                if ev is None:
                    # The history paused between two chunks: hand the loop
                    # back before reading on (watch_history.py).
                    return
                if not sink.prev_kv:
                    ev = ev.without_prev()
                out.append(ev)
                self._replay_last = ev.revision
        except StopIteration:
            self._end_replay()
        except Exception as exc:  # the store's (CompactedError, I/O): end with it
            self._replay = None
            sink.replaying = False
            sink.hub._detach(sink)
            sink.items.clear()
            sink.bytes = 0
            sink.error = exc

    def _end_replay(self) -> None:
        """The seam: drop the live events the replay already gave."""
        sink = self._sink
        self._replay = None
        sink.next_rev = max(self._start, self._replay_last + 1)
        while sink.items and sink.items[0].revision < sink.next_rev:
            sink.bytes -= _cost(sink.items.popleft())
        if sink.items:
            sink.next_rev = sink.items[-1].revision + 1
        sink.replaying = False
        if sink.live_lost is not None:
            # Cut off during the replay: it gave every event below next_rev.
            sink.error = WatchCutOffError(sink.next_rev, sink.live_lost)

    def cut_off(self, reason: str) -> None:
        """End it from the server's side: what is queued is still handed out,
        then :class:`~liferaft.kv.watch_types.WatchCutOffError` (``reason``)
        says where to resume.  For a front end that is shutting down."""
        if not self._done and self._sink.error is None:
            self._sink.cut_off(reason)

    def close(self) -> None:
        """Stop watching: unregister now, end the iteration, free the queue."""
        self._done = True
        replay, self._replay = self._replay, None
        if replay is not None and hasattr(replay, "close"):
            replay.close()  # a generator: end the store's read (and its transaction) now
        self._finalizer()
        self._sink.items.clear()
        self._sink.bytes = 0
        self._sink.wake.set()

    async def wait_ready(self) -> bool:
        """Wait until :meth:`ready` has something to hand out, or an error
        to raise: True; False once the watcher is closed.  For a front end
        that takes items in batches rather than with ``async for``."""
        sink = self._sink
        while not self._done:
            if self._replay is not None:
                # More replay to read: yield to the loop once first, since
                # a replay that paused may have handed out nothing.
                await self._wait(asyncio.sleep(0))
                return not self._done
            if sink.items or sink.error is not None:
                return True
            sink.wake.clear()
            await self._wait(sink.wake.wait())
        return False

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> WatchItem:
        if self._streak >= _STREAK:
            self._streak = 0
            await self._wait(asyncio.sleep(0))
        while True:
            got = self.ready(1)
            if got:
                self._streak += 1
                return got[0]
            if self._done:
                raise StopAsyncIteration
            self._streak = 0
            if self._replay is not None:  # the replay paused: read on after a yield
                await self._wait(asyncio.sleep(0))
                continue
            self._sink.wake.clear()
            await self._wait(self._sink.wake.wait())

    async def _wait(self, aw: Awaitable[object]) -> None:
        try:
            await aw
        except asyncio.CancelledError:
            self.close()
            raise

    async def __aenter__(self) -> Watcher:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class WatchHub:
    """Every watcher of one node, and the events the node applied.

    ``history`` is the store's past (None: no past is kept, so only
    watchers from now on); ``revision`` the store's revision when the hub
    starts.  All methods run on the event loop except
    :meth:`publish_threadsafe`.
    """

    def __init__(
        self,
        history: WatchHistory | None,
        revision: int,
        *,
        progress_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_events: int = 4096,
        max_bytes: int = 1 << 20,
        max_watchers: int = 10_000,
    ) -> None:
        # A NaN or infinite interval is no interval: a timer cannot sleep on it.
        finite = 0 < progress_interval < math.inf
        if not finite or max_events < 1 or max_bytes < 1 or max_watchers < 1:
            raise ValueError("progress_interval and the limits must be positive (and finite)")
        self._history = history
        self._revision = revision
        self.progress_interval = progress_interval
        self._clock = clock
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_watchers = max_watchers
        self._index: WatchIndex[_Sink] = WatchIndex()
        self._sinks: set[_Sink] = set()
        self._closed = False
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    @property
    def revision(self) -> int:
        """The last revision published."""
        return self._revision

    @property
    def watcher_count(self) -> int:
        """Watchers registered (replaying or live)."""
        return len(self._sinks)

    @property
    def range_count(self) -> int:
        """Distinct key ranges watched."""
        return len(self._index)

    def watch(
        self,
        key_range: KeyRange,
        *,
        start_revision: int | None = None,
        prev_kv: bool = False,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> Watcher:
        """A watcher of ``key_range`` from ``start_revision`` (None or 0:
        the next revision).  Raises CompactedError if that is below the
        compact revision, WatchLimitError at ``max_watchers``.  Per-watch
        limits may only lower the hub's."""
        if start_revision is not None and (
            not isinstance(start_revision, int) or isinstance(start_revision, bool)
            or start_revision < 0
        ):
            raise KVBadRequestError(
                f"start_revision must be a revision (an integer >= 0), not {start_revision!r}"
            )
        if self._closed:
            raise KVUnavailableError("stopping", "the node is stopping")
        if len(self._sinks) >= self.max_watchers:
            raise WatchLimitError(f"this node already serves {self.max_watchers} watchers")
        start = start_revision or self._revision + 1
        replaying = start <= self._revision
        if replaying:
            h = self._history
            compact = self._revision + 1 if h is None else h.compact_revision
            if start < compact:
                raise CompactedError(start, compact)
        sink = _Sink(
            self, key_range, prev_kv, start, replaying,
            min(max_events or self.max_events, self.max_events),
            min(max_bytes or self.max_bytes, self.max_bytes),
            self._clock(),
        )
        # Register before the store is read: the seam depends on it.
        self._index.add(key_range, sink)
        self._sinks.add(sink)
        replay = None
        if replaying:
            assert self._history is not None
            try:
                replay = iter(self._history.history(start, key_range))
            except BaseException:
                self._detach(sink)
                raise
        return Watcher(sink, start, replay)

    def _detach(self, sink: _Sink) -> None:
        if sink in self._sinks:
            self._sinks.discard(sink)
            self._index.remove(sink.key_range, sink)

    def publish(self, events: Sequence[WatchEvent], revision: int | None = None) -> None:
        """Deliver the events of the revisions one applied batch produced.

        On the event loop only.  ``events`` are in revision order, all
        above :attr:`revision`, and hold every event of each of their
        revisions (a revision is never split across calls).  ``revision``
        is the store's revision after the batch, if above the last event's.
        A ValueError (nothing delivered) names a call that breaks this."""
        loop = asyncio.get_running_loop()  # a RuntimeError from an apply thread
        if self._loop is None:
            self._loop = loop
        last = self._revision
        for ev in events:
            if ev.revision <= self._revision or ev.revision < last:
                raise ValueError(
                    f"event at revision {ev.revision} out of order (hub at {self._revision}, "
                    f"previous event {last})"
                )
            last = ev.revision
        if revision is not None:
            if revision < last:
                raise ValueError(f"revision {revision} is below the batch's last event {last}")
            last = revision
        self._revision = last
        if not self._sinks or not events:
            return
        buckets: dict[int, tuple[set[_Sink], list[WatchEvent]]] = {}
        for ev in events:
            for group in self._index.groups(ev.key):
                b = buckets.get(id(group))
                if b is None:
                    buckets[id(group)] = (group, [ev])
                else:
                    b[1].append(ev)
        now = self._clock()
        for group, evs in buckets.values():
            # Split and size once per group, not once per watcher.
            full: list[_Chunk] | None = None
            bare: list[_Chunk] | None = None
            for sink in list(group):  # a cut-off leaves the group
                if sink.prev_kv:
                    if full is None:
                        full = _chunks(evs)
                    sink.offer(full, now)
                else:
                    if bare is None:
                        bare = _chunks([e.without_prev() for e in evs])
                    sink.offer(bare, now)

    def publish_threadsafe(self, events: Sequence[WatchEvent], revision: int | None = None) -> None:
        """:meth:`publish` from another thread (an off-loop apply): queued
        on the hub's loop, in call order.  An invalid batch is reported by
        the loop's exception handler."""
        self._threadsafe(self.publish, list(events), revision)

    def restored_threadsafe(self, revision: int) -> None:
        """:meth:`restored` from another thread, queued after the batches
        published before it."""
        self._threadsafe(self.restored, revision)

    def _threadsafe(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is None:
            raise RuntimeError("the watch hub has no event loop yet: build it on the loop")
        if asyncio._get_running_loop() is loop:
            # An apply on the loop itself (NodeConfig.inline_apply_entries):
            # the same queue, in the same order, without waking the loop
            # through its self-pipe (a syscall and an extra turn per batch).
            loop.call_soon(fn, *args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def tick(self) -> int:
        """Send a progress notification to every live watcher idle for a
        ``progress_interval``; returns how many got one."""
        now = self._clock()
        sent = 0
        for sink in self._sinks:
            if sink.replaying or sink.items or now - sink.last_activity < self.progress_interval:
                continue
            sink.items.append(Progress(max(self._revision, sink.next_rev - 1)))
            sink.last_activity = now
            sink.wake.set()
            sent += 1
        return sent

    async def run_progress(self) -> None:
        """Call :meth:`tick` a few times per interval, until cancelled."""
        while True:
            await asyncio.sleep(self.progress_interval / 4)
            self.tick()

    def restored(self, revision: int) -> None:
        """The store was replaced by a snapshot at ``revision``: cut every
        watcher off (reason "restored"), to resume from the new store."""
        for sink in list(self._sinks):
            sink.cut_off("restored")
        self._revision = revision

    def close(self) -> None:
        """The node is stopping: cut every watcher off ("stopping") and
        refuse new ones."""
        self._closed = True
        for sink in list(self._sinks):
            sink.cut_off("stopping")
