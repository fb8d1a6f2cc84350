"""The MVCC store as the watch hub's history (issue 15, "Watch").

The hub (:mod:`liferaft.kv.watch`) replays a watcher that starts in the
past from the store, then joins the live stream.  It asks for
:class:`~liferaft.kv.watch_types.WatchHistory`: the events of a key range
from a start revision, read at or after the call.  :class:`StoreHistory`
gives that from an :class:`~liferaft.kv.mvcc.MVCCStore`, one LMDB read
transaction per replay, opened on the first ``next`` and closed with the
generator (the hub closes it when its watcher closes).

Compaction and watches.  ``compact(C)`` keeps each key's latest version at
or below C unless that version is a tombstone, so a delete *at* C leaves no
record: history starting at C could miss it.  So the history this module
offers starts above C: its :attr:`StoreHistory.compact_revision` is C + 1
once anything was compacted (etcd's watchers meet the same rule through
its compacted error), and a replay asked for at or below C raises
:class:`~liferaft.kv.mvcc.CompactedError` naming C + 1, the first revision
a watch may start at.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from liferaft.kv.mvcc import ReadView
from liferaft.kv.mvcc.ops import CompactedError

from .watch_types import EventKind, KeyRange, WatchEvent


class Readable(Protocol):
    """What the history reads: an MVCC store, or the machine that holds one
    (which follows it across a restore)."""

    def read(self) -> ReadView: ...
    def compact_revision(self) -> int: ...


class StoreHistory:
    """:class:`~liferaft.kv.watch_types.WatchHistory` over an MVCC store."""

    def __init__(self, store: Readable) -> None:
        self._store = store

    @property
    def compact_revision(self) -> int:
        """The first revision whose history is whole (see the module doc)."""
        return _first_whole(self._store.compact_revision())

    def history(self, start_rev: int, key_range: KeyRange) -> Iterator[WatchEvent]:
        """The events of ``key_range`` from ``start_rev`` up to the store's
        revision when the first event is asked for, in revision order, with
        ``prev_kv`` (the hub drops it for a watcher that did not ask)."""
        with self._store.read() as view:
            first = _first_whole(view.compact_revision)  # compacted since the hub asked?
            if start_rev < first:
                raise CompactedError(start_rev, first)
            for rev, kv, mark, prev in view.changes(start_rev, key_range.start, key_range.end):
                if kv is None:
                    yield WatchEvent(rev, EventKind.DELETE, mark.key, mark, prev)
                else:
                    yield WatchEvent(rev, EventKind.PUT, kv.key, kv, prev)


def _first_whole(compacted_at: int) -> int:
    """The first revision whose history survives ``compact(compacted_at)``
    whole (0: nothing compacted): a delete at it leaves no record."""
    return compacted_at + 1 if compacted_at else 0
