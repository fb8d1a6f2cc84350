"""The console's timeline: what happened to the cluster in the last hour.

Entries come from two sources (docs/console.md, "Timeline"): this node's
own events (liferaft/runtime/events.py: elections it started, leaders it
saw, membership changes and snapshots it applied, its storage failing and
recovering), fed always (a callback per event: nothing runs between
events), and the gatherer's observations of the other members while a
console is open (a member going down or coming back, its snapshots and
storage health).  Each entry gets a sequence number, so a stream sends the
whole buffer once and then only what is newer.

Bounded twice: entries older than an hour are dropped, and at most
:data:`MAX_ENTRIES` are kept whatever the hour holds (a flapping member
must not grow the node's memory).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from liferaft.runtime import Event, EventType, Node

#: Longest an entry is kept, in seconds.
WINDOW = 3600.0
#: Most entries kept.
MAX_ENTRIES = 2000

KINDS = frozenset({
    "leader", "election", "member_added", "member_removed", "member_promoted", "snapshot",
    "down", "up", "storage_failed", "storage_recovered",
})  # fmt: skip


class Timeline:
    """A bounded, hour-long buffer of entries with increasing ``seq``."""

    def __init__(
        self,
        seen_by: str,
        clock: Callable[[], float] = time.time,
        window: float = WINDOW,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.seen_by = seen_by
        self._clock = clock
        self._window = window
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._seq = 0

    def add(self, kind: str, node: str, term: int | None, text: str) -> dict[str, Any]:
        """Record one entry (``kind`` from :data:`KINDS`); returns it."""
        if kind not in KINDS:
            raise ValueError(f"unknown timeline kind {kind!r}")
        self._seq += 1
        entry = {"seq": self._seq, "at": round(self._clock(), 3), "kind": kind, "node": node,
                 "term": term, "text": text, "seen_by": self.seen_by}  # fmt: skip
        self._entries.append(entry)
        self._trim()
        return entry

    def since(self, seq: int = 0) -> list[dict[str, Any]]:
        """The entries with a sequence number above ``seq``, oldest first
        (``since(0)``: the whole buffer)."""
        self._trim()
        if not self._entries or self._entries[-1]["seq"] <= seq:
            return []  # the common case of a stream's line: nothing new
        return [e for e in self._entries if e["seq"] > seq]

    @property
    def last_seq(self) -> int:
        return self._seq

    def _trim(self) -> None:
        cutoff = self._clock() - self._window
        while self._entries and self._entries[0]["at"] < cutoff:
            self._entries.popleft()


class NodeFeed:
    """Turns this node's events into timeline entries (a callback on the
    node's event bus: see :meth:`attach`)."""

    def __init__(self, node: Node, timeline: Timeline) -> None:
        self.node = node
        self.timeline = timeline
        # Learners known so far: a learner added again as a voter was promoted.
        self._learners: set[str] = set()
        self._off: Callable[[], None] | None = None

    def attach(self) -> None:
        try:
            self._learners = set(self.node.status().learners)
        except Exception:  # not started: none known yet
            self._learners = set()
        self._off = self.node.events.on(self.on_event)

    def detach(self) -> None:
        if self._off is not None:
            self._off()
            self._off = None

    def on_event(self, ev: Event) -> None:
        me, t, add = self.node.id, ev.term or None, self.timeline.add
        kind = ev.type
        if kind is EventType.STATE_CHANGE and ev.value == "candidate":
            add("election", me, t, f"{me} started an election for term {ev.term}")
        elif kind is EventType.LEADER_CHANGE and ev.value:
            add("leader", ev.value, t, f"{ev.value} became leader in term {ev.term}")
        elif kind is EventType.MEMBER_ADDED:
            nid = str(ev.value)
            if ev.detail.get("voter"):
                if nid in self._learners:
                    self._learners.discard(nid)
                    add("member_promoted", nid, t, f"{nid} was promoted to voter")
                else:
                    add("member_added", nid, t, f"{nid} was added as a voter")
            else:
                self._learners.add(nid)
                add("member_added", nid, t, f"{nid} was added as a learner")
        elif kind is EventType.MEMBER_REMOVED:
            self._learners.discard(str(ev.value))
            add("member_removed", str(ev.value), t, f"{ev.value} was removed")
        elif kind is EventType.SNAPSHOT_TAKEN:
            add("snapshot", me, t, f"{me} took a snapshot at index {ev.value}")
        elif kind is EventType.SNAPSHOT_INSTALLED:
            add("snapshot", me, t, f"{me} installed a snapshot at index {ev.value}")
        elif kind is EventType.STORAGE_FAILED:
            add("storage_failed", me, t, f"{me}'s storage failed: {str(ev.value)[:200]}")
        elif kind is EventType.STORAGE_RECOVERED:
            add("storage_recovered", me, t, f"{me}'s storage recovered")
