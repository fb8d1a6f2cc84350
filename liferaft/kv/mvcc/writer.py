"""One committed operation's effect inside the batch's LMDB write transaction.

:class:`EntryWriter` applies one entry's op at the next store revision
(``main``).  Every change it makes gets its own ``(main, sub)``; if it made
none (a delete of a missing key, a failed compare whose branch only reads),
the store revision stays where it was, as etcd's does.  Everything an op
could be refused for is checked by :func:`validate` *before* it writes, so a
refused entry changes nothing and the batch's transaction needs no nesting
(docs/architecture.md, "Trust model": a committed entry never raises out of
apply).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from typing import Protocol

import lmdb
import msgspec

from liferaft.kv.errors import KVBadRequestError
from liferaft.kv.mvcc import compaction, layout
from liferaft.kv.mvcc.layout import Dbs, Record
from liferaft.kv.mvcc.ops import (
    MAX_TXN_DEPTH,
    TO_END,
    Compact,
    CompactedError,
    CompactResult,
    Compare,
    DeleteRange,
    DeleteResult,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseNotFoundError,
    Op,
    Put,
    PutResult,
    Range,
    RangeResult,
    Txn,
    TxnOp,
    TxnResult,
    check_key,
)
from liferaft.kv.mvcc.reader import (
    TXN_RANGE_CAP,
    ReadBudget,
    check_read_revision,
    keys_in,
    live_at,
    range_in,
)

_OPS = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b, ">": lambda a, b: a > b}  # fmt: skip


#: The most ops a txn holds in all its nested txns together (liferaft's own
#: bound: etcd's 128 per level still allows a tree of tens of thousands of
#: ops, which every replica would check and apply in one entry).
MAX_TXN_TOTAL_OPS = 4096

#: The most keys the compares of one entry examine over ranges, all of
#: them together (deleted keys included; a txn holds thousands of compares,
#: nested ones on its path included); a txn whose compares span more is
#: refused, on every replica alike, since a compare decided on part of its
#: range would not be the compare asked.
MAX_COMPARE_KEYS = 2 * TXN_RANGE_CAP


def validate(op: Op | TxnOp, revision: int, compact: int) -> None:
    """Raise the error ``op`` is refused with, before it changes anything."""
    if isinstance(op, Put):
        check_key(op.key)
        if not isinstance(op.value, bytes):
            raise KVBadRequestError("value must be bytes")
        if not isinstance(op.lease, int) or op.lease < 0:
            raise KVBadRequestError(f"lease must be an id >= 0, not {op.lease!r}")
        if op.ignore_value and op.value:
            raise KVBadRequestError("value is provided (with ignore_value)")
        if op.ignore_lease and op.lease:
            raise KVBadRequestError("lease is provided (with ignore_lease)")
    elif isinstance(op, (DeleteRange, Range)):
        check_key(op.key)
        if op.range_end is not None and not isinstance(op.range_end, bytes):
            raise KVBadRequestError("range_end must be bytes")
        if isinstance(op, Range):
            if op.limit < 0:
                raise KVBadRequestError(f"limit must be >= 0, not {op.limit}")
            if not isinstance(op.revision, int):
                raise KVBadRequestError("revision must be an int")
            # A txn's range: its revision is checked only if its branch
            # runs (EntryWriter), as etcd's.
    elif isinstance(op, Txn):
        if _validate_txn(op, revision, compact, 1) > MAX_TXN_TOTAL_OPS:
            raise KVBadRequestError(
                f"a txn holds at most {MAX_TXN_TOTAL_OPS} ops in all its nested txns"
            )
        check_no_duplicate_keys(op.success)
        check_no_duplicate_keys(op.failure)
    elif isinstance(op, Compact):
        if op.revision <= compact:
            raise CompactedError(op.revision, compact)
        if op.revision > revision:
            raise FutureRevisionError(op.revision, revision)
    else:
        raise KVBadRequestError(f"not an MVCC operation: {type(op).__name__}")


def _validate_txn(op: Txn, revision: int, compact: int, depth: int) -> int:
    """Check a txn and its nested ones; the number of ops in all of them."""
    if depth > MAX_TXN_DEPTH:
        raise KVBadRequestError(f"txns nest at most {MAX_TXN_DEPTH} deep")
    for c in op.compare:
        check_key(c.key, "compare key")
        if c.op not in _OPS:
            raise KVBadRequestError(f"compare op {c.op!r} is not one of = != < >")
        want = bytes if c.target == "value" else int
        if not isinstance(c.operand, want):
            raise KVBadRequestError(f"compare on {c.target} needs a {want.__name__} operand")
        if c.range_end is not None and not isinstance(c.range_end, bytes):
            raise KVBadRequestError("compare range_end must be bytes")
    total = len(op.success) + len(op.failure)
    for sub in (*op.success, *op.failure):
        if isinstance(sub, Txn):
            total += _validate_txn(sub, revision, compact, depth + 1)
        elif isinstance(sub, Put | DeleteRange | Range):
            validate(sub, revision, compact)
        else:
            raise KVBadRequestError("a txn holds put, delete-range, range and txn ops only")
    return total


class _Spans:
    """Delete ranges, asked "does one hold this key?" in O(log n).

    A put is in some range iff the furthest end among the ranges starting
    at or before it is past it (a single key is ``[key, key + 0x00)``;
    TO_END has no end, above every key)."""

    def __init__(self, ops: list[DeleteRange]) -> None:
        spans = sorted((o.key, _end(o)) for o in ops)
        self.starts = [s for s, _ in spans]
        self.reach = list(itertools.accumulate((e for _, e in spans), max))

    def hold(self, key: bytes) -> bool:
        i = bisect.bisect_right(self.starts, key) - 1
        return i >= 0 and self.reach[i] > (0, key)


def _end(o: DeleteRange) -> tuple[int, bytes]:
    if o.range_end is None:
        return (0, o.key + b"\x00")
    return (1, b"") if o.range_end == TO_END else (0, o.range_end)


def check_no_duplicate_keys(branch: tuple[TxnOp, ...]) -> None:
    """etcd's rule (``checkIntervals``): in one branch, nested txns included,
    no key is put twice and no put falls in a delete range, since the result
    would depend on an op order a reader of the request may not expect.
    Delete ranges may overlap each other (deleting twice is deleting once),
    and the two branches of one nested txn may put the same key (only one
    runs).  One difference, on purpose: a delete to the end (range_end
    ``"\\x00"``) holds every key after its start; etcd 3.4 compares the end
    as a string and so sees no key in it."""
    _intervals(branch)


def _intervals(branch: tuple[TxnOp, ...]) -> tuple[set[bytes], list[DeleteRange]]:
    """The keys ``branch`` may put and the ranges it may delete (nested txns
    included, both their branches); KVBadRequestError on a duplicate.

    In etcd's order, which a client may notice at the edges: a nested txn's
    puts are checked against this level's deletes and those of the nested
    txns before it; this level's puts against every delete and every
    nested put."""
    dels = [o for o in branch if isinstance(o, DeleteRange)]
    spans = _Spans(dels)
    puts: set[bytes] = set()
    for sub in branch:
        if not isinstance(sub, Txn):
            continue
        then_puts, then_dels = _intervals(sub.success)
        else_puts, else_dels = _intervals(sub.failure)
        for k in then_puts:
            if k in puts or spans.hold(k):
                raise KVBadRequestError("duplicate key given in txn request")
        for k in else_puts:
            # The same key in both branches of one txn is fine: one runs.
            if (k in puts and k not in then_puts) or spans.hold(k):
                raise KVBadRequestError("duplicate key given in txn request")
        puts |= then_puts | else_puts
        if then_dels or else_dels:
            dels += then_dels + else_dels
            spans = _Spans(dels)
    for sub in branch:
        if isinstance(sub, Put):
            if sub.key in puts or spans.hold(sub.key):
                raise KVBadRequestError("duplicate key given in txn request")
            puts.add(sub.key)
    return puts, dels


SubResult = PutResult | DeleteResult | RangeResult | TxnResult


class _Cleared:
    """The key spans one entry has deleted everything in so far: disjoint,
    sorted ``(start, end)`` with ends as :func:`_end` orders them.  A put
    inside one (which the duplicate-key rule forbids in a txn, but nothing
    here relies on it) forgets the spans, so a later delete scans again."""

    def __init__(self) -> None:
        self.spans: list[tuple[bytes, tuple[int, bytes]]] = []

    def uncovered(self, op: DeleteRange) -> list[tuple[bytes, bytes | None]]:
        """The parts of ``op``'s span no earlier delete covered, as
        ``keys_in`` takes them (a single key stays as it is)."""
        if op.range_end is None:
            return [(op.key, None)]
        start, end = op.key, _end(op)
        out: list[tuple[bytes, bytes | None]] = []
        i = max(bisect.bisect_right(self.spans, (start,)) - 1, 0)
        for s, e in self.spans[i:]:
            if (0, s) >= end:
                break
            if e <= (0, start):
                continue
            if s > start:
                out.append((start, s))
            if e[0] == 1:
                return out
            start = max(start, e[1])
            if (0, start) >= end:
                return out
        out.append((start, TO_END if end[0] == 1 else end[1]))
        return out

    def add(self, op: DeleteRange) -> None:
        if op.range_end is None:
            return
        start, end = op.key, _end(op)
        if end <= (0, start):
            return  # an empty range (end at or before its key) clears nothing
        spans = self.spans
        # The last span starting before `start`, then every one starting
        # in [start, end]: merged into one (touching spans merge too).
        lo = max(bisect.bisect_right(spans, (start,)) - 1, 0)
        hi = lo
        while hi < len(spans) and (0, spans[hi][0]) <= end:
            s, e = spans[hi]
            if e < (0, start):
                lo = hi + 1  # wholly before
            else:
                start, end = min(start, s), max(end, e)
            hi += 1
        spans[lo:hi] = [(start, end)]

    def touch(self, key: bytes) -> None:
        if self.spans:
            self.spans = []


def _compare(c: Compare, rec: Record | None) -> bool:
    """``c`` on one key's live version (None: absent; a value compare fails)."""
    if c.target == "value":
        return rec is not None and bool(_OPS[c.op](rec.value, c.operand))
    actual = 0 if rec is None else getattr(rec, c.target)
    return bool(_OPS[c.op](actual, c.operand))


