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
from typing import Protocol

import lmdb
import msgspec

from liferaft.kv.errors import KVBadRequestError
from liferaft.kv.mvcc import layout
from liferaft.kv.mvcc.layout import Dbs, Record
from liferaft.kv.mvcc.ops import (
    TO_END,
    Compact,
    CompactedError,
    CompactResult,
    Compare,
    DeleteRange,
    DeleteResult,
    FutureRevisionError,
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
from liferaft.kv.mvcc.reader import check_read_revision, keys_in, live_at, range_in

_OPS = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b, ">": lambda a, b: a > b}  # fmt: skip


def validate(op: Op | TxnOp, revision: int, compact: int) -> None:
    """Raise the error ``op`` is refused with, before it changes anything."""
    if isinstance(op, Put):
        check_key(op.key)
        if not isinstance(op.value, bytes):
            raise KVBadRequestError("value must be bytes")
        if not isinstance(op.lease, int) or op.lease < 0:
            raise KVBadRequestError(f"lease must be an id >= 0, not {op.lease!r}")
    elif isinstance(op, (DeleteRange, Range)):
        check_key(op.key)
        if op.range_end is not None and not isinstance(op.range_end, bytes):
            raise KVBadRequestError("range_end must be bytes")
        if isinstance(op, Range):
            if op.limit < 0:
                raise KVBadRequestError(f"limit must be >= 0, not {op.limit}")
            # A txn's revision is revision + 1 if it writes: a read at that
            # one means "as the txn left it", which 0 already says.
            check_read_revision(op.revision, revision, compact)
    elif isinstance(op, Txn):
        for c in op.compare:
            check_key(c.key, "compare key")
            if c.op not in _OPS:
                raise KVBadRequestError(f"compare op {c.op!r} is not one of = != < >")
            want = bytes if c.target == "value" else int
            if not isinstance(c.operand, want):
                raise KVBadRequestError(f"compare on {c.target} needs a {want.__name__} operand")
        for sub in (*op.success, *op.failure):
            if isinstance(sub, Txn | Compact):
                raise KVBadRequestError("a txn holds put, delete-range and range ops only")
            validate(sub, revision, compact)
        check_no_duplicate_keys(op.success)
        check_no_duplicate_keys(op.failure)
    elif isinstance(op, Compact):
        if op.revision <= compact:
            raise CompactedError(op.revision, compact)
        if op.revision > revision:
            raise FutureRevisionError(op.revision, revision)
    else:
        raise KVBadRequestError(f"not an MVCC operation: {type(op).__name__}")


