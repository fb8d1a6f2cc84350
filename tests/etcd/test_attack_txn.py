"""Attacks on apply through etcd's Txn: one request of thousands of ops
(etcd's 128 per level, nested, up to 4096 in all) must not make every
replica read thousands of times a range's cap in apply.

Found by the adversarial review: 4032 ranges over a 10,000-key prefix were
one entry that each replica would apply for minutes while building ~15 GB
of results (measured: 32 such ranges took 1 s and 120 MB), and overlapping
delete ranges or range compares scanned the span once per op.  The caps
are lowered here so the tests stay small; the mechanism is the one the
real caps use."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.kv.errors import KVBadRequestError
from liferaft.kv.mvcc import (
    TO_END,
    Compare,
    DeleteRange,
    DeleteResult,
    MVCCEntry,
    MVCCStore,
    Put,
    Range,
    RangeResult,
    Txn,
    TxnResult,
    reader,
    writer,
)

N = 120


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s: Any = MVCCStore(tmp_path / "db")
    index = iter(range(1, 10**6))
    s.do = lambda op: s.apply_batch([MVCCEntry(next(index), op)])[0]
    s.apply_batch([MVCCEntry(next(index), Put(b"k/%04d" % i, b"v" * 10)) for i in range(N)])
    yield s
    s.close()


def ranges(res: Any) -> list[RangeResult]:
    assert isinstance(res, TxnResult), res
    return [r for r in res.results if isinstance(r, RangeResult)]


def test_the_ranges_of_one_txn_share_one_read_budget(store: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(reader, "TXN_RANGE_CAP", 50)
    got = ranges(store.do(Txn((), tuple(Range(b"k/", b"k0") for _ in range(3)))))
    # The first range takes the whole budget; the others stop at once,
    # saying there is more, as a range past its own cap does.
    assert [(len(r.kvs), r.count, r.more) for r in got] == [(50, 50, True), (0, 0, True),
                                                           (0, 0, True)]  # fmt: skip
    assert got[1].next_key == b"k/0000"
    # count_only and keys_only ranges spend it too (they examine the keys).
    got = ranges(store.do(Txn((), (Range(b"k/", b"k0", count_only=True), Range(b"k/", b"k0")))))
    assert [(r.count, r.more) for r in got] == [(50, True), (0, True)]
    # Each entry has its own: a single range still gets its whole cap.
    (one,) = ranges(store.do(Txn((), (Range(b"k/", b"k0"),))))
    assert (one.count, one.more) == (50, True)


def test_the_ranges_of_one_txn_share_a_byte_budget(store: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(reader, "TXN_READ_BYTES", 16 * 5)  # 5 keys of 6 + 10 bytes
    first, second = ranges(store.do(Txn((), (Range(b"k/", b"k0"), Range(b"k/0050")))))
    assert (first.count, first.more, second.count, second.more) == (5, True, 0, True)


def test_the_compares_of_one_txn_share_one_budget(store: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(writer, "MAX_COMPARE_KEYS", 100)
    over_60 = Compare(b"k/", "version", ">", 0, b"k/0060")
    assert isinstance(store.do(Txn((over_60,), ())), TxnResult)
    # Two compares of 60 keys each: 120 keys examined in all, refused (on
    # every replica alike, before anything is written).
    res = store.do(Txn((over_60, over_60), (Put(b"x", b"1"),)))
    assert isinstance(res, KVBadRequestError) and "span more than 100 keys" in str(res)
    # Nested compares on the path taken count too.
    inner = Txn((over_60,), (Put(b"x", b"1"),))
    assert isinstance(store.do(Txn((over_60,), (inner,))), KVBadRequestError)
    with store.read() as view:
        assert view.get(b"x") is None


def test_overlapping_delete_ranges_scan_their_span_once(store: Any, monkeypatch: Any) -> None:
    looked: list[bytes] = []
    real = reader.live_at

    def counting(txn: Any, dbs: Any, key: bytes, revision: int) -> Any:
        looked.append(key)
        return real(txn, dbs, key, revision)

    monkeypatch.setattr(writer, "live_at", counting)
    dels = tuple(DeleteRange(b"k/", b"k0" if i % 2 else TO_END) for i in range(64))
    res = store.do(Txn((), (*dels, DeleteRange(b"k/0007", b"k/0009"))))
    assert isinstance(res, TxnResult)
    deleted = [r.deleted for r in res.results if isinstance(r, DeleteResult)]
    assert deleted[0] == N and sum(deleted) == N
    assert len(looked) <= N + 1  # not 64 times the span


# The spans left to scan, against every key of a small alphabet.
_keys = st.text("ab\x00", min_size=1, max_size=3).map(str.encode)
_dels = st.builds(DeleteRange, _keys, st.one_of(st.none(), _keys, st.just(TO_END)))
_UNIVERSE = [bytes(t) for n in (1, 2, 3) for t in itertools.product(b"ab\x00", repeat=n)]


def _span(d: DeleteRange, k: bytes) -> bool:
    if d.range_end is None:
        return k == d.key
    return k >= d.key and (d.range_end == TO_END or k < d.range_end)


def _in_parts(parts: list[tuple[bytes, bytes | None]], k: bytes) -> bool:
    return any(_span(DeleteRange(s, e), k) for s, e in parts)


@settings(max_examples=300, deadline=None)
@given(st.lists(_dels, max_size=8), _dels)
def test_a_delete_scans_exactly_what_earlier_deletes_left(
    earlier: list[DeleteRange], d: DeleteRange
) -> None:
    c = writer._Cleared()
    for e in earlier:
        c.add(e)
    parts = c.uncovered(d)
    if d.range_end is None:  # one key: looked up as it is (one lookup)
        assert parts == [(d.key, None)]
        return
    for k in _UNIVERSE:
        covered = any(_span(e, k) and e.range_end is not None for e in earlier)
        assert _in_parts(parts, k) == (_span(d, k) and not covered), (k, parts)


def test_an_empty_delete_range_before_a_real_one_clears_nothing(store: Any) -> None:
    # Found by the property above: an empty range (end before its key) was
    # recorded as cleared and made a later delete skip live keys.
    res = store.do(Txn((), (DeleteRange(b"k/0050", b"k/0010"), DeleteRange(b"k/", TO_END))))
    assert isinstance(res, TxnResult)
    assert [r.deleted for r in res.results if isinstance(r, DeleteResult)] == [0, N]
    with store.read() as view:
        assert view.range(Range(b"k/", b"k0", count_only=True)).count == 0
