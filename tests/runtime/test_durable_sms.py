"""The test state machines of the durable contract (tests/runtime/sms/), on their own.

The runtime's tests will trust these to detect a double or lost apply, so
here they are checked directly, with no Node: a batch is atomic under an
injected crash at every point, the database refuses an index applied twice,
a checkpoint restores to equal contents and applied index, a bad checkpoint
leaves the old state, and the off-loop one works from a worker thread.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from liferaft.runtime.statemachine import (
    ApplyEntry,
    BatchStateMachine,
    DurableStateMachine,
    SnapshotFormatError,
    StateMachine,
    applies_off_loop,
    durable_applied_index,
    join_chunks,
    takes_leader_time,
)
from tests.runtime.sms import (
    Applied,
    BatchRecordingStateMachine,
    ConcurrentCallError,
    CrashPoint,
    InjectedCrash,
    LegacyStateMachine,
    RecordingStateMachine,
    RefusedError,
    SQLiteStateMachine,
)
from tests.runtime.sms.sqlite import _stream_file


def batch(first: int, n: int, prefix: str = "k") -> list[ApplyEntry]:
    """``n`` entries ``{prefix}{i}=v{i}`` from index ``first``, leader time ``i + 0.5``."""
    return [
        ApplyEntry(i, f"{prefix}{i}=v{i}".encode(), i + 0.5) for i in range(first, first + n)
    ]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SQLiteStateMachine]:
    sm = SQLiteStateMachine(tmp_path / "sm.db")
    try:
        yield sm
    finally:
        sm.close()


def reopen(sm: SQLiteStateMachine) -> SQLiteStateMachine:
    """What a restart sees: a new instance on the same file."""
    sm.close()
    return SQLiteStateMachine(sm.path)


def temp_files(sm: SQLiteStateMachine) -> list[Path]:
    return sorted(sm.path.parent.glob(".*.tmp"))


# --- detection of the optional parts -------------------------------------------------


def test_protocols_and_detection(tmp_path: Path) -> None:
    volatile, batcher = RecordingStateMachine(), BatchRecordingStateMachine(off_loop=True)
    sql = SQLiteStateMachine(tmp_path / "sm.db")
    try:
        assert isinstance(volatile, StateMachine) and not isinstance(volatile, BatchStateMachine)
        assert not isinstance(volatile, DurableStateMachine)
        assert isinstance(batcher, BatchStateMachine)
        assert isinstance(sql, DurableStateMachine) and isinstance(sql, BatchStateMachine)
        assert durable_applied_index(volatile) is None and durable_applied_index(sql) == 0
        assert not applies_off_loop(volatile) and not applies_off_loop(BatchRecordingStateMachine())
        assert applies_off_loop(batcher) and applies_off_loop(sql)
        assert takes_leader_time(volatile.apply) and takes_leader_time(sql.apply)
        assert not takes_leader_time(LegacyStateMachine().apply)
        assert takes_leader_time(lambda index, data, **kw: None)
    finally:
        sql.close()


# --- the volatile ones ---------------------------------------------------------------


def test_recording_records_order_time_and_refusals() -> None:
    sm = RecordingStateMachine()
    assert sm.apply(2, b"a", leader_time=1.5) == 2
    with pytest.raises(RefusedError):
        sm.apply(3, b"!no", leader_time=2.5)
    assert sm.apply(5, b"b") == 5
    assert sm.state == [Applied(2, b"a", 1.5), Applied(5, b"b", 0.0)]
    assert sm.calls == [2, 3, 5]
    sm.assert_exactly_once()
    sm.apply(5, b"again")  # what a double apply by the runtime would look like
    with pytest.raises(AssertionError, match="index 5 applied after 5"):
        sm.assert_exactly_once()


def test_recording_snapshot_is_point_in_time_and_restores() -> None:
    sm = RecordingStateMachine()
    sm.apply(1, b"a", leader_time=1.0)
    snap = sm.snapshot()
    sm.apply(2, b"b", leader_time=2.0)  # after the capture: not in the snapshot
    fresh = RecordingStateMachine()
    fresh.restore(snap.chunks())
    snap.release()
    assert fresh.state == [Applied(1, b"a", 1.0)] and fresh.restored == [1]
    with pytest.raises(SnapshotFormatError):
        fresh.restore([b"\x92\xa3bad"])
    assert fresh.state == [Applied(1, b"a", 1.0)]  # a failed restore keeps the old state


def test_batch_recording_refuses_one_entry_only() -> None:
    sm = BatchRecordingStateMachine()
    results = sm.apply_batch(
        [ApplyEntry(3, b"x", 1.0), ApplyEntry(4, b"!", 1.0), ApplyEntry(5, b"y", 2.0)]
    )
    assert results[0] == 3 and isinstance(results[1], RefusedError) and results[2] == 5
    assert sm.indexes() == [3, 5] and sm.batches == [(3, 4, 5)]
    assert sm.threads == {threading.get_ident()}


# --- SQLite: batches and crashes -----------------------------------------------------


def test_batch_applies_and_survives_a_restart(db: SQLiteStateMachine) -> None:
    assert db.apply_batch(batch(2, 3)) == [None, None, None]
    assert db.apply_batch([ApplyEntry(5, b"k2=new", 9.0)]) == [b"v2"]  # previous value
    assert db.applied_index() == 5
    again = reopen(db)
    try:
        assert again.applied_index() == 5
        assert again.contents() == {"k2": b"new", "k3": b"v3", "k4": b"v4"}
        assert [row[:3] for row in again.log()] == [
            (2, b"k2=v2", 2.5), (3, b"k3=v3", 3.5), (4, b"k4=v4", 4.5), (5, b"k2=new", 9.0)
        ]
    finally:
        again.close()


def test_refused_entry_changes_nothing_but_is_applied(db: SQLiteStateMachine) -> None:
    results = db.apply_batch([ApplyEntry(2, b"a=1", 0.0), ApplyEntry(3, b"junk", 0.0)])
    assert results[0] is None and isinstance(results[1], ValueError)
    assert db.contents() == {"a": b"1"} and db.applied_index() == 3
    assert db.log()[-1] == (3, b"junk", 0.0, True)
    with pytest.raises(ValueError, match="not key=value"):
        db.apply(4, b"junk")  # plain apply raises a refusal, as the contract says


@pytest.mark.parametrize("k", [1, 2, 3])
def test_crash_inside_a_batch_rolls_all_of_it_back(db: SQLiteStateMachine, k: int) -> None:
    db.apply_batch(batch(1, 1, "old"))
    db.arm(CrashPoint.INSIDE_BATCH, after_entries=k)
    with pytest.raises(InjectedCrash) as info:
        db.apply_batch(batch(2, 3))
    assert info.value.index == 1 + k and db.crashes == [info.value]
    after = reopen(db)
    try:
        assert after.applied_index() == 1
        assert after.contents() == {"old1": b"v1"} and [r[0] for r in after.log()] == [1]
        after.apply_batch(batch(2, 3))  # the runtime re-delivers it: applied once
        assert after.applied_index() == 4 and [r[0] for r in after.log()] == [1, 2, 3, 4]
    finally:
        after.close()


def test_crash_inside_at_an_index(db: SQLiteStateMachine) -> None:
    db.arm(CrashPoint.INSIDE_BATCH, at_index=7)
    db.apply_batch(batch(1, 3))  # index 7 is not in it: no crash
    with pytest.raises(InjectedCrash) as info:
        db.apply_batch(batch(6, 3))
    assert info.value.index == 7 and db.applied_index() == 3


def test_crash_before_a_batch_applies_nothing(db: SQLiteStateMachine) -> None:
    db.arm(CrashPoint.BEFORE_BATCH)
    with pytest.raises(InjectedCrash):
        db.apply_batch(batch(1, 2))
    assert db.applied_index() == 0 and db.contents() == {} and db.log() == []
    db.apply_batch(batch(1, 2))  # one-shot: the plan fired and is gone
    assert db.applied_index() == 2


def test_crash_after_commit_keeps_the_batch_and_refuses_it_again(
    db: SQLiteStateMachine,
) -> None:
    db.arm(CrashPoint.AFTER_COMMIT)
    with pytest.raises(InjectedCrash) as info:
        db.apply_batch(batch(1, 3))
    assert info.value.index == 3
    after = reopen(db)
    try:
        # The runtime never learned of the commit, but the store holds it:
        # applied_index() says so, and a runtime that re-applied anyway would
        # be stopped by the database itself.
        assert after.applied_index() == 3 and len(after.contents()) == 3
        with pytest.raises(sqlite3.IntegrityError):
            after.apply_batch(batch(3, 2))
        assert after.applied_index() == 3 and [r[0] for r in after.log()] == [1, 2, 3]
    finally:
        after.close()


def test_double_or_backward_apply_is_refused_by_the_database(db: SQLiteStateMachine) -> None:
    db.apply_batch(batch(5, 2))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.apply(6, b"x=1")
    with pytest.raises(sqlite3.IntegrityError, match="out of order"):
        db.apply(3, b"x=1")
    with pytest.raises(sqlite3.IntegrityError):  # the new entry 7 is rolled back with it
        db.apply_batch([ApplyEntry(7, b"x=1", 0.0), ApplyEntry(7, b"x=2", 0.0)])
    assert db.applied_index() == 6 and "x" not in db.contents()


def test_concurrent_calls_are_caught(db: SQLiteStateMachine) -> None:
    db._busy.acquire()  # as if apply_batch were running in a worker thread
    try:
        with pytest.raises(ConcurrentCallError):
            db.applied_index()
    finally:
        db._busy.release()


def test_runs_from_a_worker_thread(db: SQLiteStateMachine) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        for first in (1, 4):  # perhaps two different worker threads, one at a time
            assert pool.submit(db.apply_batch, batch(first, 3)).result(timeout=30) == [None] * 3
        snap = db.snapshot()  # on this thread, between batches
        db.apply_batch(batch(7, 1))
        chunks = pool.submit(lambda: list(snap.chunks())).result(timeout=30)
        snap.release()
    assert db.applied_index() == 7
    assert threading.get_ident() in db.threads and len(db.threads) >= 2
    fresh = SQLiteStateMachine(db.path.parent / "fresh.db")
    try:
        fresh.restore(chunks)
        assert fresh.applied_index() == 6  # the snapshot was taken before batch 7
    finally:
        fresh.close()


# --- SQLite: checkpoints -------------------------------------------------------------


def test_checkpoint_restores_contents_and_applied_index(
    db: SQLiteStateMachine, tmp_path: Path
) -> None:
    db.apply_batch(batch(1, 200, "key"))
    snap = db.snapshot()
    [tmp] = temp_files(db)
    db.apply_batch(batch(201, 1))  # after the capture: not in the checkpoint
    chunks = list(snap.chunks())
    snap.release()
    assert temp_files(db) == [] and not tmp.exists()  # release deleted the copy
    fresh = SQLiteStateMachine(tmp_path / "fresh.db")
    try:
        fresh.apply_batch(batch(1, 1, "stale"))  # replaced whole, not merged
        fresh.restore(chunks)
        assert fresh.applied_index() == 200
        assert fresh.contents() == {f"key{i}": f"v{i}".encode() for i in range(1, 201)}
        assert fresh.log() == db.log()[:200]
        fresh.apply_batch(batch(201, 1))  # and it goes on after the restored index
        assert fresh.contents() == db.contents()
    finally:
        fresh.close()
    assert temp_files(db) == []


def _stream_of(tmp_path: Path, file_bytes: bytes) -> list[bytes]:
    """A well-framed checkpoint stream (right length and digest) of ``file_bytes``."""
    path = tmp_path / "crafted.bin"
    path.write_bytes(file_bytes)
    return list(_stream_file(str(path)))


def _bad_streams(good: bytes, tmp_path: Path) -> dict[str, list[bytes]]:
    head, body = good[:13], good[13:-32]
    empty = tmp_path / "empty.db"
    with sqlite3.connect(empty) as conn:
        conn.execute("CREATE TABLE other (x)")
    conn.close()
    flipped = bytearray(good)
    flipped[13 + len(body) // 2] ^= 0xFF
    return {
        "empty": [],
        "cut in the header": [good[:7]],
        "cut in the file": [good[: 13 + len(body) // 2]],
        "digest missing": [good[:-32]],
        "digest cut": [good[:-5]],
        "trailing bytes": [good, b"x"],
        "a flipped byte": [bytes(flipped)],
        "bad magic": [b"XXXX" + good[4:]],
        "version 9": [good[:4] + b"\x09" + good[5:]],
        "not a database": _stream_of(tmp_path, b"\x00" * 16 + body[16:]),
        "half a database": _stream_of(tmp_path, body[: len(body) // 2]),
        "another schema": _stream_of(tmp_path, empty.read_bytes()),
        "no header": [body],
        "header only": [head],
    }


def test_a_bad_checkpoint_leaves_the_old_state(db: SQLiteStateMachine, tmp_path: Path) -> None:
    db.apply_batch(batch(1, 50))
    snap = db.snapshot()
    good = join_chunks(snap.chunks())
    snap.release()
    target = SQLiteStateMachine(tmp_path / "target.db")
    try:
        target.apply_batch(batch(1, 2, "mine"))
        before = (target.applied_index(), target.contents(), target.log())
        for name, chunks in _bad_streams(good, tmp_path).items():
            with pytest.raises(SnapshotFormatError) as info:
                target.restore(chunks)
            assert "\n" not in str(info.value), name
            assert (target.applied_index(), target.contents(), target.log()) == before, name
            assert temp_files(target) == [], name
        with pytest.raises(SnapshotFormatError, match="version 9; this build reads version 1"):
            target.restore([good[:4] + b"\x09" + good[5:]])
        target.restore([good])  # and the good one still restores
        assert target.applied_index() == 50
    finally:
        target.close()


def test_crash_mid_restore_leaves_the_old_state(db: SQLiteStateMachine, tmp_path: Path) -> None:
    other = SQLiteStateMachine(tmp_path / "other.db")
    try:
        other.apply_batch(batch(1, 9, "new"))
        snap = other.snapshot()
        chunks = list(snap.chunks())
        snap.release()
    finally:
        other.close()
    db.apply_batch(batch(1, 2, "old"))
    db.arm(CrashPoint.MID_RESTORE)
    with pytest.raises(InjectedCrash):
        db.restore(chunks)
    assert len(temp_files(db)) == 1  # a dead process leaves its temp file behind
    after = reopen(db)
    try:
        assert temp_files(after) == []  # the next open removes it
        assert after.applied_index() == 2 and set(after.contents()) == {"old1", "old2"}
        after.restore(chunks)
        assert after.applied_index() == 9 and len(after.contents()) == 9
    finally:
        after.close()


def test_a_database_of_another_schema_is_refused_naming_both(tmp_path: Path) -> None:
    sm = SQLiteStateMachine(tmp_path / "sm.db")
    sm.close()
    with sqlite3.connect(sm.path) as conn:
        conn.execute("UPDATE meta SET v = 2 WHERE k = 'schema'")
    conn.close()
    with pytest.raises(SnapshotFormatError, match="schema version 2; this build reads version 1"):
        SQLiteStateMachine(sm.path)


_CHILD = """
import sys
from tests.runtime.sms import CrashPoint, SQLiteStateMachine
from tests.runtime.test_durable_sms import batch
sm = SQLiteStateMachine(sys.argv[1])
sm.apply_batch(batch(1, 2))
sm.arm(CrashPoint[sys.argv[2]], after_entries=2, kill=True)
sm.apply_batch(batch(3, 3))
"""


@pytest.mark.parametrize(
    ("point", "applied"), [("BEFORE_BATCH", 2), ("INSIDE_BATCH", 2), ("AFTER_COMMIT", 5)]
)
def test_kill_9_at_each_point(tmp_path: Path, point: str, applied: int) -> None:
    """A real SIGKILL: what survives is what SQLite's journal recovery keeps."""
    path = tmp_path / "sm.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), point], env=env, timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    sm = SQLiteStateMachine(path)
    try:
        assert sm.applied_index() == applied
        assert [r[0] for r in sm.log()] == list(range(1, applied + 1))
        assert len(sm.contents()) == applied
        sm.apply_batch(batch(applied + 1, 5 - applied))  # the runtime resumes after it
        assert [r[0] for r in sm.log()] == [1, 2, 3, 4, 5]
    finally:
        sm.close()
