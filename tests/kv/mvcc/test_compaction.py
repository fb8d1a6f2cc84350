"""Compaction spread over the log (liferaft/kv/mvcc/compaction.py): the
Compact entry moves the compact revision at once; the superseded versions
go STEP_KEYS keys per applied index after it, the same on every replica
whatever its batches, and reads never see a difference."""

from __future__ import annotations

from pathlib import Path

from liferaft.kv.mvcc import TO_END, MVCCEntry, MVCCStore, Put, Range, check_store, compaction
from liferaft.kv.mvcc.ops import Compact

KEYS = 300  # a pass of ceil(300 / 64) = 5 steps


def _records(store: MVCCStore) -> int:
    with store.read() as view:
        return sum(1 for _ in view.txn.cursor(db=view.dbs.rev))


def _fill(store: MVCCStore) -> int:
    idx = 0
    for version in range(3):
        batch = []
        for k in range(KEYS):
            idx += 1
            batch.append(MVCCEntry(idx, Put(b"k%03d" % k, b"v%d" % version)))
        store.apply_batch(batch)
    return idx


def test_a_compaction_pass_advances_one_step_per_index_and_reads_never_change(
    tmp_path: Path,
) -> None:
    store = MVCCStore(tmp_path / "db", sync=False)
    idx = _fill(store)
    before = store.range(Range(b"\x00", TO_END))
    rev = store.revision()
    idx += 1
    store.apply_batch([MVCCEntry(idx, Compact(rev))])
    assert store.compact_revision() == rev
    assert _records(store) == 3 * KEYS  # nothing dropped in the Compact's own apply
    seen: list[int] = []
    for _ in range(50):
        with store.read() as view:
            if not compaction.pending(view.txn, view.dbs):
                break
        idx += 1
        store.apply_batch([MVCCEntry(idx, None)])  # a no-op index still advances it
        seen.append(_records(store))
        assert store.range(Range(b"\x00", TO_END)) == before
    else:
        raise AssertionError("the compaction pass never ended")
    steps = -(-KEYS // compaction.STEP_KEYS)
    assert len(seen) == steps
    assert seen == sorted(seen, reverse=True) and seen[-1] == KEYS
    store.close()
    assert check_store(tmp_path / "db") == idx


def test_the_pass_depends_on_the_log_not_on_the_batches(tmp_path: Path) -> None:
    stores = [MVCCStore(tmp_path / f"db{i}", sync=False) for i in range(2)]
    for s in stores:
        idx = _fill(s)
    rev = stores[0].revision()
    tail = [MVCCEntry(idx + 1, Compact(rev)), *(MVCCEntry(idx + 2 + i, None) for i in range(3))]
    stores[0].apply_batch(tail)  # one batch
    for e in tail:
        stores[1].apply_batch([e])  # one entry at a time
    assert _records(stores[0]) == _records(stores[1]) < 3 * KEYS
    with stores[0].read() as a, stores[1].read() as b:
        ca = a.txn.get(compaction.META_CURSOR, db=a.dbs.meta)
        cb = b.txn.get(compaction.META_CURSOR, db=b.dbs.meta)
    assert ca == cb and ca is not None  # mid-pass, at the same key
    for s in stores:
        s.close()
