"""The MVCC store as the watch hub's history (liferaft/kv/watch_history.py).

A watcher that starts in the past replays from the real LMDB store and
then joins the live stream: every event once, in revision order, with
prev_kv from the store; a start the store can no longer serve whole is
refused with the first revision it can.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from liferaft.kv.mvcc import Compact, DeleteRange, MVCCEntry, MVCCStore, Op, Put, Txn
from liferaft.kv.mvcc.ops import CompactedError, KeyValue
from liferaft.kv.watch import Watcher, WatchHub
from liferaft.kv.watch_history import StoreHistory
from liferaft.kv.watch_types import EventKind, KeyRange, WatchEvent


def _store(tmp_path: Path) -> MVCCStore:
    return MVCCStore(tmp_path / "db", sync=False)


def _apply(store: MVCCStore, *ops: Op) -> None:
    base = store.applied_index()
    store.apply_batch([MVCCEntry(base + i + 1, op) for i, op in enumerate(ops)])


def _brief(evs: list[WatchEvent]) -> list[tuple[int, str, bytes, bytes, bytes | None]]:
    def prev(e: WatchEvent) -> bytes | None:
        return None if e.prev_kv is None else e.prev_kv.value

    return [(e.revision, e.kind.value, e.key, e.kv.value, prev(e)) for e in evs]


def test_history_is_every_change_in_revision_order_with_prev(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        _apply(store, Put(b"a", b"1"), Put(b"b", b"1"), Put(b"a", b"2"))  # revisions 2, 3, 4
        _apply(store, DeleteRange(b"a"))  # 5
        _apply(store, Txn(success=(Put(b"c", b"1"), Put(b"b", b"2"))))  # 6: two keys at once
        _apply(store, DeleteRange(b"zzz"))  # deletes nothing: no revision
        h = StoreHistory(store)
        got = list(h.history(2, KeyRange.prefix(b"")))
        assert _brief(got) == [
            (2, "put", b"a", b"1", None),
            (3, "put", b"b", b"1", None),
            (4, "put", b"a", b"2", b"1"),
            (5, "delete", b"a", b"", b"2"),
            (6, "put", b"c", b"1", None),
            (6, "put", b"b", b"2", b"1"),
        ]
        tomb = got[3].kv  # a delete's kv is a tombstone, as in etcd
        assert tomb == KeyValue(b"a", 0, 5, 0, b"", 0)
        put = got[2].kv
        assert (put.create_revision, put.mod_revision, put.version) == (2, 4, 2)
        assert _brief(list(h.history(4, KeyRange.single(b"b")))) == [(6, "put", b"b", b"2", b"1")]
        assert list(h.history(7, KeyRange.prefix(b""))) == []
    finally:
        store.close()


def test_a_start_at_or_below_the_compact_revision_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    try:
        _apply(store, Put(b"a", b"1"), Put(b"a", b"2"), DeleteRange(b"a"))  # 2, 3, 4 (delete)
        _apply(store, Put(b"b", b"1"))  # 5
        h = StoreHistory(store)
        assert h.compact_revision == 0
        _apply(store, Compact(4))  # the tombstone at 4 leaves no record
        assert h.compact_revision == 5
        with pytest.raises(CompactedError) as err:
            list(h.history(4, KeyRange.prefix(b"")))
        assert err.value.compact_revision == 5
        assert _brief(list(h.history(5, KeyRange.prefix(b"")))) == [(5, "put", b"b", b"1", None)]
    finally:
        store.close()


async def test_a_past_watcher_replays_from_the_store_then_joins_live(tmp_path: Path) -> None:
    """Batches are applied and published one by one (the hub is fed from the
    store itself, as the wiring will be); watchers open at random past
    revisions in between.  Each must see exactly the store's events of its
    range from its start, once, in order."""
    rng = random.Random(7)
    store = _store(tmp_path)
    try:
        history = StoreHistory(store)
        hub = WatchHub(history, store.revision())
        watchers: list[tuple[int, KeyRange, Watcher, list[WatchEvent]]] = []
        keys = [b"k%d" % i for i in range(6)]
        for _ in range(40):
            before = store.revision()
            ops = [
                Put(rng.choice(keys), b"v%d" % rng.randrange(100))
                if rng.random() < 0.8
                else DeleteRange(rng.choice(keys))
                for _ in range(rng.randrange(1, 4))
            ]
            _apply(store, *ops)
            new = list(history.history(before + 1, KeyRange.prefix(b"")))
            hub.publish(new, store.revision())
            if rng.random() < 0.3:
                start = rng.randrange(2, store.revision() + 2)
                kr = rng.choice([KeyRange.prefix(b""), KeyRange.single(rng.choice(keys))])
                watchers.append((start, kr, hub.watch(kr, start_revision=start, prev_kv=True), []))
            for _, _, w, seen in watchers:  # drain a little, as a slow client would
                seen.extend(i for i in w.ready(rng.randrange(1, 8)) if isinstance(i, WatchEvent))
        assert watchers, "no watcher was opened"
        for start, kr, w, seen in watchers:
            while batch := w.ready(1000):
                seen.extend(i for i in batch if isinstance(i, WatchEvent))
            want = list(history.history(start, kr))
            assert _brief(seen) == _brief(want), (start, kr)
            assert [e.kind for e in seen].count(EventKind.DELETE) == [
                e.kind for e in want
            ].count(EventKind.DELETE)
            w.close()
        assert hub.watcher_count == 0
    finally:
        store.close()