def check_no_duplicate_keys(branch: tuple[TxnOp, ...]) -> None:
    """etcd's rule (``checkIntervals``): in one branch, no key is put twice and
    no put falls in a delete range, since the result would depend on an op
    order a reader of the request may not expect.  Delete ranges may overlap
    each other (deleting twice is deleting once)."""
    puts = [o.key for o in branch if isinstance(o, Put)]
    singles = {o.key for o in branch if isinstance(o, DeleteRange) and o.range_end is None}
    # Checked in O(n log n): a committed txn may hold thousands of ops, and a
    # check pair by pair would stall every replica's apply on one entry.
    # A put is in some range iff the furthest end among the ranges starting
    # at or before it is past it (TO_END: no end, above every key).
    spans = sorted(
        (o.key, (1, b"") if o.range_end == TO_END else (0, o.range_end))
        for o in branch
        if isinstance(o, DeleteRange) and o.range_end is not None
    )
    starts = [s for s, _ in spans]
    reach = list(itertools.accumulate((e for _, e in spans), max))
    seen: set[bytes] = set()
    for key in puts:
        i = bisect.bisect_right(starts, key) - 1
        if key in seen or key in singles or (i >= 0 and reach[i] > (0, key)):
            raise KVBadRequestError("duplicate key given in txn request")
        seen.add(key)


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

    def _check_leases(self, ops: tuple[TxnOp, ...]) -> None:
        hooks = self.hooks
        if hooks is None:
            return
        for o in ops:
            if isinstance(o, Put) and o.lease and not hooks.lease_exists(o.lease):
                raise LeaseNotFoundError(o.lease)

    @property
    def revision(self) -> int:
        """The store revision after this entry."""
        return self.main if self.sub else self.current

    def apply(self, op: Op) -> PutResult | DeleteResult | TxnResult | CompactResult:
        if isinstance(op, Put):
            self._check_leases((op,))
            return self._finish(self._put(op))
        if isinstance(op, DeleteRange):
            return self._finish(self._delete(op))
        if isinstance(op, Txn):
            ok = all(self._holds(c) for c in op.compare)
            branch = op.success if ok else op.failure
            self._check_leases(branch)
            results = [self._sub_op(o) for o in branch]
            rev = self.revision
            subs = tuple(msgspec.structs.replace(r, revision=rev) for r in results)
            return TxnResult(rev, ok, subs)
        assert isinstance(op, Compact)
        self._compact(op.revision)
        return CompactResult(self.current, op.revision)

    def _finish(self, r: PutResult | DeleteResult) -> PutResult | DeleteResult:
        return msgspec.structs.replace(r, revision=self.revision)

    def _sub_op(self, op: Put | DeleteRange | Range) -> PutResult | DeleteResult | RangeResult:
        if isinstance(op, Put):
            return self._put(op)
        if isinstance(op, DeleteRange):
            return self._delete(op)
        # The txn's ranges see its earlier writes: reading at `main` does.
        at = op.revision or self.main
        return range_in(self.txn, self.dbs, op, at, self.revision, bounded=True)

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
        self._write(Record(op.key, create, self.main, version, op.lease, op.value), prev)
        return PutResult(0, prev.to_kv() if op.prev_kv and prev is not None else None)

    def delete(self, op: DeleteRange) -> DeleteResult:
        """A delete-range as part of a bigger change at this revision (a lease
        revoke deletes its keys one by one, all at one revision)."""
        return self._delete(op)

    def _delete(self, op: DeleteRange) -> DeleteResult:
        victims = []
        for key in keys_in(self.txn, self.dbs, op.key, op.range_end):
            rec = live_at(self.txn, self.dbs, key, self.main)
            if rec is not None:
                victims.append(rec)
        # Written after the scan: a cursor over the index must not see its own writes.
        for rec in victims:
            self._write(Record(rec.key, 0, self.main, 0, 0, b"", deleted=True), rec)
        prev = tuple(r.to_kv() for r in victims) if op.prev_kv else ()
        return DeleteResult(0, len(victims), prev)

    def _holds(self, c: Compare) -> bool:
        rec = live_at(self.txn, self.dbs, c.key, self.main)
        if c.target == "value":
            return rec is not None and _OPS[c.op](rec.value, c.operand)
        actual = 0 if rec is None else getattr(rec, c.target)
        return bool(_OPS[c.op](actual, c.operand))

    def _compact(self, rev: int) -> None:
        """Drop every version superseded at or before ``rev``; a key's latest
        version at ``rev`` stays unless it is a tombstone (etcd's rule), so a
        read at ``rev`` or later sees what it saw before."""
        txn, dbs = self.txn, self.dbs
        cur = txn.cursor(db=dbs.index)
        ok = cur.first()
        while ok:
            key = cur.key()
            old = [v for v in cur.iternext_dup(keys=False) if layout.unpack_rev(v)[0] <= rev]
            if old:
                last = layout.decode_record(txn.get(old[-1], db=dbs.rev))
                drop = old if last.deleted else old[:-1]
                for v in drop:
                    txn.delete(key, v, db=dbs.index)
                    txn.delete(v, db=dbs.rev)
            # Deletes move the cursor: find the next key afresh.
            ok = cur.set_range(key) and (cur.key() != key or cur.next_nodup())
        layout.put_meta(txn, dbs, layout.META_COMPACT, rev)

