"""Unit tests of the MVCC store: each operation and its edges (docs/kv.md, "MVCC store")."""

from __future__ import annotations

from pathlib import Path

import lmdb
import pytest

from liferaft.kv.errors import KVBadRequestError
from liferaft.kv.mvcc import (
    TO_END,
    Compact,
    CompactedError,
    Compare,
    DeleteRange,
    FutureRevisionError,
    MVCCEntry,
    MVCCStore,
    Put,
    Range,
    StoreFormatError,
    Txn,
    check_store,
    layout,
    open_copy,
    prefix_end,
    receive_copy,
)


class Applier:
    """A store fed one entry at a time with growing log indexes."""

    def __init__(self, path: Path) -> None:
        self.store = MVCCStore(path)
        self.index = 0

    def __call__(self, *ops):  # type: ignore[no-untyped-def]
        entries = []
        for op in ops:
            self.index += 1
            entries.append(MVCCEntry(self.index, op))
        results = self.store.apply_batch(entries)
        return results[0] if len(results) == 1 else results


@pytest.fixture
def apply(tmp_path: Path):  # type: ignore[no-untyped-def]
    a = Applier(tmp_path / "db")
    yield a
    a.store.close()


def keys(store: MVCCStore, req: Range) -> list[bytes]:
    return [kv.key for kv in store.range(req).kvs]


def test_new_store_starts_at_revision_1_and_index_0(apply: Applier) -> None:
    assert (apply.store.revision(), apply.store.applied_index()) == (1, 0)


def test_put_sets_create_mod_version_and_lease(apply: Applier) -> None:
    assert apply(Put(b"k", b"v1", lease=9)).revision == 2
    r = apply(Put(b"k", b"v2", prev_kv=True))
    assert r.revision == 3
    assert r.prev_kv.value == b"v1" and r.prev_kv.lease == 9
    kv = apply.store.range(Range(b"k")).kvs[0]
    assert (kv.create_revision, kv.mod_revision, kv.version, kv.lease) == (2, 3, 2, 0)


def test_revision_grows_only_when_something_changes(apply: Applier) -> None:
    apply(Put(b"k", b"v"))
    assert apply(DeleteRange(b"missing")).revision == 2  # nothing deleted
    assert apply(DeleteRange(b"x", b"z")).deleted == 0
    assert apply(Txn((Compare(b"k", "value", "=", b"no"),), (Put(b"k", b"w"),))).revision == 2
    assert apply(None) is None
    assert apply.store.revision() == 2
    assert apply.store.applied_index() == 5  # every entry counts as applied


def test_delete_resets_version_and_create_revision(apply: Applier) -> None:
    apply(Put(b"k", b"1"), Put(b"k", b"2"))
    d = apply(DeleteRange(b"k", prev_kv=True))
    assert (d.revision, d.deleted, d.prev_kvs[0].version) == (4, 1, 2)
    assert apply.store.range(Range(b"k")).count == 0
    apply(Put(b"k", b"3"))
    kv = apply.store.range(Range(b"k")).kvs[0]
    assert (kv.create_revision, kv.version) == (5, 1)


def test_delete_range_is_one_revision_with_tombstones_readable_before(apply: Applier) -> None:
    apply(Put(b"a", b"1"), Put(b"b", b"2"), Put(b"c", b"3"))
    assert apply(DeleteRange(b"a", b"c")).deleted == 2
    assert apply.store.revision() == 5
    assert keys(apply.store, Range(b"a", TO_END)) == [b"c"]
    assert keys(apply.store, Range(b"a", TO_END, revision=4)) == [b"a", b"b", b"c"]


def test_range_at_past_revision_and_prefix(apply: Applier) -> None:
    apply(Put(b"p/1", b"a"), Put(b"p/2", b"b"), Put(b"q", b"c"), Put(b"p/1", b"z"))
    assert keys(apply.store, Range(b"p/", prefix_end(b"p/"))) == [b"p/1", b"p/2"]
    old = apply.store.range(Range(b"p/1", revision=2)).kvs[0]
    assert (old.value, old.version) == (b"a", 1)
    assert apply.store.range(Range(b"p/2", revision=2)).kvs == ()  # not yet created
    assert prefix_end(b"a\xff") == b"b" and prefix_end(b"\xff") == TO_END


