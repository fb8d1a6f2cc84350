"""The MVCC store against a reference model (tests/kv/mvcc/model.py), by hypothesis.

Every step applies a batch of ops to both, or compacts, or reopens the
store from disk, or reads a range at a revision; after every step the
revision, the applied index and every key at the current revision agree.
"""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from liferaft.kv.errors import KVBadRequestError
from liferaft.kv.mvcc import (
    TO_END,
    Compact,
    CompactedError,
    Compare,
    DeleteRange,
    MVCCEntry,
    MVCCStore,
    Put,
    Range,
    Txn,
)
from tests.kv.mvcc.model import KEYS, Model

keys = st.sampled_from(KEYS)
values = st.binary(max_size=6)
puts = st.builds(Put, keys, values, lease=st.sampled_from([0, 5]))
deletes = st.one_of(
    st.builds(DeleteRange, keys),
    st.builds(DeleteRange, keys, st.sampled_from([b"b", b"d", b"\xff", TO_END])),
)
compares = st.one_of(
    st.builds(Compare, keys, st.just("value"), st.sampled_from(["=", "!=", "<", ">"]), values),
    st.builds(
        Compare, keys, st.sampled_from(["version", "create_revision", "mod_revision", "lease"]),
        st.sampled_from(["=", "!=", "<", ">"]), st.integers(0, 8),
    ),
)
branch = st.lists(st.one_of(puts, deletes), max_size=3).map(tuple)
txns = st.builds(Txn, st.lists(compares, max_size=2).map(tuple), branch, branch)
writes = st.one_of(puts, puts, deletes, txns, st.none())


class StoreVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="mvcc-model-")
        self.store = MVCCStore(self.dir + "/db")
        self.model = Model()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir)

    @rule(ops=st.lists(writes, min_size=1, max_size=4))
    def apply_batch(self, ops: list) -> None:  # type: ignore[type-arg]
        first = self.model.applied + 1
        entries = [MVCCEntry(first + i, op) for i, op in enumerate(ops)]
        results = self.store.apply_batch(entries)
        for e, r in zip(entries, results, strict=True):
            before = self.model.revision
            if not self.model.apply(e.index, e.op):
                assert isinstance(r, KVBadRequestError) and "duplicate key" in str(r), (e.op, r)
                continue
            if e.op is not None:
                assert r.revision == self.model.revision, (e.op, r)
            if isinstance(e.op, Txn):
                want = all(self.model.holds(c, before) for c in e.op.compare)
                assert r.succeeded is want

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        lo = self.model.compact + 1
        if lo > self.model.revision:
            return
        rev = data.draw(st.integers(lo, self.model.revision))
        self.model.applied += 1
        r = self.store.apply_batch([MVCCEntry(self.model.applied, Compact(rev))])[0]
        self.model.compact = rev
        assert r.compact_revision == rev

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = MVCCStore(self.dir + "/db")

    @rule(data=st.data(), start=keys, end=st.sampled_from([None, b"b", b"c", TO_END]),
          limit=st.integers(0, 3), keys_only=st.booleans(), count_only=st.booleans())
    def range_at(self, data: st.DataObject, start: bytes, end: bytes | None, limit: int,
                 keys_only: bool, count_only: bool) -> None:
        rev = data.draw(st.integers(0, self.model.revision))
        req = Range(start, end, rev, limit, keys_only, count_only)
        if rev and rev < self.model.compact:
            try:
                self.store.range(req)
            except CompactedError as e:
                assert e.compact_revision == self.model.compact
                return
            raise AssertionError(f"read at {rev} below compaction {self.model.compact} served")
        got = self.store.range(req)
        kvs, count = self.model.range(req)
        assert list(got.kvs) == kvs and got.count == count
        assert got.more == (not count_only and bool(limit) and count > limit)

    @precondition(lambda self: self.model.revision > 1)
    @invariant()
    def agree_now(self) -> None:
        assert self.store.revision() == self.model.revision
        assert self.store.applied_index() == self.model.applied
        assert self.store.compact_revision() == self.model.compact
        got = self.store.range(Range(b"\x00", TO_END))
        assert list(got.kvs) == self.model.range(Range(b"\x00", TO_END))[0]


TestStoreVsModel = StoreVsModel.TestCase
TestStoreVsModel.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
