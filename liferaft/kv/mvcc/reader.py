"""Reads over one LMDB transaction: a key's state at a revision, and ranges.

Every function here takes the transaction it reads in, so a read-only
:class:`ReadView` (a consistent snapshot: LMDB's MVCC read transaction) and
a write in progress (which sees its own earlier changes) share one code
path.  Layout: :mod:`liferaft.kv.mvcc.layout`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType

import lmdb

from liferaft.kv.mvcc import layout
from liferaft.kv.mvcc.layout import Dbs, Record
from liferaft.kv.mvcc.ops import (
    TO_END,
    CompactedError,
    FutureRevisionError,
    KeyValue,
    Range,
    RangeResult,
)


def record_at(txn: lmdb.Transaction, dbs: Dbs, key: bytes, revision: int) -> Record | None:
    """``key``'s newest record with a main revision <= ``revision`` (a tombstone too)."""
    cur = txn.cursor(db=dbs.index)
    if not cur.set_key(key):
        return None
    if cur.set_range_dup(key, layout.pack_rev(revision + 1)):
        # Positioned at the first version after `revision`: the one before it is ours.
        if not cur.prev_dup():
            return None
    else:
        cur.set_key(key)  # every version is at or below `revision`: take the last
        cur.last_dup()
    return layout.decode_record(txn.get(cur.value(), db=dbs.rev))


def live_at(txn: lmdb.Transaction, dbs: Dbs, key: bytes, revision: int) -> Record | None:
    """``key``'s version at ``revision``; None if absent or deleted then."""
    rec = record_at(txn, dbs, key, revision)
    return None if rec is None or rec.deleted else rec


def keys_in(txn: lmdb.Transaction, dbs: Dbs, start: bytes, end: bytes | None) -> Iterator[bytes]:
    """Every key the index holds in ``[start, end)`` (``end`` None: ``start`` only)."""
    if end is None:
        cur = txn.cursor(db=dbs.index)
        if cur.set_key(start):
            yield start
        return
    cur = txn.cursor(db=dbs.index)
    ok = cur.set_range(start)
    while ok:
        key = bytes(cur.key())  # already bytes (buffers=False): no copy
        if end != TO_END and key >= end:
            return
        yield key
        ok = cur.next_nodup()


def check_read_revision(revision: int, current: int, compact: int) -> int:
    """The revision a read at ``revision`` (0: current) sees, or the error it gets."""
    rev = revision or current
    if rev < 0 or rev > current:
        raise FutureRevisionError(rev, current)
    if rev < compact:
        raise CompactedError(rev, compact)
    return rev


#: The most keys a range inside a transaction reads (with ``bounded``).
TXN_RANGE_CAP = 10_000
#: The most value bytes the ranges of one transaction return together.
TXN_READ_BYTES = 64 << 20


class ReadBudget:
    """What the ranges of one transaction may still read, all of them
    together: keys returned (or counted), keys examined and value bytes.

    Each range is bounded by :data:`TXN_RANGE_CAP` on its own; without a
    budget shared by the whole entry, a txn of thousands of ranges (4096
    ops, nested txns included) would read thousands of times that in apply,
    on every replica at once: minutes of apply and gigabytes of results
    from one request.  The budget is spent in the entry's op order, so every
    replica cuts the same ranges short at the same key."""

    def __init__(self) -> None:
        # Read at construction (not as defaults), so tests may lower the caps.
        self.keys = TXN_RANGE_CAP
        self.examined = 2 * TXN_RANGE_CAP
        self.bytes = TXN_READ_BYTES


def range_in(
    txn: lmdb.Transaction,
    dbs: Dbs,
    req: Range,
    at: int,
    current: int,
    bounded: bool = False,
    budget: ReadBudget | None = None,
) -> RangeResult:
    """``req`` read at revision ``at`` (already checked); ``current`` goes in the result.

    ``bounded`` (a range inside a transaction, read in apply on every
    replica): it stops one key past its limit (:data:`TXN_RANGE_CAP` when it
    has none) or after examining twice that many keys (deleted ones
    included), or when ``budget`` (the entry's, shared by its ranges) runs
    out, so ``count`` is the keys it returned (or counted, with
    ``count_only``), not the whole span, and ``more`` says whether it
    stopped early.  Apply must stay bounded whatever a committed entry asks."""
    kvs: list[KeyValue] = []
    count = 0
    next_key: bytes | None = None
    b = budget if budget is not None else ReadBudget()
    cap = min(req.limit or TXN_RANGE_CAP, TXN_RANGE_CAP, b.keys)
    look = min(2 * TXN_RANGE_CAP, b.examined)
    examined = 0
    size = 0
    for key in keys_in(txn, dbs, req.key, req.range_end):
        if bounded and (count >= cap or examined >= look or size >= b.bytes):
            # Past the cap, past as many keys again that were deleted at
            # `at`, or past the entry's budget: `more`, and the key to go on from.
            next_key = key
            break
        examined += 1
        rec = live_at(txn, dbs, key, at)
        if rec is None:
            continue
        count += 1
        if req.count_only:
            continue
        if req.limit and len(kvs) == req.limit:
            if next_key is None:
                next_key = key
            continue
        kv = rec.to_kv(req.keys_only)
        size += len(kv.key) + len(kv.value)
        kvs.append(kv)
    if bounded:
        b.keys -= count
        b.examined -= examined
        b.bytes -= size
    return RangeResult(current, tuple(kvs), count, next_key is not None, next_key)