def test_limit_keys_only_count_only_and_continuation(apply: Applier) -> None:
    apply(*(Put(bytes([c]), b"v" * 5) for c in b"abcde"))
    r = apply.store.range(Range(b"a", TO_END, limit=2, keys_only=True))
    assert [kv.key for kv in r.kvs] == [b"a", b"b"] and r.kvs[0].value == b""
    assert (r.count, r.more, r.next_key) == (5, True, b"c")
    seen = []
    req = Range(b"a", TO_END, limit=2)
    while True:
        page = apply.store.range(req)
        seen += [kv.key for kv in page.kvs]
        if not page.more:
            break
        req = Range(page.next_key, TO_END, limit=2)
    assert seen == [b"a", b"b", b"c", b"d", b"e"]
    c = apply.store.range(Range(b"a", TO_END, count_only=True))
    assert (c.count, c.kvs, c.more) == (5, (), False)


def test_txn_compares_and_branches(apply: Applier) -> None:
    apply(Put(b"k", b"v", lease=3))
    for target, op, operand, want in [
        ("value", "=", b"v", True), ("value", "!=", b"v", False), ("version", ">", 0, True),
        ("create_revision", "=", 2, True), ("mod_revision", "<", 2, False),
        ("lease", "=", 3, True),
    ]:
        r = apply(Txn((Compare(b"k", target, op, operand),), (Range(b"k"),), ()))
        assert r.succeeded is want, (target, op)
    # A missing key: numbers are 0, a value condition is false.
    assert apply(Txn((Compare(b"nope", "version", "=", 0),))).succeeded
    assert not apply(Txn((Compare(b"nope", "value", "!=", b"x"),))).succeeded


def test_txn_is_one_revision_and_its_ops_see_each_other(apply: Applier) -> None:
    apply(Put(b"a", b"1"))
    r = apply(Txn(
        (Compare(b"a", "version", "=", 1),),
        (Put(b"b", b"2"), DeleteRange(b"a"), Range(b"a", TO_END)),
        (Put(b"x", b"never"),),
    ))
    assert r.succeeded and r.revision == 3 and apply.store.revision() == 3
    assert [kv.key for kv in r.results[2].kvs] == [b"b"]
    assert all(sub.revision == 3 for sub in r.results)
    assert keys(apply.store, Range(b"a", TO_END)) == [b"b"]


def test_refused_op_changes_nothing_and_batch_goes_on(apply: Applier) -> None:
    apply(Put(b"a", b"1"))
    bad_txn = Txn((), (Put(b"b", b"2"), Range(b"a", revision=99)))  # the range is refused
    results = apply(Put(b"", b"x"), Put(b"k" * 512, b"x"), bad_txn, Put(b"c", b"3"))
    assert isinstance(results[0], KVBadRequestError)
    assert isinstance(results[1], KVBadRequestError) and "511" in str(results[1])
    assert isinstance(results[2], FutureRevisionError)
    assert results[3].revision == 3  # the refused entries took no revision
    assert keys(apply.store, Range(b"a", TO_END)) == [b"a", b"c"]
    assert apply.store.applied_index() == 5


def test_compact_keeps_latest_and_refuses_older_reads(apply: Applier) -> None:
    apply(Put(b"a", b"1"), Put(b"a", b"2"), Put(b"b", b"1"), DeleteRange(b"b"), Put(b"a", b"3"))
    # revisions: a=2,3  b=4  b deleted 5  a=6
    r = apply(Compact(5))
    assert (r.compact_revision, r.revision) == (5, 6)
    assert apply.store.revision() == 6 and apply.store.compact_revision() == 5
    with pytest.raises(CompactedError) as e:
        apply.store.range(Range(b"a", revision=4))
    assert e.value.compact_revision == 5 and "compact revision 5" in str(e.value)
    assert apply.store.range(Range(b"a", revision=5)).kvs[0].value == b"2"
    assert keys(apply.store, Range(b"a", TO_END, revision=5)) == [b"a"]
    assert apply.store.range(Range(b"a")).kvs[0].value == b"3"
    def revs() -> list[int]:
        with apply.store._env.begin() as txn:
            return [layout.unpack_rev(k)[0] for k, _ in txn.cursor(db=apply.store._dbs.rev)]

    # The old versions go with the next applied index (liferaft/kv/mvcc/compaction.py),
    # not in the Compact entry's own apply.
    assert revs() == [2, 3, 4, 5, 6]
    apply(Put(b"z", b"0"))  # revision 7
    # History below 5 is really gone: a keeps revisions 3 and 6, b nothing.
    assert revs() == [3, 6, 7]
    assert isinstance(apply(Compact(5)), CompactedError)  # not past the last one
    assert isinstance(apply(Compact(8)), FutureRevisionError)
    with pytest.raises(FutureRevisionError):
        apply.store.range(Range(b"a", revision=8))


def test_read_view_is_a_consistent_snapshot(apply: Applier) -> None:
    apply(Put(b"a", b"1"))
    with apply.store.read() as view:
        apply(Put(b"a", b"2"), Put(b"b", b"2"))
        assert view.revision == 2
        assert view.get(b"a").value == b"1" and view.get(b"b") is None
    assert apply.store.read().get(b"a").value == b"2"


