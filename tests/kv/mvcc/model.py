"""A simple reference model of the MVCC store: every key's whole history in a dict.

It shares nothing with liferaft/kv/mvcc but the op and result types: a key
is a list of (revision, KeyValue or None for a tombstone), never compacted,
so a read at any revision the store still serves must agree with it.
"""

from __future__ import annotations

import random

from liferaft.kv.mvcc import (
    TO_END,
    Compact,
    Compare,
    DeleteRange,
    KeyValue,
    Op,
    Put,
    Range,
    Txn,
)


class Model:
    def __init__(self) -> None:
        self.revision = 1
        self.compact = 0
        self.applied = 0
        self.hist: dict[bytes, list[tuple[int, KeyValue | None]]] = {}

    def at(self, key: bytes, rev: int) -> KeyValue | None:
        found = None
        for r, kv in self.hist.get(key, []):
            if r <= rev:
                found = kv
        return found

    def keys(self, key: bytes, end: bytes | None, rev: int) -> list[KeyValue]:
        if end is None:
            cands = [key]
        else:
            cands = sorted(k for k in self.hist if k >= key and (end == TO_END or k < end))
        return [kv for k in cands if (kv := self.at(k, rev)) is not None]

    def range(self, req: Range, main: int | None = None) -> tuple[list[KeyValue], int]:
        """(kvs after limit, count) at req.revision (0: ``main`` or current)."""
        rev = req.revision or (main if main is not None else self.revision)
        kvs = self.keys(req.key, req.range_end, rev)
        out = kvs[: req.limit] if req.limit else kvs
        if req.keys_only:
            out = [KeyValue(kv.key, kv.create_revision, kv.mod_revision, kv.version, b"", kv.lease)
                   for kv in out]
        return ([] if req.count_only else out), len(kvs)

    def apply(self, index: int, op: Op | None) -> bool:
        """Apply an op that is valid but for etcd's duplicate-key rule of txns;
        False if that rule refuses it (then only the applied index moves)."""
        self.applied = index
        if op is None:
            return True
        if isinstance(op, Txn) and (dup_keys(op.success) or dup_keys(op.failure)):
            return False
        main = self.revision + 1
        changed = False

        def put(p: Put) -> None:
            nonlocal changed
            prev = self.at(p.key, main)
            kv = KeyValue(p.key, prev.create_revision if prev else main, main,
                          prev.version + 1 if prev else 1, p.value, p.lease)
            self.hist.setdefault(p.key, []).append((main, kv))
            changed = True

        def delete(d: DeleteRange) -> None:
            nonlocal changed
            for kv in self.keys(d.key, d.range_end, main):
                self.hist[kv.key].append((main, None))
                changed = True

        if isinstance(op, Put):
            put(op)
        elif isinstance(op, DeleteRange):
            delete(op)
        elif isinstance(op, Compact):
            self.compact = op.revision
        elif isinstance(op, Txn):
            ok = all(self.holds(c, main) for c in op.compare)
            for sub in op.success if ok else op.failure:
                if isinstance(sub, Put):
                    put(sub)
                elif isinstance(sub, DeleteRange):
                    delete(sub)
        if changed:
            self.revision = main
        return True

    def holds(self, c: Compare, main: int) -> bool:
        kv = self.at(c.key, main)
        ops = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b,
               "<": lambda a, b: a < b, ">": lambda a, b: a > b}
        if c.target == "value":
            return kv is not None and ops[c.op](kv.value, c.operand)
        return ops[c.op](0 if kv is None else getattr(kv, c.target), c.operand)


def dup_keys(branch: tuple[object, ...]) -> bool:
    """A key put twice, or put inside a delete range, in one txn branch."""
    put_keys = [o.key for o in branch if isinstance(o, Put)]
    deleted = {k for o in branch if isinstance(o, DeleteRange)
               for k in (KEYS + put_keys) if _within(k, o)}
    return len(set(put_keys)) < len(put_keys) or bool(deleted & set(put_keys))


def _within(k: bytes, d: DeleteRange) -> bool:
    if d.range_end is None:
        return k == d.key
    return k >= d.key and (d.range_end == TO_END or k < d.range_end)


KEYS = [b"a", b"ab", b"b", b"c", b"d\x00", b"\xff"]


def random_op(rnd: random.Random, value_size: int = 8) -> Op:
    """A valid write op (no compaction) over a small key set, for crash workloads."""
    key = rnd.choice(KEYS)
    value = rnd.randbytes(value_size)
    kind = rnd.random()
    if kind < 0.6:
        return Put(key, value, lease=rnd.choice([0, 0, 7]))
    if kind < 0.75:
        return DeleteRange(key)
    if kind < 0.85:
        return DeleteRange(b"a", b"c")
    return Txn(
        (Compare(key, "version", rnd.choice(["=", ">", "<", "!="]), rnd.randrange(3)),),
        (Put(key, value), DeleteRange(rnd.choice(KEYS))),
        (Put(rnd.choice(KEYS), value),),
    )


def batch(seed: int, number: int, size: int) -> list[tuple[int, Op]]:
    """Batch ``number`` (0-based) of a seeded workload: ``size`` (index, op) pairs."""
    rnd = random.Random(f"{seed}/{number}")
    first = number * size + 1
    return [(first + i, random_op(rnd)) for i in range(size)]
