"""The KV machine (liferaft/kv/machine.py): codec, leases, txn rules, watch
events per batch, and checkpoints (docs/kv.md, "The KV state machine")."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from liferaft.kv.errors import KVBadRequestError
from liferaft.kv.mvcc import (
    TO_END,
    Compact,
    DeleteRange,
    LeaseExistsError,
    LeaseNotFoundError,
    Put,
    PutResult,
    Range,
    StoreFormatError,
    Txn,
)
from liferaft.kv.mvcc.codec import (
    CommandFormatError,
    LeaseGrant,
    LeaseRevoke,
    OpenSession,
    SessionRef,
    Write,
    decode_command,
    encode_command,
)
from liferaft.kv.mvcc.leases import MAX_LEASE_TTL, LeaseGrantResult, LeaseInfo, LeaseRevokeResult
from liferaft.kv.watch_types import EventKind
from tests.kv.machine_log import Log


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    lg = Log(tmp_path / "m")
    yield lg
    lg.m.close()


def put(key: bytes, value: bytes = b"v", lease: int = 0) -> Write:
    return Write(Put(key, value, lease=lease))


# -- codec -------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [
    Write(Put(b"k", b"v", lease=3, prev_kv=True), SessionRef(4, 2, 1)),
    Write(DeleteRange(b"a", TO_END)),
    Write(Txn(success=(Put(b"a", b""), Range(b"b")))),
    OpenSession(), LeaseGrant(0, 60), LeaseRevoke(9), Compact(5),
])
def test_every_command_roundtrips_behind_its_version_byte(cmd: object) -> None:
    data = encode_command(cmd)  # type: ignore[arg-type]
    assert data[0] == 1 and decode_command(data) == cmd


def test_bytes_that_are_not_a_command_are_refused_alike_and_change_nothing(log: Log) -> None:
    log.apply(put(b"a"))
    bad = [
        b"\x01", b"\x01\xc1", b"\x02" + encode_command(OpenSession())[1:],
        # An entry of the in-memory store of earlier builds:
        msgspec.msgpack.encode({"type": "put", "key": "a", "value": "old build"}),
        b"\x01" + msgspec.msgpack.encode({"type": "Nope"}),
        b"\x01" + msgspec.msgpack.encode({"type": "Write", "op": {"type": "Put", "key": "str"}}),
    ]
    results = log.batch(*bad)
    assert all(isinstance(r, CommandFormatError) and "\n" not in str(r) for r in results)
    assert "earlier builds" in str(results[3])
    assert log.m.applied_index() == log.index and log.m.revision() == 2
    assert log.apply(None) is None  # an empty entry: a no-op or membership change


def test_a_bad_op_is_refused_without_changing_anything(log: Log) -> None:
    r = log.batch(put(b""), put(b"k" * 512), Write(Put(b"k", b"v", lease=-1)), put(b"ok"))
    assert [type(x) for x in r[:3]] == [KVBadRequestError] * 3
    assert isinstance(r[3], PutResult) and r[3].revision == 2


# -- leases ------------------------------------------------------------------------------


def test_grant_attach_revoke_deletes_the_keys_at_one_revision(log: Log) -> None:
    g = log.apply(LeaseGrant(0, 30))
    assert g == LeaseGrantResult(log.index, 30)  # id 0: the entry's index
    lid = g.id
    log.batch(put(b"a", lease=lid), put(b"b", lease=lid), put(b"c"))
    assert log.m.lease(lid) == LeaseInfo(lid, 30, (b"a", b"b"))
    assert log.m.leases() == [(lid, 30)]
    rev = log.m.revision()
    r = log.apply(LeaseRevoke(lid))
    assert r == LeaseRevokeResult(rev + 1, 2)
    assert [kv.key for kv in log.everything()] == [b"c"]
    assert log.m.lease(lid) is None and log.m.leases() == []
    done = log.listener.batches[-1]
    assert done.revoked == (lid,) and done.revision == rev + 1
    assert [(e.revision, e.kind, e.key) for e in done.events] == [
        (rev + 1, EventKind.DELETE, b"a"), (rev + 1, EventKind.DELETE, b"b")]


def test_lease_refusals(log: Log) -> None:
    log.apply(LeaseGrant(7, 10))
    r = log.batch(LeaseGrant(7, 5), LeaseRevoke(8), put(b"k", lease=8), LeaseGrant(9, 0),
                  LeaseGrant(9, MAX_LEASE_TTL + 1), LeaseGrant(-1, 5), LeaseRevoke(0))
    assert isinstance(r[0], LeaseExistsError) and r[0].code == "lease_exists"
    assert isinstance(r[1], LeaseNotFoundError) and r[1].code == "lease_not_found"
    assert isinstance(r[2], LeaseNotFoundError)
    assert all(isinstance(x, KVBadRequestError) for x in r[3:])
    assert log.m.leases() == [(7, 10)] and log.everything() == [] and log.m.revision() == 1
    assert log.listener.batches[-1].granted == ((7, 10),)  # the refused grants are not told


def test_a_txn_putting_under_a_missing_lease_writes_nothing(log: Log) -> None:
    log.apply(LeaseGrant(1, 10))
    txn = Txn(success=(Put(b"a", b"1", lease=1), Put(b"b", b"2", lease=2)))
    assert isinstance(log.apply(Write(txn)), LeaseNotFoundError)
    assert log.everything() == [] and log.m.lease(1) == LeaseInfo(1, 10, ())
    # Only the branch that runs is checked (etcd's rule).
    other = Txn(success=(Put(b"a", b"1", lease=1),), failure=(Put(b"b", b"2", lease=2),))
    assert log.apply(Write(other)).succeeded
    assert log.m.lease(1) == LeaseInfo(1, 10, (b"a",))


def test_moving_or_deleting_a_key_keeps_every_lease_key_set_exact(log: Log) -> None:
    log.batch(LeaseGrant(1, 10), LeaseGrant(2, 10))
    log.batch(put(b"a", lease=1), put(b"b", lease=1), put(b"c", lease=2))
    log.apply(put(b"a", lease=2))  # moved from 1 to 2
    log.apply(put(b"b"))  # detached
    log.apply(Write(DeleteRange(b"c")))  # deleted
    assert log.m.lease(1) == LeaseInfo(1, 10, ())
    assert log.m.lease(2) == LeaseInfo(2, 10, (b"a",))
    txn = Txn(success=(Put(b"d", b"", lease=1), DeleteRange(b"a")))
    log.apply(Write(txn))
    assert log.m.lease(1) == LeaseInfo(1, 10, (b"d",)) and log.m.lease(2) == LeaseInfo(2, 10, ())
    # A revoke forgets the key set with the lease: a new grant of the id starts empty.
    log.apply(LeaseRevoke(1))
    log.apply(LeaseGrant(1, 5))
    assert log.m.lease(1) == LeaseInfo(1, 5, ())
    assert [kv.key for kv in log.everything()] == [b"b"]


# -- txn ---------------------------------------------------------------------------------


@pytest.mark.parametrize("branch", [
    (Put(b"a", b"1"), Put(b"a", b"2")),
    (Put(b"b", b"1"), DeleteRange(b"a", b"c")),
    (DeleteRange(b"a", TO_END), Put(b"zz", b"1")),
    (DeleteRange(b"b"), Put(b"b", b"1")),
])
def test_duplicate_keys_in_a_txn_branch_are_refused_before_writing(
    log: Log, branch: tuple  # type: ignore[type-arg]
) -> None:
    log.apply(put(b"b"))
    for txn in (Txn(success=branch), Txn(failure=branch)):  # either branch, run or not
        r = log.apply(Write(txn))
        assert isinstance(r, KVBadRequestError) and str(r) == "duplicate key given in txn request"
    assert log.m.revision() == 2


def test_overlapping_deletes_and_distinct_puts_are_allowed(log: Log) -> None:
    txn = Txn(success=(DeleteRange(b"a", b"c"), DeleteRange(b"b", b"d"), Put(b"d", b"1"),
                       Put(b"e", b"1")))
    assert log.apply(Write(txn)).succeeded


# -- watch events ------------------------------------------------------------------------


def test_each_batch_yields_its_events_in_revision_order_as_the_history_has_them(
    log: Log,
) -> None:
    log.apply(LeaseGrant(5, 10))
    start = log.m.revision() + 1
    log.batch(put(b"a", b"1"), put(b"b", b"1", lease=5), put(b"a", b"2"),
              Write(Txn(success=(DeleteRange(b"a"), Put(b"c", b"3")))),
              Write(DeleteRange(b"zz")))  # deletes nothing: no event
    log.batch(LeaseRevoke(5), Compact(3), put(b"c", b"4"))
    events = [e for b in log.listener.batches for e in b.events]
    assert [b.revision for b in log.listener.batches[-2:]] == [start + 3, start + 5]
    with log.m.read() as view:
        history = list(view.changes(start, b"\x00", None))
    assert len(events) == len(history) == 7
    for ev, (rev, kv, mark, prev) in zip(events, history, strict=True):
        assert ev.revision == rev and ev.key == mark.key and ev.prev_kv == prev
        if kv is None:
            assert ev.kind is EventKind.DELETE and ev.kv == mark
        else:
            assert ev.kind is EventKind.PUT and ev.kv == kv
    assert [e.revision for e in events] == sorted(e.revision for e in events)


def test_the_listener_hears_only_after_commit_and_not_for_empty_batches(log: Log) -> None:
    seen: list[int] = []

    class Peek:
        def committed(self, batch: object) -> None:
            # The batch is committed: a fresh read sees it.
            seen.append(log.m.revision())

        def restored(self, revision: int) -> None:
            pass

    log.m.listener = Peek()
    log.batch(None, OpenSession(), put(b"zz", b"1"))
    log.batch(None, Write(DeleteRange(b"nothing")))
    assert seen == [2]


# -- checkpoints -------------------------------------------------------------------------


def fill(log: Log) -> None:
    log.batch(LeaseGrant(3, 10), OpenSession())
    log.batch(*(put(b"k%03d" % i, b"x" * 100, lease=3 if i % 2 else 0) for i in range(200)))
    log.batch(Write(DeleteRange(b"k000", b"k010")), Compact(5))


def test_a_restored_checkpoint_is_the_same_store(log: Log, tmp_path: Path) -> None:
    fill(log)
    other = Log(tmp_path / "other")
    other.apply(put(b"stale"))  # replaced whole
    other.m.restore(log.m.checkpoint_chunks(chunk_size=4096))
    assert other.listener.restores == [log.m.revision()]
    assert other.m.applied_index() == log.m.applied_index()
    assert other.everything() == log.everything()
    assert other.everything(revision=6) == log.everything(revision=6)
    assert other.m.compact_revision() == 5
    assert other.m.lease(3) == log.m.lease(3) and other.m.sessions() == log.m.sessions()
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["CURRENT", "store.2"]
    # And it survives a reopen.
    other.m.close()
    again = Log(tmp_path / "other")
    assert again.everything() == log.everything()
    again.m.close()


def test_an_empty_stream_restores_an_empty_store(log: Log) -> None:
    fill(log)
    log.m.restore([])
    assert log.m.applied_index() == 0 and log.everything() == [] and log.m.leases() == []


def test_snapshot_streams_the_same_checkpoint(log: Log, tmp_path: Path) -> None:
    fill(log)
    snap = log.m.snapshot()
    other = Log(tmp_path / "other")
    other.m.restore(snap.chunks())
    snap.release()
    assert other.everything() == log.everything()
    other.m.close()


def damaged(data: bytes) -> list[tuple[str, list[bytes]]]:
    mid = len(data) // 2
    return [
        ("truncated in the copy", [data[:mid]]),
        ("truncated in the trailer", [data[:-5]]),
        ("no trailer", [data[:-44]]),
        ("a flipped byte", [data[:mid] + bytes([data[mid] ^ 1]) + data[mid + 1:]]),
        ("a flipped digest", [data[:-1] + bytes([data[-1] ^ 1])]),
        ("bytes after it", [data + b"x"]),
        ("not a checkpoint", [b"LRKV\x02" + data[5:]]),
        ("another version", [data[:4] + b"\x09" + data[5:]]),
    ]


def test_a_damaged_checkpoint_is_refused_and_the_old_store_stays(
    log: Log, tmp_path: Path
) -> None:
    fill(log)
    data = b"".join(log.m.checkpoint_chunks())
    other = Log(tmp_path / "other")
    other.batch(LeaseGrant(1, 5), put(b"mine", lease=1))
    before = other.everything()
    for name, chunks in damaged(data):
        with pytest.raises(StoreFormatError) as e:
            other.m.restore(chunks)
        assert "\n" not in str(e.value), name
        assert other.everything() == before and other.m.lease(1) == LeaseInfo(1, 5, (b"mine",))
        assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["CURRENT", "store.1"]
    assert other.listener.restores == []
    other.apply(put(b"still writable"))
    other.m.close()


def test_an_intact_checkpoint_of_an_inconsistent_store_is_refused(
    log: Log, tmp_path: Path
) -> None:
    """The digest proves the bytes arrived as sent; check_store then reads
    the store whole: keys attached to a lease that does not exist are refused."""
    fill(log)
    store = log.m.store
    with store._env.begin(write=True) as txn:  # a bug's leftover, planted by hand
        txn.put((99).to_bytes(8, "big"), b"k001", db=store._dbs.lease_keys)
    other = Log(tmp_path / "other")
    with pytest.raises(StoreFormatError, match="lease that does not exist"):
        other.m.restore(log.m.checkpoint_chunks())
    assert other.m.applied_index() == 0
    other.m.close()
