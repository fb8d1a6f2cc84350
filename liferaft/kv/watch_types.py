"""The values and errors of watches (liferaft/kv/watch.py), and what the
hub needs from the store.

These are the shapes the MVCC store and the watch hub share: a
:class:`WatchEvent` per key a revision changed, the :class:`KeyRange` a
watcher selects, and :class:`WatchHistory`, the one read the hub asks of the
store (past events, for a watcher that starts in the past).  docs/kv.md,
"Watch (hub)", gives the semantics.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

from .errors import KVError
from .mvcc.ops import TO_END, CompactedError, KeyValue
from .mvcc.ops import prefix_end as _store_prefix_end

__all__ = [
    "CompactedError",
    "EventKind",
    "KeyRange",
    "KeyValue",
    "Progress",
    "WatchCutOffError",
    "WatchEvent",
    "WatchHistory",
    "WatchItem",
    "WatchLimitError",
    "prefix_end",
]

# What one queued event is charged beyond its keys and values: the objects
# around them (an estimate; only the bound's order of magnitude matters).
EVENT_OVERHEAD = 160


class EventKind(enum.Enum):
    """What a revision did to a key."""

    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One key changed at ``revision``.

    ``kv`` is the key after the change; for a delete it is a tombstone as in
    etcd (empty value, ``create_revision`` and ``version`` 0, ``mod_revision``
    the deleting revision).  ``prev_kv`` is the key before the change (None
    if it did not exist, or if the watcher did not ask for it).  One
    revision may hold several events (a transaction), one per key."""

    revision: int
    kind: EventKind
    key: bytes
    kv: KeyValue
    prev_kv: KeyValue | None = None

    def without_prev(self) -> WatchEvent:
        """The same event with ``prev_kv`` left out."""
        return self if self.prev_kv is None else replace(self, prev_kv=None)

    def cost(self) -> int:
        """Bytes a watcher's queue is charged for holding this event."""
        n = EVENT_OVERHEAD + 2 * len(self.key) + len(self.kv.value)
        if self.prev_kv is not None:
            n += len(self.prev_kv.value)
        return n


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress notification: every event of the watcher's range with a
    revision up to ``revision`` has been delivered, so a client that resumes
    from ``revision + 1`` misses nothing."""

    revision: int


WatchItem = WatchEvent | Progress


def prefix_end(prefix: bytes) -> bytes | None:
    """The first key after every key that starts with ``prefix`` (the
    store's ``prefix_end``), or None if there is none (the empty prefix, or
    one made only of 0xff bytes)."""
    end = _store_prefix_end(prefix)
    return None if end == TO_END else end


@dataclass(frozen=True, slots=True)
class KeyRange:
    """The keys ``start <= key < end`` (``end`` None: no upper bound).

    Build one with :meth:`single`, :meth:`prefix` or :meth:`between`; a
    single key ``k`` is ``[k, k + b"\\0")``, which holds only ``k``."""

    start: bytes
    end: bytes | None

    @classmethod
    def single(cls, key: bytes) -> KeyRange:
        """Only ``key``."""
        return cls(key, key + b"\0")

    @classmethod
    def prefix(cls, prefix: bytes) -> KeyRange:
        """Every key that starts with ``prefix`` (every key for b"")."""
        return cls(prefix, prefix_end(prefix))

    @classmethod
    def between(cls, start: bytes, end: bytes | None) -> KeyRange:
        """``[start, end)``; a ValueError names an empty range."""
        if end is not None and end <= start:
            raise ValueError(f"empty key range: end {end!r} is not after start {start!r}")
        return cls(start, end)

    def __contains__(self, key: object) -> bool:
        return (
            isinstance(key, bytes) and key >= self.start and (self.end is None or key < self.end)
        )

    @property
    def is_single(self) -> bool:
        """True if the range holds exactly one key."""
        return self.end == self.start + b"\0"

    @property
    def is_prefix(self) -> bool:
        """True if the range is every key under ``start``."""
        return self.end == prefix_end(self.start)


class WatchHistory(Protocol):
    """What the hub reads from the store (the MVCC store provides it).

    ``history`` yields the events of ``key_range`` with revisions from
    ``start_rev`` up to the store's revision at the read, in revision order
    (events of one revision in any fixed order), all of one revision
    together.  Its read must be taken at or after the call (a lazy
    generator that opens its read transaction on the first ``next`` is
    fine), since the hub relies on it to cover every revision published
    before the call.  It raises :class:`CompactedError` (at once or on the
    first ``next``) if ``start_rev`` is below the compact revision.  It may
    yield ``None`` between two revisions: a pause, where the consumer hands
    the event loop back before it asks for more (a store history pauses
    between the chunks it reads, liferaft/kv/watch_history.py).
    """

    @property
    def compact_revision(self) -> int:
        """The lowest revision whose history is still kept."""
        ...

    def history(self, start_rev: int, key_range: KeyRange) -> Iterator[WatchEvent | None]:
        """The events of ``key_range`` from ``start_rev`` on (see above)."""
        ...


class WatchCutOffError(KVError):
    """The watch ended before its client did: the watcher fell too far
    behind (``reason`` "slow"), the state was replaced by a snapshot
    ("restored") or the node is stopping ("stopping").  Every event before
    ``resume_revision`` was delivered and none after it: watch again from
    ``resume_revision``."""

    code = "watch_cut_off"
    retry_safe = True

    def __init__(self, resume_revision: int, reason: str) -> None:
        super().__init__(
            f"watch cut off ({reason}); resume from revision {resume_revision}",
            resume_revision=resume_revision,
            reason=reason,
        )
        self.resume_revision = resume_revision
        self.reason = reason


class WatchLimitError(KVError):
    """This node serves as many watchers as it is allowed; try another node
    or later."""

    code = "too_many_watchers"
    retry_safe = True
