"""The proposal tracker: every write from its submission to its outcome.

Theory of operation
-------------------
A plain class, with no task of its own and no reference to the node; the
loop calls it, and it calls back only through the ``reroute`` it is given.

A write on the leader takes the fast path: :meth:`ProposalTracker.enqueue`
queues it with its future, the loop proposes everything queued as one batch
(:meth:`ProposalTracker.propose_batch`), and the future is settled when the
entry is applied (:meth:`ProposalTracker.settle_applied`).  Deadlines are
checked once a tick (:meth:`ProposalTracker.expire`), not by a timer per
write: a deque in deadline order, and a heap for the few out of order.  A
write the batch cannot propose (not leader, a transfer in progress) goes to
``reroute``: the slow path of liferaft/runtime/router.py.

Outcomes are decided by what is applied, never earlier.  Two waiters can
hold one index (a later leader reused it), but an entry that one node saw
overwritten can still be committed by yet another leader (Raft Figure 8), so
an earlier waiter is only set aside (``_displaced``) and settled by the
apply of that index: same term, its result; another term, ``DroppedError``.
Likewise ``StoppedError`` means "never left this node": once a forward may have
reached the leader (``_Prop.sent``), stopping answers ``NodeTimeoutError``.

Results of recent applies are kept while a forwarded write waits for its
(index, term) (``forwarding``), so a forward whose index this node applied
before the answer came back still learns its outcome.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from liferaft.core import Entry, RaftError

from . import write_trace
from ._futures import _as_error, _fail, _resolve
from .entry_format import ENTRY_FORMAT_ENVELOPED, header, wrap
from .errors import DroppedError, NodeTimeoutError, NotLeaderError, StoppedError, StorageFailedError

#: Applied results kept for forwarded writes.
RECENT = 4096


class Proposer(Protocol):
    """What the tracker needs of the core (a :class:`~liferaft.core.RawNode`)."""

    @property
    def term(self) -> int: ...
    @property
    def leader(self) -> str | None: ...
    def propose_many(self, datas: list[bytes]) -> int: ...


class _Prop:
    """A proposal on its way: queued for the node task, then (once it has an
    index) awaiting its apply.  ``want_index``: the caller wants (index, term)
    rather than the result (a proposal forwarded by a follower)."""

    __slots__ = ("data", "stamp", "fut", "deadline", "term", "index", "want_index", "sent")

    def __init__(
        self,
        data: bytes,
        stamp: bool,
        fut: asyncio.Future[Any],
        deadline: float = float("inf"),
        want_index: bool = False,
    ) -> None:
        self.data = data
        self.stamp = stamp
        self.fut = fut
        self.deadline = deadline
        self.want_index = want_index
        self.term = 0
        self.index = 0
        #: The slow path's forward may have reached a leader's log.
        self.sent = False


class ProposalTracker:
    """The queue, the waiters by index, deadlines and recent results."""

    def __init__(self, reroute: Callable[[_Prop], None], tick_interval: float) -> None:
        self._reroute = reroute
        self._tick = tick_interval
        self.queue: deque[_Prop] = deque()
        self.pending: dict[int, _Prop] = {}
        #: Earlier waiters of an index a later term reused; settled by the
        #: apply of that index like the one in ``pending``.
        self.displaced: dict[int, list[_Prop]] = {}
        self.deadlines: deque[_Prop] = deque()
        self.late: list[tuple[float, int, _Prop]] = []
        self._seq = itertools.count()
        #: Callers waiting on an (index, term) from elsewhere; while any
        #: does, applied results are kept in ``recent``.
        self.forwarding = 0
        self.recent: OrderedDict[int, tuple[int, bool, Any]] = OrderedDict()

    # -- submission ----------------------------------------------------------------

    def enqueue(self, p: _Prop) -> None:
        """The fast path: into the next batch, its deadline checked once a
        tick (see :meth:`expire`) rather than by a timer of its own."""
        self.queue.append(p)
        dq = self.deadlines
        # Deadlines are checked once a tick anyway, so one that is at most a
        # tick earlier than the last may queue behind it.
        if not dq or dq[-1].deadline - self._tick <= p.deadline:
            dq.append(p)
        else:
            heapq.heappush(self.late, (p.deadline, next(self._seq), p))

    def enqueue_forwarded(self, p: _Prop) -> None:
        """A write that wants its (index, term) back (``want_index``); its
        caller keeps its own deadline."""
        self.queue.append(p)

    def propose_batch(
        self,
        rn: Proposer,
        *,
        now: float,
        storage_ok: bool,
        max_batch: int,
        entry_format: int = ENTRY_FORMAT_ENVELOPED,
    ) -> None:
        """Propose up to ``max_batch`` queued writes as one batch, each
        stamped with ``now`` (the leader's wall clock) as the cluster's
        ``entry_format`` says: in the runtime envelope (format 2), or into
        ``data[0:8]`` of those that asked (format 1; entry_format.py)."""
        q = self.queue
        if not q:
            return
        n = min(len(q), max_batch)
        live = [p for p in (q.popleft() for _ in range(n)) if not p.fut.done()]
        if not live:
            return
        if not storage_ok:
            for p in live:
                _fail(
                    p.fut, StorageFailedError("the disk refused the last write; not taking writes")
                )
            return
        if entry_format == ENTRY_FORMAT_ENVELOPED:
            head = header(now)  # one time for the batch: one header for all
            datas = [head + p.data if p.data else p.data for p in live]
        else:
            datas = [wrap(entry_format, now, p.data, stamp_time=p.stamp) for p in live]
        try:
            last = rn.propose_many(datas)
        except RaftError as exc:
            # Not leader, or a leadership transfer in progress: nothing was
            # proposed, so the caller may retry.  Forwarded ones are told so;
            # our own callers go the slow way (wait for a leader, forward).
            for p in live:
                if p.want_index:
                    _fail(p.fut, NotLeaderError(str(exc), rn.leader))
                else:
                    self._reroute(p)
            return
        index = last - len(live)
        term = rn.term
        pending = self.pending
        t = write_trace.tracer
        for p in live:
            index += 1
            if t is not None:
                t.proposed(index)
            if p.want_index:
                p.fut.set_result((index, term))
                continue
            p.index = index
            p.term = term
            if index in pending:
                self.wait(p)  # a waiter from an older term sits there
            else:
                pending[index] = p  # wait()'s common case, inline: every write runs it

    def fail_queued(self, err: BaseException) -> None:
        """Fail every write not yet proposed (the disk refused a write)."""
        while self.queue:
            _fail(self.queue.popleft().fut, err)

    def in_flight(self) -> int:
        """Writes waiting here for their apply: proposed here, or forwarded
        from here and accepted by the leader (a follower with such writes
        in flight saves its Readies off the loop too; it still acknowledges
        only after the save)."""
        return len(self.pending)

    # -- waiting for an index ---------------------------------------------------------

    def wait(self, p: _Prop) -> None:
        """``p`` (with its index and term set) waits for the apply of its index."""
        old = self.pending.get(p.index)
        if old is not None:
            self.displaced.setdefault(p.index, []).append(old)
        self.pending[p.index] = p

    def unwait(self, p: _Prop) -> None:
        """Forget ``p`` as a waiter for its index (it timed out or gave up)."""
        if self.pending.get(p.index) is p:
            del self.pending[p.index]
        others = self.displaced.get(p.index)
        if others and p in others:
            others.remove(p)
            if not others:
                del self.displaced[p.index]

    def waiters(self) -> Iterator[tuple[int, _Prop]]:
        """Every (index, waiter) whose entry has not been applied yet."""
        yield from self.pending.items()
        for idx, ps in self.displaced.items():
            for p in ps:
                yield idx, p

    def recent_outcome(self, index: int, term: int) -> Any:
        """The outcome of ``index``, applied already, for a caller that
        proposed it in ``term``: its result, or the error it raises."""
        rec = self.recent.get(index)
        if rec is None:
            raise NodeTimeoutError(f"entry {index} was applied long ago; outcome unknown")
        rterm, ok, result = rec
        if rterm != term:
            raise DroppedError(f"entry {index} was overwritten by term {rterm}")
        if not ok:
            raise result
        return result

    # -- outcomes -------------------------------------------------------------------

    def watching(self) -> bool:
        """True if an applied entry's outcome may be wanted here: a caller
        waits on an index, or forwarded writes keep ``recent``.  When False,
        :meth:`settle_applied` has nothing to do and the applier may skip
        collecting outcomes for it."""
        return bool(self.pending or self.displaced or self.forwarding)

    def settle_applied(self, ents: Sequence[Entry], results: Sequence[tuple[bool, Any]]) -> bool:
        """Tell the waiters of ``ents`` (just applied, with ``results``: (ok,
        result or error) each) their outcomes; True if any was settled."""
        settled = False
        pending, displaced, recent = self.pending, self.displaced, self.recent
        if not displaced and not self.forwarding:
            # The common case (every write on the leader runs it): only
            # ``pending`` can hold a waiter.
            pop = pending.pop
            for e, (ok, result) in zip(ents, results, strict=True):
                p = pop(e.index, None)
                if p is not None:
                    settled = True
                    _settle(p, e, ok, result)
            return settled
        for e, (ok, result) in zip(ents, results, strict=True):
            p = pending.pop(e.index, None)
            if p is not None:
                settled = True
                _settle(p, e, ok, result)
            # Not only under p: the later waiter that set these aside may
            # have given up (and left) before this index was applied.
            if displaced:
                for q in displaced.pop(e.index, ()):
                    settled = True
                    _settle(q, e, ok, result)
            if self.forwarding:
                recent[e.index] = (e.term, ok, result)
        while len(recent) > RECENT:
            recent.popitem(last=False)
        return settled

    def fail_covered(self, index: int) -> None:
        """An installed snapshot covers ``index``: its waiters and those
        below cannot learn their entry's result."""
        unknown = NodeTimeoutError("the entry was replaced by a snapshot; outcome unknown")
        for idx, p in list(self.waiters()):
            if idx <= index:
                _fail(p.fut, unknown)
                self.unwait(p)

    def expire(self, now: float) -> None:
        """Fail proposals past their deadline.  One check per tick instead of
        a timer per proposal: profiling showed the timers costing more than
        the core."""
        dq = self.deadlines
        while dq and (dq[0].deadline <= now or dq[0].fut.done()):
            self._time_out(dq.popleft())
        late = self.late
        while late and (late[0][0] <= now or late[0][2].fut.done()):
            self._time_out(heapq.heappop(late)[2])
        # Most proposals finish long before their deadline: drop them now and
        # then so the queue holds about what is still outstanding.
        if len(dq) > 4096 and len(dq) > 4 * (len(self.pending) + len(self.queue)):
            self.deadlines = deque(p for p in dq if not p.fut.done())

    def _time_out(self, p: _Prop) -> None:
        if p.fut.done():
            return
        if p.index:
            self.unwait(p)
            _fail(p.fut, NodeTimeoutError(f"entry {p.index} not applied in time; outcome unknown"))
        else:
            _fail(p.fut, NodeTimeoutError("the proposal was not accepted in time"))

    def stop(self, node_id: str) -> None:
        """The node stops: writes in the log may still commit elsewhere
        (``NodeTimeoutError``, outcome unknown); queued ones never left (``StoppedError``)."""
        for idx, p in self.waiters():
            _fail(
                p.fut,
                NodeTimeoutError(
                    f"node {node_id} stopped before entry {idx} applied; outcome unknown"
                ),
            )
        self.fail_queued(StoppedError(f"node {node_id} stopped"))
        self.pending.clear()
        self.displaced.clear()
        self.deadlines.clear()
        self.late.clear()


def _settle(p: _Prop, e: Entry, ok: bool, result: Any) -> None:
    """Tell ``p``'s caller the outcome of the entry applied at its index."""
    if p.term != e.term:
        _fail(p.fut, DroppedError(f"entry {e.index} was overwritten by term {e.term}"))
    elif ok:
        _resolve(p.fut, result)
    else:
        _fail(p.fut, _as_error(result))
