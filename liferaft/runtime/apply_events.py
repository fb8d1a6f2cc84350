"""The ordered stream of what a node applied, for watches and the console.

Theory of operation
-------------------
The applier publishes one item per applied batch, in log order, to every
subscriber (:meth:`ApplyFeed.subscribe`, used by ``Node.apply_stream``):

* :class:`AppliedBatch`: the entries the state machine was handed (index,
  the user's bytes, the leader's time) and what it returned for each (an
  exception instance for an entry it refused);
* :class:`Restored`: the state machine's whole state was replaced by a
  snapshot at ``index`` (from the leader, or at start): a watcher must read
  the state again rather than expect every change as a batch;
* :class:`Lagged`: this subscriber fell more than ``maxlen`` items behind;
  the oldest ``missed`` items were dropped and it goes on from the newest,
  so it must resynchronise as after a :class:`Restored`.

A subscriber that never reads costs at most ``maxlen`` items, and a node
with no subscriber builds no items at all.  Items are values, never the
state machine's live objects.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .statemachine import ApplyEntry

__all__ = ["AppliedBatch", "ApplyEvent", "ApplyFeed", "ApplyStream", "Lagged", "Restored"]


@dataclass(frozen=True, slots=True)
class AppliedBatch:
    """Entries ``first``..``last`` were applied; ``entries`` are those the
    state machine was handed (with data), ``results`` what it returned."""

    first: int
    last: int
    entries: tuple[ApplyEntry, ...]
    results: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Restored:
    """The state was replaced by a snapshot at ``index``."""

    index: int


@dataclass(frozen=True, slots=True)
class Lagged:
    """This subscriber lost the ``missed`` oldest items; resynchronise."""

    missed: int


ApplyEvent = AppliedBatch | Restored | Lagged


class ApplyStream:
    """One subscriber: an async iterator of :data:`ApplyEvent` values.

    Ends when the node stops or :meth:`close` is called."""

    def __init__(self, feed: ApplyFeed, maxlen: int) -> None:
        self._feed = feed
        self._items: deque[ApplyEvent] = deque()
        self._maxlen = maxlen
        self._missed = 0
        self._wake = asyncio.Event()
        self._closed = False

    def _push(self, item: ApplyEvent) -> None:
        if len(self._items) >= self._maxlen:
            self._items.popleft()
            self._missed += 1
        self._items.append(item)
        self._wake.set()

    def close(self) -> None:
        """Stop receiving; the iterator ends once drained."""
        self._closed = True
        self._feed._drop(self)
        self._wake.set()

    def __aiter__(self) -> AsyncIterator[ApplyEvent]:
        return self

    async def __anext__(self) -> ApplyEvent:
        while True:
            if self._missed:
                missed, self._missed = self._missed, 0
                return Lagged(missed)
            if self._items:
                return self._items.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()


class ApplyFeed:
    """Fan-out of apply events to the subscribers, in order."""

    def __init__(self) -> None:
        self._subs: list[ApplyStream] = []

    @property
    def active(self) -> bool:
        """True if anyone listens (items are built only then)."""
        return bool(self._subs)

    def subscribe(self, maxlen: int = 1024) -> ApplyStream:
        """A stream of every item published from now on."""
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        sub = ApplyStream(self, maxlen)
        self._subs.append(sub)
        return sub

    def publish(self, item: ApplyEvent) -> None:
        for sub in self._subs:
            sub._push(item)

    def close(self) -> None:
        for sub in list(self._subs):
            sub.close()

    def _drop(self, sub: ApplyStream) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