def _stamp(r: TxnResult, revision: int) -> TxnResult:
    """``r`` with every op's result, nested ones too, at the txn's revision."""
    subs = tuple(
        _stamp(x, revision) if isinstance(x, TxnResult)
        else msgspec.structs.replace(x, revision=revision)
        for x in r.results
    )  # fmt: skip
    return TxnResult(revision, r.succeeded, subs)


class WriteHooks(Protocol):
    """What a writer asks of the state machine around the history (leases,
    watch events); :class:`MVCCStore` alone runs without any."""

    def lease_exists(self, lease: int) -> bool:
        """True if ``lease`` may be attached to a key now."""
        ...

    def changed(self, main: int, prev: Record | None, rec: Record) -> None:
        """``rec`` was just written at revision ``main``; ``prev`` is the key's
        live version before it (None: absent).  A tombstone has ``deleted``."""
        ...


class EntryWriter:
    """Applies one validated op at revision ``current + 1`` in ``txn``.

    It raises only before its first write (a :class:`LeaseNotFoundError` for
    a put naming a lease that does not exist, checked for every put of the
    branch that runs before any of them writes), so a raise leaves the
    transaction as it found it.
    """

    def __init__(
        self,
        txn: lmdb.Transaction,
        dbs: Dbs,
        current: int,
        compact: int,
        hooks: WriteHooks | None = None,
    ) -> None:
        self.txn = txn
        self.dbs = dbs
        self.current = current
        self.compact = compact
        self.hooks = hooks
        self.main = current + 1
        self.sub = 0  # changes written so far at `main`
        # Shared by every range / range compare of this entry (apply is bounded).
        self.reads = ReadBudget()
        self.compare_keys = MAX_COMPARE_KEYS
        self.cleared = _Cleared()

    def _check_puts(self, ops: Iterable[Put], lease_first: bool = False) -> None:
        """Refuse, before any write, a put naming a lease that does not exist
        or one with ``ignore_value``/``ignore_lease`` of an absent key (the
        store as it is before the entry: no op of one txn can change a key
        another puts, by the duplicate-key rule).  Which is named when both
        fail is etcd's: a txn's put, the key; a lone put, the lease
        (``lease_first``)."""
        hooks = self.hooks
        for o in ops:
            if lease_first and o.lease and hooks is not None and not hooks.lease_exists(o.lease):
                raise LeaseNotFoundError(o.lease)
            if (o.ignore_value or o.ignore_lease) and live_at(
                self.txn, self.dbs, o.key, self.main
            ) is None:
                raise KeyNotFoundError(o.key)
            if o.lease and hooks is not None and not hooks.lease_exists(o.lease):
                raise LeaseNotFoundError(o.lease)

    @property
    def revision(self) -> int:
        """The store revision after this entry."""
        return self.main if self.sub else self.current

    def apply(self, op: Op) -> PutResult | DeleteResult | TxnResult | CompactResult:
        if isinstance(op, Put):
            self._check_puts((op,), lease_first=True)
            return self._finish(self._put(op))
        if isinstance(op, DeleteRange):
            return self._finish(self._delete(op))
        if isinstance(op, Txn):
            # etcd's order: decide every compare on the path the txn takes,
            # nested ones too, against the store before the txn writes; then
            # check its puts; then run it.  Nothing raises after the first write.
            path: list[bool] = []
            puts: list[Put] = []
            ranges: list[Range] = []
            self._decide(op, path, puts, ranges)
            self._check_puts(puts)
            # A txn's revision is current + 1 if it writes: a read at that
            # one means "as the txn left it", which 0 already says.
            for r in ranges:
                check_read_revision(r.revision, self.current, self.compact)
            res = self._txn(op, iter(path))
            return _stamp(res, self.revision)
        assert isinstance(op, Compact)
        self._compact(op.revision)
        return CompactResult(self.current, op.revision)

    def _decide(self, op: Txn, path: list[bool], puts: list[Put], ranges: list[Range]) -> None:
        """Append whether each txn on ``op``'s path succeeds (pre-order, as
        :meth:`_txn` consumes it) and collect the puts and ranges it will
        run (only those are checked, as etcd's ``checkRequests``)."""
        ok = all(self._holds(c) for c in op.compare)
        path.append(ok)
        for sub in op.success if ok else op.failure:
            if isinstance(sub, Txn):
                self._decide(sub, path, puts, ranges)
            elif isinstance(sub, Put):
                puts.append(sub)
            elif isinstance(sub, Range):
                ranges.append(sub)

    def _txn(self, op: Txn, path: Iterator[bool]) -> TxnResult:
        ok = next(path)
        results = [self._sub_op(o, path) for o in (op.success if ok else op.failure)]
        return TxnResult(0, ok, tuple(results))

    def _finish(self, r: PutResult | DeleteResult) -> PutResult | DeleteResult:
        return msgspec.structs.replace(r, revision=self.revision)

    def _sub_op(self, op: TxnOp, path: Iterator[bool]) -> SubResult:
        if isinstance(op, Txn):
            return self._txn(op, path)
        if isinstance(op, Put):
            return self._put(op)
        if isinstance(op, DeleteRange):
            return self._delete(op)
        # The txn's ranges see its earlier writes: reading at `main` does.
        at = op.revision or self.main
        return range_in(self.txn, self.dbs, op, at, self.revision, bounded=True,
                        budget=self.reads)  # fmt: skip

    def _write(self, rec: Record, prev: Record | None) -> None:
        rev = layout.pack_rev(self.main, self.sub)
        self.txn.put(rev, layout.encode_record(rec), db=self.dbs.rev)
        self.txn.put(rec.key, rev, db=self.dbs.index, dupdata=True)
        self.sub += 1
        if self.hooks is not None:
            self.hooks.changed(self.main, prev, rec)

    def _put(self, op: Put) -> PutResult:
        prev = live_at(self.txn, self.dbs, op.key, self.main)
        create = self.main if prev is None else prev.create_revision
        version = 1 if prev is None else prev.version + 1
        value, lease = op.value, op.lease
        if prev is not None:  # _check_puts refused ignore_* of an absent key
            value = prev.value if op.ignore_value else value
            lease = prev.lease if op.ignore_lease else lease
        self._write(Record(op.key, create, self.main, version, lease, value), prev)
        self.cleared.touch(op.key)
        return PutResult(0, prev.to_kv() if op.prev_kv and prev is not None else None)

    def delete(self, op: DeleteRange) -> DeleteResult:
        """A delete-range as part of a bigger change at this revision (a lease
        revoke deletes its keys one by one, all at one revision)."""
        return self._delete(op)

    def _delete(self, op: DeleteRange) -> DeleteResult:
        victims = []
        # Only what earlier deletes of this entry left: a txn may hold
        # thousands of overlapping delete ranges, each of which would scan
        # the whole span again (apply is bounded by the keys, not the ops).
        for start, end in self.cleared.uncovered(op):
            for key in keys_in(self.txn, self.dbs, start, end):
                rec = live_at(self.txn, self.dbs, key, self.main)
                if rec is not None:
                    victims.append(rec)
        self.cleared.add(op)
        # Written after the scan: a cursor over the index must not see its own writes.
        for rec in victims:
            self._write(Record(rec.key, 0, self.main, 0, 0, b"", deleted=True), rec)
        prev = tuple(r.to_kv() for r in victims) if op.prev_kv else ()
        return DeleteResult(0, len(victims), prev)

    def _holds(self, c: Compare) -> bool:
        if c.range_end is None:
            return _compare(c, live_at(self.txn, self.dbs, c.key, self.main))
        # etcd's rule: it holds for every live key of the range, and an
        # empty range is a missing key.  Bounded: apply runs on every replica.
        live = False
        for key in keys_in(self.txn, self.dbs, c.key, c.range_end):
            if self.compare_keys <= 0:
                raise KVBadRequestError(
                    f"the compares of a txn span more than {MAX_COMPARE_KEYS} keys"
                )
            self.compare_keys -= 1
            rec = live_at(self.txn, self.dbs, key, self.main)
            if rec is None:
                continue
            live = True
            if not _compare(c, rec):
                return False
        return live or _compare(c, None)

    def _compact(self, rev: int) -> None:
        """Move the compact revision now; the superseded versions go a few
        keys per applied index from here on (:mod:`.compaction`)."""
        layout.put_meta(self.txn, self.dbs, layout.META_COMPACT, rev)
        compaction.start(self.txn, self.dbs, rev)
