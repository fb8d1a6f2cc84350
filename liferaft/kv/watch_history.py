"""The MVCC store as the watch hub's history (issue 15, "Watch").

The hub (:mod:`liferaft.kv.watch`) replays a watcher that starts in the
past from the store, then joins the live stream.  It asks for
:class:`~liferaft.kv.watch_types.WatchHistory`: the events of a key range
from a start revision, read at or after the call.  :class:`StoreHistory`
gives that from an :class:`~liferaft.kv.mvcc.MVCCStore`, in chunks: each
chunk is read whole in one short LMDB read transaction, closed before its
events are handed out, and the next one is opened at the next revision.
Why: a client that asked for a replay and then reads slowly, or never,
would otherwise keep a read transaction open as long as it likes, and
while one is open LMDB reuses no page freed after it began, so the file
grows with every write (docs/kv.md, "Watch").  Between two chunks the
history yields ``None``, a pause: the hub's watcher hands the event loop
back there, so a replay that skips a long run of other keys' records
never holds the loop for more than one chunk.  A chunk is at most
:data:`REPLAY_RECORDS` records or about :data:`REPLAY_BYTES` of values,
rounded up to a whole revision (a single revision is never split, so one
huge revision, such as a lease revoke of many keys, is read in one go).

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
from liferaft.kv.mvcc.ops import CompactedError, KeyValue

from .watch_types import EventKind, KeyRange, WatchEvent

# One change as ReadView.changes gives it: (revision, kv, key_and_mod, prev).
Change = tuple[int, KeyValue | None, KeyValue, KeyValue | None]


#: Records of any key one chunk of a replay reads (about 1 µs each).
REPLAY_RECORDS = 4096
#: Bytes of values one chunk of a replay holds (before the revision ends).
REPLAY_BYTES = 1 << 20


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

    def history(self, start_rev: int, key_range: KeyRange) -> Iterator[WatchEvent | None]:
        """The events of ``key_range`` from ``start_rev`` on, in revision
        order, with ``prev_kv`` (the hub drops it for a watcher that did not
        ask); ``None`` between two chunks (see the module doc).  It ends
        once a chunk reaches the revision the store had when that chunk was
        read, so it covers every revision published before the call."""
        pos: int | None = start_rev
        while pos is not None:
            changes, pos = self._chunk(pos, key_range)
            for rev, kv, mark, prev in changes:
                if kv is None:
                    yield WatchEvent(rev, EventKind.DELETE, mark.key, mark, prev)
                else:
                    yield WatchEvent(rev, EventKind.PUT, kv.key, kv, prev)
            if pos is not None:
                yield None

    def _chunk(self, pos: int, key_range: KeyRange) -> tuple[list[Change], int | None]:
        with self._store.read() as view:
            # Compacted since the hub asked, or since the last chunk?
            first = _first_whole(view.compact_revision)
            if pos < first:
                raise CompactedError(pos, first)
            return view.changes_chunk(
                pos, key_range.start, key_range.end, REPLAY_RECORDS, REPLAY_BYTES
            )


def _first_whole(compacted_at: int) -> int:
    """The first revision whose history survives ``compact(compacted_at)``
    whole (0: nothing compacted): a delete at it leaves no record."""
    return compacted_at + 1 if compacted_at else 0