class ReadView:
    """A consistent read snapshot of the store (one LMDB read transaction).

    Every read through it sees the store as of the moment it was opened,
    however many batches commit meanwhile.  Close it (or use ``with``)
    promptly: an open read transaction keeps LMDB from reusing the pages it
    sees, so the file grows while it lives.
    """

    def __init__(
        self,
        env: lmdb.Environment,
        dbs: Dbs,
        on_close: Callable[[], None] | None = None,
        *,
        txn: lmdb.Transaction | None = None,
    ) -> None:
        self._on_close = on_close  # the store's: it may close the environment now
        # ``txn``: the store's open write transaction (a deferred commit,
        # store.py "Deferred commits"), read as it stands and not ended here.
        self._own = txn is None
        self._txn = env.begin(buffers=False) if txn is None else txn
        self._dbs = dbs
        self.revision = layout.get_meta(self._txn, dbs, layout.META_REVISION)
        """The store revision this view sees."""
        self.compact_revision = layout.get_meta(self._txn, dbs, layout.META_COMPACT)
        self.applied_index = layout.get_meta(self._txn, dbs, layout.META_APPLIED)

    @property
    def txn(self) -> lmdb.Transaction:
        """The read transaction (for the session and lease reads)."""
        return self._txn

    @property
    def dbs(self) -> Dbs:
        return self._dbs

    def range(self, req: Range) -> RangeResult:
        """``req`` at its revision; raises :class:`CompactedError` or
        :class:`FutureRevisionError` for a revision it cannot read."""
        at = check_read_revision(req.revision, self.revision, self.compact_revision)
        return range_in(self._txn, self._dbs, req, at, self.revision)

    def get(self, key: bytes, revision: int = 0) -> KeyValue | None:
        """``key`` at ``revision`` (0: this view's), or None."""
        at = check_read_revision(revision, self.revision, self.compact_revision)
        rec = live_at(self._txn, self._dbs, key, at)
        return None if rec is None else rec.to_kv()

    def changes(
        self, start_rev: int, start: bytes, end: bytes | None
    ) -> Iterator[tuple[int, KeyValue | None, KeyValue, KeyValue | None]]:
        """Every change of a key in ``[start, end)`` (``end`` None: no bound)
        from ``start_rev`` up to this view's revision, in revision order:
        ``(revision, kv, key_and_mod, prev)``.  ``kv`` is the key after the
        change, None for a delete; ``key_and_mod`` carries the key and the
        changing revision either way (a tombstone's shape is the caller's);
        ``prev`` the key just before it (None if absent then).

        Reads the ``rev`` database in key order, which is revision order
        (layout.py).  A caller must start above the compact revision: below
        it history is gone, and a delete at it leaves no record.
        """
        for main, rec in self._records(start_rev):
            if start <= rec.key and (end is None or rec.key < end):
                yield self._change(main, rec)

    def changes_chunk(
        self, start_rev: int, start: bytes, end: bytes | None, max_records: int, max_bytes: int
    ) -> tuple[list[tuple[int, KeyValue | None, KeyValue, KeyValue | None]], int | None]:
        """As :meth:`changes`, but stop at the first revision boundary after
        reading ``max_records`` records (of any key) or collecting about
        ``max_bytes`` of values: ``(changes, next)``, ``next`` the revision
        to go on from, None when this view's revision was reached.  Whole
        revisions only, so a revision is never split between two chunks."""
        out: list[tuple[int, KeyValue | None, KeyValue, KeyValue | None]] = []
        size = last = 0
        for seen, (main, rec) in enumerate(self._records(start_rev)):
            if main != last and (seen >= max_records or size >= max_bytes):
                return out, main
            last = main
            if start <= rec.key and (end is None or rec.key < end):
                ch = self._change(main, rec)
                size += len(rec.key) + len(rec.value) + (0 if ch[3] is None else len(ch[3].value))
                out.append(ch)
        return out, None

    def _records(self, start_rev: int) -> Iterator[tuple[int, Record]]:
        """Every record from ``start_rev`` up to this view's revision, in order."""
        cur = self._txn.cursor(db=self._dbs.rev)
        if not cur.set_range(layout.pack_rev(start_rev)):
            return
        for raw_rev, raw in cur:
            main, _sub = layout.unpack_rev(raw_rev)
            if main > self.revision:
                return
            yield main, layout.decode_record(raw)

    def _change(
        self, main: int, rec: Record
    ) -> tuple[int, KeyValue | None, KeyValue, KeyValue | None]:
        before = live_at(self._txn, self._dbs, rec.key, main - 1)
        prev = None if before is None else before.to_kv()
        mark = KeyValue(rec.key, 0, main, 0, b"", 0)
        return main, (None if rec.deleted else rec.to_kv()), mark, prev

    def close(self) -> None:
        """End the read transaction (again: nothing)."""
        if self._own:
            self._txn.abort()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def __enter__(self) -> ReadView:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
