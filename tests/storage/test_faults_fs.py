"""Faults injected through FaultFS, the storage's own file layer: bit flips
anywhere in any file, crashes in the middle of a snapshot, and a disk that
fills up under DiskStorage.  "Detected" means: opening or reading raises
CorruptionError naming the file, or (only for the final record of the WAL,
which a crash may legitimately tear) the open reports the dropped bytes
and what remains is an exact prefix.  A wrong entry is never served.
"""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liferaft.core import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from liferaft.storage import WAL, CorruptionError, DiskStorage, HardStateStore, StorageError
from liferaft.storage.fs import FaultFS
from liferaft.storage.snapshots import SnapshotStore

FLIPS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
CONF = ConfState(voters=frozenset({"n1", "n2", "n3"}))


def _wal_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


@FLIPS
@given(n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1), data=st.binary(max_size=30))
def test_a_bit_flip_anywhere_in_the_wal_is_detected(
    tmp_path_factory: pytest.TempPathFactory, n: int, seed: int, data: bytes
) -> None:
    d = tmp_path_factory.mktemp("wal")
    fs = FaultFS(random.Random(seed))
    written = [Entry(i, 1 + i // 7, data + b"%d" % i) for i in range(1, n + 1)]
    with WAL(d, segment_size=400, fs=fs) as w:
        for i in range(0, n, 3):
            w.append(written[i : i + 3])
    victim = fs.rng.choice(_wal_files(d))
    fs.flip_random_bit(victim)
    try:
        w2 = WAL(d, segment_size=400, fs=fs)
    except CorruptionError as exc:
        assert exc.path is not None and Path(exc.path).name.endswith(".wal")
        return
    with w2:
        got = w2.entries(w2.first_index, w2.last_index + 1) if w2.last_index >= 1 else []
        assert w2.report.torn_tail_bytes > 0, "a flip went unnoticed"
        assert victim == _wal_files(d)[-1], "only the final record may read as torn"
        assert got == written[: len(got)] and len(got) >= n - 1


@FLIPS
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 3000))
def test_a_bit_flip_anywhere_in_a_snapshot_is_detected(
    tmp_path_factory: pytest.TempPathFactory, seed: int, size: int
) -> None:
    d = tmp_path_factory.mktemp("snap")
    fs = FaultFS(random.Random(seed))
    store = SnapshotStore(d, fs=fs)
    meta = SnapshotMeta(40, 3, CONF)
    payload = random.Random(seed).randbytes(size)
    with store.create(meta) as w:
        for i in range(0, size, 700):
            w.write(payload[i : i + 700])
        w.commit()
    path = store.path_of(meta)
    fs.flip_random_bit(path)
    with pytest.raises(CorruptionError) as info:
        latest = SnapshotStore(d, fs=fs).latest()
        assert latest is not None
        store.verify(latest)
    assert Path(info.value.path).name.startswith("0000")


@FLIPS
@given(seed=st.integers(0, 2**32 - 1))
def test_a_bit_flip_anywhere_in_the_hard_state_is_detected(
    tmp_path_factory: pytest.TempPathFactory, seed: int
) -> None:
    d = tmp_path_factory.mktemp("hs")
    fs = FaultFS(random.Random(seed))
    HardStateStore(d, fs=fs).save(HardState(7, "n2", 33))
    fs.flip_random_bit(d / "hardstate")
    with pytest.raises(CorruptionError):
        HardStateStore(d, fs=fs)


def test_disk_storage_refuses_a_corrupt_newest_snapshot(tmp_path: Path) -> None:
    fs = FaultFS(random.Random(5))
    s = DiskStorage(tmp_path, fs=fs)
    s.save(HardState(1, "n1", 0), [Entry(i, 1, b"v%d" % i) for i in range(1, 11)])
    s.create_snapshot(8, CONF, b"state at 8")
    s.close()
    path = s.snaps.path_of(s.snap_meta)
    fs.flip_bit(path, path.stat().st_size - 15, 2)  # inside the data, before the trailer
    with pytest.raises(CorruptionError, match="checksum"):
        DiskStorage(tmp_path, fs=fs)


