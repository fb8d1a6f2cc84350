"""The WAL under a fault-injecting file layer: crashes that lose unsynced
bytes and tear writes, and disks that fill up or fail part-way through.

Property: whatever happened, the reopened log is a prefix of what was
written (nothing invented, nothing reordered) that holds at least every
entry that was synced.  Both segment formats: preallocated (written in
place; a crash keeps a sector-cut prefix of the unsynced writes and the
rest reads as zeros) and appended; the power can go at any file operation.
"""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liferaft.core import Entry
from liferaft.storage import WAL, StorageError
from liferaft.storage.fs import FaultFS, PowerCut

op_st = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 9), st.booleans()),
    st.tuples(st.just("truncate"), st.integers(0, 6), st.just(False)),
    st.tuples(st.just("crash"), st.just(0), st.just(False)),
    st.tuples(st.just("fail"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("sync"), st.just(0), st.just(False)),
    # The power goes at the n-th file operation from now (an append's
    # write or fdatasync, a rollover's steps, a truncation's, ...).
    st.tuples(st.just("cut"), st.integers(0, 12), st.just(False)),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(op_st, min_size=1, max_size=30),
    seed=st.integers(0, 2**16),
    prealloc=st.booleans(),
)
def test_wal_survives_any_crash_and_disk_failure(
    tmp_path_factory: pytest.TempPathFactory,
    ops: list[tuple[str, int, bool]],
    seed: int,
    prealloc: bool,
) -> None:
    d: Path = tmp_path_factory.mktemp("wal")
    fs = FaultFS(random.Random(seed), os_sync=False)

    def reopen() -> WAL:
        return WAL(d, segment_size=300, fs=fs, preallocate=prealloc)

    w = reopen()
    written: list[Entry] = []  # the log as the WAL shows it in memory
    durable = 0  # how many leading entries are known synced
    term = 1
    for kind, n, flag in ops:
        if kind == "truncate" and written:
            # Cut short by the power or not, what it removes is no longer
            # owed (it may have removed some before the power went).
            durable = min(durable, max(1, len(written) - n) - 1)
        try:
            written, durable, term = _step(w, fs, kind, n, flag, written, durable, term)
        except PowerCut:
            if kind == "append":
                # Written, never synced: it may or may not have landed.
                written = written + _batch(len(written) + 1, n, term)
            kind = "crash"
        if kind == "crash":
            w.close()
            fs.crash()
            w = reopen()
            got = w.entries(w.first_index, w.last_index + 1) if w.last_index >= 1 else []
            assert got == written[: len(got)], "the log must be a prefix of what was written"
            assert len(got) >= durable, f"lost synced entries: {len(got)} < {durable}"
            written = got
            durable = len(got)
            term = max([e.term for e in got], default=1)
    w.close()
    fs.fail_after = None
    fs.crash()
    w = reopen()
    got = w.entries(w.first_index, w.last_index + 1) if w.last_index >= 1 else []
    assert got == written[: len(got)] and len(got) >= durable
    w.close()


def _batch(first: int, n: int, term: int) -> list[Entry]:
    return [Entry(first + i, term, b"%d" % (first + i)) for i in range(n)]


def _step(
    w: WAL, fs: FaultFS, kind: str, n: int, flag: bool,
    written: list[Entry], durable: int, term: int,
) -> tuple[list[Entry], int, int]:
    """One operation against the model: (the log in memory, how many leading
    entries are synced, the term).  A PowerCut leaves the model as it was
    before the operation."""
    if kind == "append":
        batch = _batch(len(written) + 1, n, term)
        try:
            w.append(batch, sync=flag)
        except StorageError:
            assert w.last_index == len(written)  # memory unchanged
            return written, durable, term
        written = written + batch
        if flag:
            durable = len(written)
    elif kind == "truncate" and written:
        cut = max(1, len(written) - n)
        w.truncate_suffix(cut)
        written = written[: cut - 1]
        term += 1
    elif kind == "sync":
        w.sync()
        durable = len(written)
    elif kind == "fail":
        fs.fail_after = n
        fs.fail_errno = errno.ENOSPC if flag else errno.EIO
    elif kind == "cut":
        fs.crash_after(n)
    return written, durable, term


def test_a_full_disk_stops_writes_and_they_resume_when_space_returns(tmp_path: Path) -> None:
    fs = FaultFS(random.Random(1))
    w = WAL(tmp_path, fs=fs)
    w.append([Entry(1, 1, b"a")])
    fs.fail_after = 0
    with pytest.raises(StorageError, match="No space left"):
        w.append([Entry(2, 1, b"b" * 500)])
    with pytest.raises(StorageError):
        w.append([Entry(2, 1, b"b")])
    fs.fail_after = None  # space is back
    w.append([Entry(2, 1, b"b")])
    w.close()
    fs.crash()
    with WAL(tmp_path, fs=fs) as w2:
        assert w2.entries(1, 3) == [Entry(1, 1, b"a"), Entry(2, 1, b"b")]


def test_rolling_over_seals_the_old_segment_durably(tmp_path: Path) -> None:
    """Unsynced appends fill a segment, the next (synced) batch starts a new
    one, then the machine crashes: the old segment must not lose its tail, or
    the log would have a hole in the middle."""
    fs = FaultFS(random.Random(3))
    w = WAL(tmp_path, segment_size=200, fs=fs)
    w.append([Entry(i, 1, b"x" * 20) for i in range(1, 9)], sync=False)
    w.append([Entry(9, 1, b"y")], sync=True)
    assert len(w.segments) == 2
    w.close()
    fs.crash()
    with WAL(tmp_path, segment_size=200, fs=fs) as w2:
        assert w2.last_index == 9


@pytest.mark.parametrize("seed", range(12))
def test_hard_state_after_a_crash_mid_save_is_old_or_new_never_torn(
    tmp_path: Path, seed: int
) -> None:
    from liferaft.core import HardState
    from liferaft.storage import HardStateStore

    fs = FaultFS(random.Random(seed))
    s = HardStateStore(tmp_path, fs=fs)
    old = HardState(3, "n1", 10)
    s.save(old)
    new = HardState(4, "n2", 12)
    real_fsync_dir = fs.fsync_dir

    def power_cut(d: Path) -> None:
        raise OSError(errno.EIO, "power lost before the directory was synced")

    fs.fsync_dir = power_cut  # type: ignore[method-assign]
    with pytest.raises(StorageError):
        s.save(new)
    fs.fsync_dir = real_fsync_dir  # type: ignore[method-assign]
    fs.crash()
    after = HardStateStore(tmp_path, fs=fs).current
    assert after in (old, new)
