"""Named distributed locks: a replicated lock manager and the handles that hold its locks.

:class:`ReplicatedLockManager` is one replicated object that serves any
number of named locks on a node (PySyncObj's ``ReplLockManager``).  Its
commands decide who holds what; :meth:`ReplicatedLockManager.lock` gives a
:class:`DistributedLock` handle that a program uses::

    locks = ReplicatedLockManager()
    node = Node(..., state_machine=[locks, ...])
    async with locks.lock("orders", ttl=10.0) as token:   # blocks until granted
        await storage.write(data, fencing_token=token)

Theory of operation
-------------------
*Who holds a lock* is replicated state, decided in ``apply`` by the same
entries on every replica.  A lease ends at a time on the **leader's**
clock: each entry carries the leader time it was appended at (the runtime
envelope, docs/statemachine.md, "The durable contract"), and the manager
judges expiry with the highest leader time it has applied, never with the
applying machine's clock, so every replica decides alike and a new leader
whose clock lags never moves a lease backwards.

*Fencing tokens* are the log index of the entry that granted the lock:
unique, and strictly increasing for every lock (and across locks), with no
counter to keep.  A holder passes its token to the resource it guards,
which refuses any token lower than the highest it has seen; that is what
makes a holder that paused past its lease harmless (docs/statemachine.md,
"ReplicatedLock").

*Holding* is the handle's business, local to the program: ``acquire``
proposes ``acquire`` entries until one grants the lock, waiting between
tries for a release applied on this node (or a short back-off, for a lease
that runs out), and raises :class:`LockTimeoutError` (a ``TimeoutError``)
when its timeout passes.  Once granted, a background task refreshes the
lease every third of its ttl, on the node's clock, until ``release`` or
:meth:`ReplicatedLockManager.close`; a refresh the manager refuses (the
lease lapsed, another holder took it) marks the handle ``lost``.  Times are
seconds, as floats, like every time in the public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from types import TracebackType
from typing import Any

from .clock import Clock, SystemClock
from .commands import Replicated, command, query
from .errors import (
    BadConfigError,
    DroppedError,
    LockTimeoutError,
    NodeError,
    NodeTimeoutError,
    NotLeaderError,
)
from .types import TTL, LockInfo

__all__ = ["DistributedLock", "LockInfo", "LockTimeoutError", "ReplicatedLockManager"]

log = logging.getLogger("liferaft.runtime")

#: Errors after which trying again may still get (or keep) the lock.
_TRANSIENT = (NotLeaderError, NodeTimeoutError, DroppedError)
_SWEEP_FLOOR = 64


class ReplicatedLockManager(Replicated):
    """Any number of named lease locks with fencing tokens, replicated.

    Commands (what the handles propose; usable directly too):
    :meth:`acquire`, :meth:`refresh`, :meth:`release`.  Queries:
    :meth:`holder`, :meth:`held`.  ``ttl`` is the default lease of the
    handles :meth:`lock` makes, in seconds.
    """

    type_name = "ReplicatedLockManager"
    __state__ = ("_locks", "_now", "_sweep_at")
    _locks: dict[str, LockInfo]
    _now: float
    _sweep_at: int

    def __init__(self, ttl: float = 10.0) -> None:
        super().__init__()
        _check_ttl(ttl)
        self._locks = {}  # name -> its last grant, until released (or swept once expired)
        self._now = 0.0  # the highest leader time applied; never decreases
        self._sweep_at = _SWEEP_FLOOR  # drop expired grants when this many are kept
        self._default_ttl = ttl
        self._released: dict[str, asyncio.Event] = {}  # local waiters, not state
        self._holding: set[DistributedLock] = set()

    # --- replicated: who holds what ---

    def _clock(self) -> float:
        self._now = max(self._now, self.leader_time)
        return self._now

    def _live(self, name: str, now: float) -> LockInfo | None:
        info = self._locks.get(name)
        return info if info is not None and now < info.expires_at else None

    @command
    def acquire(self, name: str, owner: str, ttl: TTL) -> int | None:
        """Grant ``name`` to ``owner`` for ``ttl`` seconds of leader time; the fencing token.

        The token is this entry's log index.  None while another owner's
        lease runs; the same owner acquiring again gets a new token (the
        old one turns stale).
        """
        if not math.isfinite(ttl):
            raise ValueError(f"ttl must be finite, not {ttl}")
        now = self._clock()
        live = self._live(name, now)
        if live is not None and live.owner != owner:
            return None
        if name not in self._locks and len(self._locks) >= self._sweep_at:
            self._sweep(now)
        self._locks[name] = LockInfo(owner, self.log_index, now + ttl)
        return self.log_index

    def _sweep(self, now: float) -> None:
        # Expired grants behave as free ones; dropping them keeps the state
        # bounded by the live locks.  Deterministic: every replica sweeps at
        # the same entry, since _sweep_at is state.
        self._locks = {n: i for n, i in self._locks.items() if now < i.expires_at}
        self._sweep_at = max(_SWEEP_FLOOR, 2 * len(self._locks))

    @command
    def refresh(self, name: str, owner: str, token: int, ttl: TTL) -> bool:
        """Extend a live lease to ``ttl`` seconds from now; False if the token is stale."""
        if not math.isfinite(ttl):
            raise ValueError(f"ttl must be finite, not {ttl}")
        now = self._clock()
        live = self._live(name, now)
        if live is None or (live.owner, live.token) != (owner, token):
            return False
        self._locks[name] = LockInfo(owner, token, now + ttl)
        return True

    @command
    def release(self, name: str, owner: str, token: int) -> bool:
        """Free ``name``; False if the token is stale (the lease was lost already)."""
        live = self._live(name, self._clock())
        if live is None or (live.owner, live.token) != (owner, token):
            return False
        del self._locks[name]
        self._wake(name)
        return True

    @query
    def holder(self, name: str) -> LockInfo | None:
        """Who holds ``name`` as of the last applied entry's leader time, or None."""
        return self._live(name, self._now)

    @query
    def held(self) -> dict[str, LockInfo]:
        """Every lock held as of the last applied entry's leader time."""
        return {n: i for n, i in self._locks.items() if self._now < i.expires_at}

    def restore_state(self, state: Any) -> None:
        """Install a snapshot, then let every local waiter look again."""
        super().restore_state(state)
        for name in list(self._released):
            self._wake(name)

    # --- local: waiting, handles ---

    def _wake(self, name: str) -> None:
        event = self._released.pop(name, None)
        if event is not None:
            event.set()

    def _release_event(self, name: str) -> asyncio.Event:
        return self._released.setdefault(name, asyncio.Event())

    def _node_clock(self) -> Clock:
        clock = getattr(self.proposer, "clock", None)
        return clock if clock is not None else SystemClock()

    def lock(
        self, name: str, *, ttl: float | None = None, owner: str | None = None
    ) -> DistributedLock:
        """A handle on the lock ``name`` (nothing is proposed until it acquires).

        ``ttl`` (seconds; default the manager's) is the lease each grant and
        refresh asks for.  ``owner`` names the holder in the replicated state;
        by default a fresh unique one per handle, so two handles, even in
        one program, contend like two programs.
        """
        if not isinstance(name, str) or not name:
            raise BadConfigError(f"a lock name must be a non-empty str, not {name!r}")
        ttl = self._default_ttl if ttl is None else ttl
        _check_ttl(ttl)
        if owner is None:
            owner = f"{getattr(self.proposer, 'id', None) or 'local'}:{uuid.uuid4().hex[:16]}"
        return DistributedLock(self, name, ttl, owner)

    async def close(self) -> None:
        """Stop refreshing every lock this node's handles hold (their leases then lapse)."""
        for handle in list(self._holding):
            await handle._stop_refreshing()