def test_reopen_resumes_and_refuses_an_old_index(tmp_path: Path) -> None:
    a = Applier(tmp_path / "db")
    a(Put(b"a", b"1"), Put(b"b", b"2"))
    a.store.close()
    store = MVCCStore(tmp_path / "db")
    assert (store.applied_index(), store.revision()) == (2, 3)
    with pytest.raises(ValueError, match="at or below applied index 2"):
        store.apply_batch([MVCCEntry(2, Put(b"c", b"3"))])
    assert store.applied_index() == 2
    store.close()


def test_full_map_grows_and_the_batch_applies(tmp_path: Path) -> None:
    store = MVCCStore(tmp_path / "db", map_size=64 * 1024)
    store.apply_batch([MVCCEntry(i, Put(b"k%d" % i, b"x" * 1000)) for i in range(1, 200)])
    assert store.range(Range(b"k", TO_END, count_only=True)).count == 199
    store.close()


def test_unknown_format_version_is_refused_naming_both(tmp_path: Path) -> None:
    MVCCStore(tmp_path / "db").close()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=3)
    with env.begin(write=True) as txn:
        txn.put(layout.META_FORMAT, (7).to_bytes(4, "big"), db=env.open_db(layout.DB_META, txn=txn))
    env.close()
    with pytest.raises(StoreFormatError) as e:
        MVCCStore(tmp_path / "db")
    msg = str(e.value)
    assert "format version 7" in msg and f"reads version {layout.FORMAT_VERSION}" in msg
    assert "\n" not in msg


def test_other_lmdb_database_or_a_file_is_refused(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "other"))
    with env.begin(write=True) as txn:
        txn.put(b"someone", b"else's")
    env.close()
    with pytest.raises(StoreFormatError, match="not an MVCC store"):
        MVCCStore(tmp_path / "other")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreFormatError, match="cannot open"):
        MVCCStore(tmp_path / "file")


def test_copies_are_consistent_and_checked(apply: Applier, tmp_path: Path) -> None:
    apply(Put(b"a", b"1"), Put(b"b", b"2"), DeleteRange(b"a"))
    apply.store.copy_to(tmp_path / "copy")
    receive_copy(apply.store.stream_copy(chunk_size=4096), tmp_path / "streamed")
    apply(Put(b"c", b"after the copy"))
    for name in ("copy", "streamed"):
        assert check_store(tmp_path / name) == 3
        store = open_copy(tmp_path / name)
        assert keys(store, Range(b"a", TO_END)) == [b"b"]
        assert keys(store, Range(b"a", TO_END, revision=3)) == [b"a", b"b"]
        store.close()


def test_a_damaged_copy_is_refused(apply: Applier, tmp_path: Path) -> None:
    apply(*(Put(b"k%d" % i, b"v" * 50) for i in range(50)))
    data = b"".join(apply.store.stream_copy())
    receive_copy([data[: len(data) // 2]], tmp_path / "short")
    with pytest.raises(StoreFormatError):
        check_store(tmp_path / "short")
    receive_copy([b"not lmdb" * 1000], tmp_path / "junk")
    with pytest.raises(StoreFormatError):
        open_copy(tmp_path / "junk")


def test_a_closed_store_refuses_every_call_with_one_clear_error(tmp_path: Path) -> None:
    """A caller that still holds a closed store (a restore replaced it, the
    node is stopping) gets StoreClosedError, retry-safe and naming the
    store, from every call: not a bare lmdb.Error ("Attempt to operate on
    closed/deleted/dropped object") from the write path or a meta read."""
    from liferaft.kv.mvcc.ops import StoreClosedError

    store = MVCCStore(tmp_path / "db", sync=False)
    store.apply_batch([MVCCEntry(1, Put(b"a", b"1"))])
    store.close()
    calls = {
        "apply_batch": lambda: store.apply_batch([MVCCEntry(2, Put(b"b", b"2"))]),
        "apply_batch deferred": lambda: store.apply_batch(
            [MVCCEntry(2, Put(b"b", b"2"))], defer=True
        ),
        "flush": store.flush,
        "applied_index": store.applied_index,
        "revision": store.revision,
        "compact_revision": store.compact_revision,
        "read": store.read,
        "size_in_use": store.size_in_use,
        "copy_to": lambda: store.copy_to(tmp_path / "copy"),
        "stream_copy": lambda: b"".join(store.stream_copy()),
    }
    for name, call in calls.items():
        with pytest.raises(StoreClosedError) as err:
            call()
        assert err.value.retry_safe and str(tmp_path / "db") in str(err.value), name
    store.close()  # twice: nothing