@pytest.mark.parametrize("seed", range(16))
def test_a_crash_during_a_snapshot_leaves_the_old_one_or_the_new_one(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    fs = FaultFS(rng)
    s = DiskStorage(tmp_path, fs=fs)
    s.save(HardState(1, "n1", 20), [Entry(i, 1, b"v%d" % i) for i in range(1, 21)])
    s.create_snapshot(5, CONF, b"old" * 100)
    old = s.snap_meta
    # Crash after a random number of the new snapshot's writes, or after it
    # committed but before the directory entry was made durable.
    fs.fail_after = rng.randint(0, 4)
    fs.fail_errno = errno.EIO
    try:
        w = s.begin_snapshot(15, CONF)
        for _ in range(3):
            w.write(b"new" * 100)
        s.finish_snapshot(w)
    except StorageError:
        pass
    s.close()
    fs.crash()
    s2 = DiskStorage(tmp_path, fs=fs)
    assert s2.snap_meta in (old, SnapshotMeta(15, 1, CONF))
    want = b"old" * 100 if s2.snap_meta == old else b"new" * 300
    assert s2.snapshot().data == want
    assert s2.entries(s2.first_index(), 21) == [
        Entry(i, 1, b"v%d" % i) for i in range(s2.first_index(), 21)
    ]
    assert not list((tmp_path / "snap").glob("*.tmp"))


def test_a_full_disk_stops_saves_with_a_clear_error_and_they_resume(tmp_path: Path) -> None:
    fs = FaultFS(random.Random(9))
    s = DiskStorage(tmp_path, fs=fs)
    acked = [Entry(i, 1, b"acked%d" % i) for i in range(1, 6)]
    s.save(HardState(1, "n1", 5), acked)
    fs.fail_after = 0
    fs.fail_errno = errno.ENOSPC
    for _ in range(3):  # every attempt fails cleanly while the disk is full
        with pytest.raises(StorageError, match="No space left on device"):
            s.save(HardState(1, "n1", 6), [Entry(6, 1, b"x" * 4096)])
        assert s.last_index() == 5 and s.hard_state.commit == 5
        fs.fail_after = 0
    with pytest.raises(StorageError, match="No space left on device"):
        s.create_snapshot(5, CONF, b"state")
    assert s.snap_meta.index == 0
    fs.fail_after = None  # space returns
    s.save(HardState(1, "n1", 6), [Entry(6, 1, b"x" * 4096)])
    s.create_snapshot(5, CONF, b"state")
    s.close()
    fs.crash()
    s2 = DiskStorage(tmp_path, fs=fs)
    assert s2.entries(6, 7) == [Entry(6, 1, b"x" * 4096)]
    assert s2.hard_state == HardState(1, "n1", 6) and s2.snapshot().data == b"state"


def test_a_snapshot_streams_in_and_out_without_loading_it_whole(tmp_path: Path) -> None:
    leader = DiskStorage(tmp_path / "a", snapshot_data_in_memory=False)
    leader.save(HardState(2, "n1", 30), [Entry(i, 2, b"e") for i in range(1, 31)])
    chunks = [bytes([i]) * 100_000 for i in range(20)]
    w = leader.begin_snapshot(30, CONF)
    for c in chunks:
        w.write(c)
    meta = leader.finish_snapshot(w)
    assert leader.snapshot() == Snapshot(meta)  # metadata only: data stays on disk

    follower = DiskStorage(tmp_path / "b", snapshot_data_in_memory=False)
    follower.save(HardState(1, None, 0), [Entry(1, 1, b"old")])
    rx = follower.receive_snapshot(meta)
    sizes = []
    for c in leader.snapshot_chunks(meta):
        sizes.append(len(c))
        rx.write(c)
    rx.commit()
    assert max(sizes) <= 1 << 20
    assert follower.snap_meta.index == 0, "received, not yet installed"
    follower.save(HardState(2, None, 30), [], Snapshot(meta))
    assert follower.first_index() == 31 and follower.last_index() == 30
    assert b"".join(follower.snapshot_chunks()) == b"".join(chunks)
    follower.close()
    assert DiskStorage(tmp_path / "b").snapshot().data == b"".join(chunks)


@pytest.mark.parametrize("seed", range(8))
def test_pipelined_group_commit_makes_durable_what_it_says(tmp_path: Path, seed: int) -> None:
    """Batches written while a sync runs in another thread: after a crash,
    everything through the index finish_sync returned is there."""
    from concurrent.futures import ThreadPoolExecutor

    fs = FaultFS(random.Random(seed))
    w = WAL(tmp_path, segment_size=2000, fs=fs)
    durable = 0
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for k in range(30):
            w.append([Entry(k * 4 + j, 1, b"p%d" % (k * 4 + j)) for j in range(1, 5)], sync=False)
            if pending is not None and (pending.done() or k % 3 == 0):
                durable = max(durable, pending.result())
                pending = None
            if pending is None:
                pending = pool.submit(w.finish_sync, w.begin_sync())
        if pending is not None and seed % 2:
            durable = max(durable, pending.result())
        elif pending is not None:
            pending.result()  # finished, but the caller never learned of it
    w.close()
    fs.crash()
    with WAL(tmp_path, segment_size=2000, fs=fs) as w2:
        assert w2.last_index >= durable > 0
        want = [Entry(i, 1, b"p%d" % i) for i in range(1, durable + 1)]
        assert w2.entries(1, durable + 1) == want
