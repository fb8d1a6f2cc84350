"""Events of a running node, in goraft's vocabulary.

goraft's server dispatched ``stateChange``, ``leaderChange``, ``termChange``,
``commit``, ``addPeer``, ``removePeer`` and ``heartbeatTimeout`` events to
listeners.  Here they are :class:`Event` values, delivered to callbacks
(called on the event loop, in order; a callback that raises is logged and
otherwise ignored) and to any number of async iterators (each a bounded
queue; a subscriber that falls behind loses the oldest events and gets a
``LAGGED`` event saying how many).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("liferaft.runtime")


class EventType(enum.Enum):
    STATE_CHANGE = "state_change"  # value: new role ("leader", "follower", ...)
    LEADER_CHANGE = "leader_change"  # value: new leader id or None
    TERM_CHANGE = "term_change"  # value: new term
    COMMIT = "commit"  # value: new commit index
    APPLY = "apply"  # value: new applied index
    MEMBER_ADDED = "member_added"  # value: node id (detail: voter/learner, address)
    MEMBER_REMOVED = "member_removed"  # value: node id
    SNAPSHOT_TAKEN = "snapshot_taken"  # value: snapshot index
    SNAPSHOT_INSTALLED = "snapshot_installed"  # value: snapshot index
    HEARTBEAT_SLOW = "heartbeat_slow"  # value: seconds the loop was late
    STORAGE_FAILED = "storage_failed"  # value: error text
    STORAGE_RECOVERED = "storage_recovered"
    LAGGED = "lagged"  # value: events this subscriber lost


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    value: Any = None
    term: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


class EventBus:
    """Fan-out of events to callbacks and async iterators."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._callbacks: list[Callable[[Event], None]] = []
        self._subs: list[_Subscription] = []
        self._queue_size = queue_size

    def on(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Register a callback; returns a function that unregisters it."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def subscribe(self) -> AsyncIterator[Event]:
        """An async iterator over events from now on (ends when the node stops)."""
        sub = _Subscription(self._queue_size, self._subs)
        self._subs.append(sub)
        return sub

    def emit(self, ev: Event) -> None:
        for cb in list(self._callbacks):
            try:
                cb(ev)
            except Exception:  # a listener's bug must not stop the node
                log.exception("event callback %r failed on %s", cb, ev.type.value)
        for sub in self._subs:
            sub.push(ev)

    def close(self) -> None:
        for sub in list(self._subs):
            sub.end()


class _Subscription:
    def __init__(self, size: int, owner: list[_Subscription]) -> None:
        self._q: deque[Event] = deque()
        self._size = size
        self._lost = 0
        self._done = False
        self._owner = owner
        self._wake = asyncio.Event()

    def push(self, ev: Event) -> None:
        if len(self._q) >= self._size:
            self._q.popleft()
            self._lost += 1
        self._q.append(ev)
        self._wake.set()

    def end(self) -> None:
        self._done = True
        self._wake.set()

    def __aiter__(self) -> _Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._lost:
                lost, self._lost = self._lost, 0
                return Event(EventType.LAGGED, lost)
            if self._q:
                return self._q.popleft()
            if self._done:
                if self in self._owner:
                    self._owner.remove(self)
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()

    async def aclose(self) -> None:
        self.end()
