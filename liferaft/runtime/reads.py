"""The read batcher: linearizable reads by ReadIndex (thesis §6.4).

Theory of operation
-------------------
Readers that arrive together share one ReadIndex round: the first of a
batch queues a round on the loop (:meth:`ReadBatcher.read_index`), and when
the loop runs it, every caller that arrived meanwhile is in it.  Each
arrived before the round began, so the round's index serves all of them:
one heartbeat broadcast per batch, not per read.  While a round is in
flight, the next batch waits for its answer and then starts (as etcd's
linearizable read loop does): a front end that hands the loop one call per
wakeup (grpcio's asyncio server) would otherwise start a round per read.
A round not answered within a heartbeat interval (lost with a leader
change, or slow) no longer holds the next one back: checked as a reader
arrives and once a tick (:meth:`ReadBatcher.tick`).  No reader is left
to its own timeout by a lost round (the core forgets its rounds when the
leader changes; a follower's request or its answer may be dropped): an
answer also serves the readers of every older round still unanswered,
and a round unanswered for an election timeout is given up, its readers
joining the next one.  Both are safe because each of those readers
arrived before the later round began.  Lease reads
(§6.4.1) batch apart, since their rounds may skip the heartbeats.  A round
is known by its ``ctx``; its answer (a ReadState) turns its callers into
waiters for that index, served once this node has applied it
(:meth:`ReadBatcher.wake_applied`, called after every apply).

A plain class: the loop calls it, it queues work on the loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from liferaft.core import NotLeaderError as CoreNotLeaderError
from liferaft.core import ReadState

from ._futures import _fail, _resolve, bounded
from .clock import Clock
from .errors import NotLeaderError
from .loop import RaftLoop

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class _Round:
    """A ReadIndex round in flight: its number (rounds begin in this
    order), kind, start time and the readers it serves."""

    seq: int
    lease: bool
    started: float
    callers: list[asyncio.Future[int]]


class ReadBatcher:
    """The batches, the rounds in flight by ctx, read and applied waiters."""

    def __init__(self, loop: RaftLoop, clock: Clock) -> None:
        self._loop = loop
        self._clock = clock
        self._batch: list[asyncio.Future[int]] = []
        self._lease_batch: list[asyncio.Future[int]] = []
        #: The rounds in flight by ctx, in the order they began.
        self._rounds: dict[bytes, _Round] = {}
        self._read_waiters: list[tuple[int, asyncio.Future[int]]] = []
        self._applied_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._ctx = itertools.count(1)
        #: Kinds whose next round is queued on the loop (it takes the batch).
        self._queued: set[bool] = set()
        cfg = loop.config
        #: How long a round in flight holds the next one back.
        self._patience = cfg.tick_interval * cfg.heartbeat_ticks
        #: How long a round may go unanswered before it is taken for lost
        #: (a leader change forgets the rounds in flight; a follower's
        #: request or its answer may be dropped) and its readers join the
        #: next round: an election timeout, after which a lost leader has
        #: been replaced.
        self._retry = cfg.tick_interval * cfg.election_ticks

    async def read_index(self, t: float, *, lease: bool) -> int:
        """An index safe to read at, once this node has applied it."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        (self._lease_batch if lease else self._batch).append(fut)
        self._next_round(lease)
        return await bounded(self._clock, fut, t, "read index not confirmed in time")

    def _next_round(self, lease: bool) -> None:
        """Queue a round for the waiting batch, unless one is queued or a
        recent one is in flight (its answer queues the next).  One at a time
        measured best (bench/kv_etcd_api.py: two in flight or no limit read
        less, over gRPC and the JSON gateway alike)."""
        if lease in self._queued:
            return
        now = self._clock.monotonic()
        patience = self._patience
        if any(r.lease is lease and now - r.started < patience for r in self._rounds.values()):
            return
        self._queued.add(lease)
        self._loop.call(lambda: self._start_round(lease))

    def tick(self, now: float) -> None:
        """Once a tick: the readers of a round taken for lost join the next
        one (they arrived before it begins, so its index serves them too),
        and a batch held back by rounds that were not answered in time gets
        its own."""
        rn = self._loop.rn
        # Retried only once a leader is known again: until then they wait
        # (and time out as before) rather than fail for want of one.
        if rn is not None and rn.leader is not None:
            for ctx, r in list(self._rounds.items()):
                if now - r.started >= self._retry:
                    del self._rounds[ctx]
                    batch = self._lease_batch if r.lease else self._batch
                    batch.extend(f for f in r.callers if not f.done())
        for lease, batch in ((False, self._batch), (True, self._lease_batch)):
            if batch:
                self._next_round(lease)

    def _start_round(self, lease: bool) -> None:
        """One ReadIndex round for every caller that arrived since the last
        (on the loop's task)."""
        self._queued.discard(lease)
        if lease:
            batch = [f for f in self._lease_batch if not f.done()]
            self._lease_batch = []
        else:
            batch = [f for f in self._batch if not f.done()]
            self._batch = []
        if not batch:
            return
        rn = self._loop.rn
        assert rn is not None
        # Rounds whose callers all gave up (a lost request never comes back).
        for c in [c for c, r in self._rounds.items() if all(f.done() for f in r.callers)]:
            del self._rounds[c]
        seq = next(self._ctx)
        ctx = b"%s:%d" % (self._loop.id.encode(), seq)
        try:
            rn.read_index(ctx, lease)
        except CoreNotLeaderError as exc:
            for f in batch:
                _fail(f, NotLeaderError(str(exc), rn.leader))
            return
        self._rounds[ctx] = _Round(seq, lease, self._clock.monotonic(), batch)

    def on_read_states(self, states: list[ReadState], applied: int) -> None:
        """The core answered rounds: their callers wait for the index, and
        so do those of every older round still unanswered (lost, or slower:
        they arrived before it began, so its index serves them too), but a
        lease answer serves no reader that asked for a confirmed round.
        The batch that waited for an answer gets the next round."""
        for rs in states:
            r = self._rounds.pop(rs.ctx, None)
            if r is None:
                continue  # its readers gave up, or joined a later round
            callers = list(r.callers)
            for c, o in list(self._rounds.items()):
                if o.seq < r.seq and (o.lease or not r.lease):
                    callers.extend(self._rounds.pop(c).callers)
            self._read_waiters.extend((rs.index, f) for f in callers if not f.done())
        for lease, batch in ((False, self._batch), (True, self._lease_batch)):
            if batch:
                self._next_round(lease)
        self.wake_applied(applied)

    async def wait_applied(self, index: int, t: float, applied: int) -> None:
        """Wait until this node has applied ``index`` (it has ``applied``)."""
        if index <= applied:
            return
        f: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._applied_waiters.append((index, f))
        await bounded(self._clock, f, t, f"index {index} not applied in time")

    def wake_applied(self, a: int) -> None:
        """Serve the waiters whose index ``a`` has reached."""
        if self._read_waiters:
            self._read_waiters = _serve(self._read_waiters, a, lambda idx: idx)
        if self._applied_waiters:
            self._applied_waiters = _serve(self._applied_waiters, a, lambda idx: None)

    def stop(self, err: BaseException) -> None:
        """Fail every reader (the node stops)."""
        for batch in [*(r.callers for r in self._rounds.values()), self._batch, self._lease_batch]:
            for rf in batch:
                _fail(rf, err)
        for _, wf in self._read_waiters:
            _fail(wf, err)
        for _, g in self._applied_waiters:
            _fail(g, err)


def _serve(
    waiters: list[tuple[int, asyncio.Future[T]]], applied: int, value: Callable[[int], T]
) -> list[tuple[int, asyncio.Future[T]]]:
    """Resolve the waiters whose index ``applied`` reached; the rest."""
    keep = []
    for idx, f in waiters:
        if idx <= applied:
            _resolve(f, value(idx))
        else:
            keep.append((idx, f))
    return keep
