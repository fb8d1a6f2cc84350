"""The lease clock: which lease expires when, decided by the leader alone.

Theory of operation (docs/kv.md, "Leases")
-------------------------------------------
A lease's *existence* and TTL are replicated state: a grant and a revoke are
log entries, applied by every replica into the store's lease table.  Its
*deadline* is not.  Only the leader keeps deadlines, in memory, on its
monotonic clock, as etcd's lessor does:

- **Keep-alives cost no log entry.**  A keep-alive sets the deadline to
  now + TTL in the leader's memory.  A follower forwards it to the leader
  (liferaft/kv/service.py, over the runtime's leader calls).  No checkpoint
  of the remaining time is written either (etcd 3.4's default).
- **Expiry is an entry.**  When a deadline passes, the leader proposes a
  revoke; every replica deletes the lease's keys when it applies it, at one
  revision, with watch events.  A replica's clock never deletes anything.
- **A new leader restarts every lease at its full TTL**, once it has applied
  everything committed before its term (:meth:`LeaseKeeper.tick` waits for
  a read barrier first, so the table it starts from is complete).  So a
  leader change can make a lease outlive its holder by up to one TTL plus
  the election, and never expire it early.
- **A keep-alive is answered only by a leader that still leads**: the
  service runs :meth:`Lessor.keepalive` behind a linearizable read barrier,
  so a deposed leader cut off from the others cannot acknowledge one that
  the real leader never saw.  The deadline is set after the holder sent the
  request, so the leader's deadline is never earlier than the one the
  holder counts from its send time.

:class:`Lessor` is the table and the clock, safe to call from the apply
thread (grants and revokes arrive there) and the event loop.
:class:`LeaseKeeper` is the loop-side driver: it follows leadership and
proposes revokes for the leases that are due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable

from .errors import KVError, KVNotFoundError, KVUnavailableError

log = logging.getLogger("liferaft.kv")

__all__ = ["LeaseKeeper", "Lessor", "min_ttl"]

#: How long a revoke proposed for a due lease is given before it is proposed
#: again (it may have been lost with a leader change).
REVOKE_RETRY = 2.0
#: Revokes proposed per tick at most, so a mass expiry (say, after a long
#: partition of every holder) does not flood the log in one burst.
MAX_REVOKES_PER_TICK = 500


def min_ttl(election_timeout: float) -> int:
    """The shortest TTL granted: one and a half election timeouts, in whole
    seconds (etcd's rule), so a lease survives the election that follows a
    leader's crash as long as its holder keeps it alive."""
    return max(1, math.ceil(1.5 * election_timeout))


class Lessor:
    """Every lease's TTL (all replicas) and deadline (the leader only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ttl: dict[int, int] = {}
        self._deadline: dict[int, float] | None = None  # None: not leading
        self._revoking: dict[int, float] = {}  # lease -> when its revoke was proposed

    # -- the replicated table (from applied entries) -------------------------------------

    def load(self, leases: Iterable[tuple[int, int]]) -> None:
        """Replace the table with ``(id, ttl)`` pairs (the store at open, or
        after a snapshot replaced it).  A leader restarts every deadline."""
        with self._lock:
            self._ttl = dict(leases)
            self._revoking.clear()
            if self._deadline is not None:
                self._restart_all()

    def granted(self, lease_id: int, ttl: int) -> None:
        """A grant was applied.  The leader starts its clock now."""
        with self._lock:
            self._ttl[lease_id] = ttl
            if self._deadline is not None:
                self._deadline[lease_id] = self._clock() + ttl

    def revoked(self, lease_id: int) -> None:
        """A revoke was applied (by expiry or by request)."""
        with self._lock:
            self._ttl.pop(lease_id, None)
            self._revoking.pop(lease_id, None)
            if self._deadline is not None:
                self._deadline.pop(lease_id, None)

    def ttl(self, lease_id: int) -> int | None:
        """The granted TTL, or None if no such lease is applied here."""
        with self._lock:
            return self._ttl.get(lease_id)

    # -- leadership ---------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """True between :meth:`promote` and :meth:`demote`."""
        return self._deadline is not None

    def promote(self) -> None:
        """This node leads and has applied everything committed before its
        term: every lease starts a full TTL from now."""
        with self._lock:
            self._deadline = {}
            self._revoking.clear()
            self._restart_all()

    def demote(self) -> None:
        """This node no longer leads: forget every deadline."""
        with self._lock:
            self._deadline = None
            self._revoking.clear()

    def _restart_all(self) -> None:
        now = self._clock()
        self._deadline = {lid: now + ttl for lid, ttl in self._ttl.items()}

    # -- the leader's calls ---------------------------------------------------------------

    def keepalive(self, lease_id: int) -> int:
        """Restart ``lease_id``'s clock; its TTL.  Only on the leader."""
        with self._lock:
            deadlines = self._check_leading()
            ttl = self._ttl.get(lease_id)
            if ttl is None or lease_id in self._revoking:
                raise _not_found(lease_id)
            deadlines[lease_id] = self._clock() + ttl
            return ttl

    def remaining(self, lease_id: int) -> float:
        """Seconds until ``lease_id`` expires (0 when due).  Only on the leader."""
        with self._lock:
            deadlines = self._check_leading()
            if lease_id not in self._ttl:
                raise _not_found(lease_id)
            return max(0.0, deadlines.get(lease_id, 0.0) - self._clock())

    def due(self, limit: int = MAX_REVOKES_PER_TICK) -> list[int]:
        """Leases past their deadline whose revoke is not already in flight
        (one proposed over :data:`REVOKE_RETRY` ago counts as lost).  Each is
        marked in flight; the caller proposes their revokes."""
        with self._lock:
            if self._deadline is None:
                return []
            now = self._clock()
            out = []
            for lid, deadline in self._deadline.items():
                if deadline > now:
                    continue
                sent = self._revoking.get(lid)
                if sent is not None and now - sent < REVOKE_RETRY:
                    continue
                self._revoking[lid] = now
                out.append(lid)
                if len(out) >= limit:
                    break
            return out

    def _check_leading(self) -> dict[int, float]:
        if self._deadline is None:
            raise KVUnavailableError(
                "no_leader", "this node is not the leader's lease clock (yet); retry"
            )
        return self._deadline


def _not_found(lease_id: int) -> KVError:
    return KVNotFoundError(f"lease {lease_id} not found", "lease_not_found")


class LeaseKeeper:
    """Drives a :class:`Lessor` from the event loop: follows leadership and
    proposes the revokes of due leases (see the module doc)."""

    def __init__(
        self,
        lessor: Lessor,
        *,
        leadership: Callable[[], int | None],
        barrier: Callable[[], Awaitable[object]],
        revoke: Callable[[int], Awaitable[object]],
        interval: float = 0.5,
    ) -> None:
        """``leadership()`` is this node's term if it leads, else None;
        ``barrier()`` returns once everything committed so far is applied
        here (a linearizable read); ``revoke(id)`` proposes a revoke."""
        self.lessor = lessor
        self._leadership = leadership
        self._barrier = barrier
        self._revoke = revoke
        self.interval = interval
        self._term: int | None = None  # the term the lessor was promoted in
        self._inflight: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """:meth:`tick` every ``interval`` until cancelled."""
        try:
            while True:
                await self.tick()
                await asyncio.sleep(self.interval)
        finally:
            for t in list(self._inflight):
                t.cancel()

    async def tick(self) -> None:
        """Follow leadership; propose the revokes that are due."""
        term = self._leadership()
        if term is None:
            if self._term is not None:
                self.lessor.demote()
                self._term = None
            return
        if term != self._term:
            self.lessor.demote()
            self._term = None
            try:
                await self._barrier()
            except (TimeoutError, KVError) as exc:
                log.debug("lease clock: leadership barrier failed: %s", exc)
                return
            if self._leadership() != term:
                return  # lost it meanwhile; the next tick looks again
            self.lessor.promote()
            self._term = term
            log.info("lease clock: leading in term %d; every lease restarts its TTL", term)
        for lid in self.lessor.due():
            task = asyncio.create_task(self._expire(lid))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _expire(self, lease_id: int) -> None:
        with contextlib.suppress(KVError, TimeoutError):
            # A failure leaves the lease in the table: it is due again after
            # REVOKE_RETRY, on this leader or (restarted) on the next.
            await self._revoke(lease_id)