class DistributedLock:
    """One holder's handle on a named lock of a :class:`ReplicatedLockManager`.

    ``await lock.acquire(timeout)`` blocks until granted (the fencing token)
    or raises :class:`LockTimeoutError`; ``await lock.release()``;
    ``async with lock as token:`` does both and releases on an exception
    too.  While held, the lease is refreshed in the background; ``lost`` is
    set if the manager refused a refresh (the lease lapsed, for instance
    while this node was cut off), after which the token is stale.
    """

    def __init__(self, manager: ReplicatedLockManager, name: str, ttl: float, owner: str) -> None:
        self.manager = manager
        self.name = name
        self.ttl = ttl
        self.owner = owner
        self.token: int | None = None
        self.lost = asyncio.Event()
        self._refresher: asyncio.Task[None] | None = None
        # On the node's monotonic clock: when the last grant or refresh that
        # succeeded was proposed, plus the ttl.  The lease it won started at
        # the leader time of its entry, which is no earlier, so (clock drift
        # aside) the lease cannot have lapsed before this: past it, and
        # without a later success, the handle must assume it is lost.
        self._valid_until = -math.inf

    @property
    def held(self) -> bool:
        """True between a grant and its release while the lease is known to run.

        False once a refresh was refused, and also once a ttl has passed
        since the last refresh that succeeded was sent (this node cut off
        from the leader, say): another owner may hold the lock by then.
        """
        return (
            self.token is not None
            and not self.lost.is_set()
            and self.manager._node_clock().monotonic() < self._valid_until
        )

    def __repr__(self) -> str:
        return f"<DistributedLock {self.name!r} owner={self.owner!r} token={self.token}>"

    async def acquire(self, timeout: float | None = None) -> int:
        """Block until the lock is granted; return its fencing token.

        ``timeout`` (seconds; None waits for ever, 0 tries once) bounds the
        wait: then :class:`LockTimeoutError`, a ``TimeoutError``.  Other
        failures of one try (no leader, an unknown outcome) are tried again
        within the timeout; ``StoppedError`` and bad arguments are raised.
        """
        if self.token is not None:
            raise RuntimeError(f"lock {self.name!r} is already held by this handle")
        if timeout is not None and (not math.isfinite(timeout) or timeout < 0):
            raise BadConfigError(f"timeout must be None or >= 0 seconds, not {timeout!r}")
        clock = self.manager._node_clock()
        deadline = None if timeout is None else clock.monotonic() + timeout
        delay, why = 0.02, "held by another owner"
        while True:
            left = None if deadline is None else deadline - clock.monotonic()
            released = self.manager._release_event(self.name)
            attempt = self.manager.acquire.with_timeout(None if left is None else max(left, 0.05))
            sent = clock.monotonic()
            try:
                token = await attempt(self.name, self.owner, self.ttl)
            except _TRANSIENT as exc:
                token, why = None, f"last try: {type(exc).__name__}: {exc}"
            if token is not None:
                self._hold(token, sent + self.ttl)
                return token
            left = None if deadline is None else deadline - clock.monotonic()
            if left is not None and left <= 0:
                raise LockTimeoutError(
                    f"lock {self.name!r} not acquired within {timeout:g} s ({why})"
                )
            await _wait_for(released, clock, delay if left is None else min(delay, left))
            delay = min(delay * 2, 0.5)

    def _hold(self, token: int, valid_until: float) -> None:
        self.token = token
        self._valid_until = valid_until
        self.lost.clear()
        self.manager._holding.add(self)
        self._refresher = asyncio.create_task(
            self._refresh_loop(token), name=f"liferaft-lock-refresh-{self.name}"
        )

    async def _refresh_loop(self, token: int) -> None:
        # A third of the ttl: two refreshes may fail (a leader change) before
        # the lease lapses.  No refresh outlives the lease it would extend;
        # once a ttl passed since the last success was sent, the lease is
        # taken as lost (a partitioned holder learns it without the leader).
        clock, interval = self.manager._node_clock(), self.ttl / 3
        while True:
            await clock.sleep(min(interval, max(self._valid_until - clock.monotonic(), 0.0)))
            sent = clock.monotonic()
            left = self._valid_until - sent
            if left <= 0:
                log.warning(
                    "lock %r: lease lost (no refresh succeeded within its ttl of %g s)",
                    self.name,
                    self.ttl,
                )
                self.lost.set()
                return
            try:
                refresh = self.manager.refresh.with_timeout(min(interval, left))
                ok = await refresh(self.name, self.owner, token, self.ttl)
            except _TRANSIENT as exc:
                log.debug("lock %r: refresh failed (%s); trying again", self.name, exc)
                continue
            except Exception as exc:  # StoppedError, or a bug: stop, and say so
                log.warning("lock %r: refreshing stopped: %s", self.name, exc)
                self.lost.set()
                return
            if not ok:
                log.warning("lock %r: lease lost (token %d is stale)", self.name, token)
                self.lost.set()
                return
            self._valid_until = sent + self.ttl

    async def _stop_refreshing(self) -> None:
        task, self._refresher = self._refresher, None
        self.manager._holding.discard(self)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def release(self) -> bool:
        """Stop refreshing and free the lock; False if it was not held any more."""
        token, self.token = self.token, None
        await self._stop_refreshing()
        if token is None:
            return False
        return bool(await self.manager.release(self.name, self.owner, token))

    async def __aenter__(self) -> int:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.release()
        except NodeError as err:
            # The body's own exception matters more; an unreleased lease lapses.
            log.warning("lock %r: release failed (%s); its lease will lapse", self.name, err)
            if exc is None:
                raise


def _check_ttl(ttl: float) -> None:
    if not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise BadConfigError(f"ttl must be a positive number of seconds, not {ttl!r}")


async def _wait_for(event: asyncio.Event, clock: Clock, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` pass on ``clock``."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
