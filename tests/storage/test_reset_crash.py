"""A power cut at every step of a WAL reset (a snapshot from the leader
replacing the log) leaves a directory that opens, in a consistent state.

The reset is the tail of DiskStorage.apply_snapshot: the snapshot file is
already durable, then every WAL segment goes.  Whatever part of that a crash
keeps (FaultFS may also bring back any unlink whose directory was not yet
fsynced), the reopened store must hold the snapshot as its base and a log
that continues it: never "WAL starts at 166 but the snapshot ends at 150".
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from liferaft.core import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from liferaft.storage import DiskStorage, StorageError
from liferaft.storage.fs import FaultFS, PowerCut

CONF = ConfState(voters=frozenset({"n1"}))
SEGMENT = 2048  # about 20 entries a segment: 15 segments to delete


def _store(d: Path, fs: FaultFS) -> DiskStorage:
    st = DiskStorage(d, segment_size=SEGMENT, fs=fs)
    for i in range(1, 301, 10):
        st.save(None, [Entry(j, 2, b"x" * 100) for j in range(i, i + 10)])
    st.save(HardState(3, None, 100), [])
    return st


@pytest.mark.parametrize("snap_term", [3, 2], ids=["divergent-log", "matching-log"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_crash_at_every_step_of_a_reset_leaves_a_store_that_opens(
    tmp_path: Path, snap_term: int, seed: int
) -> None:
    meta = SnapshotMeta(150, snap_term, CONF)
    crashed_at = []
    segments = 0
    for step in range(500):  # bounded: a reset of 20 segments takes far fewer steps
        d = tmp_path / f"s{step}"
        fs = FaultFS(random.Random(seed * 1000 + step), os_sync=False)
        st = _store(d, fs)
        segments = len(st.wal.segments)
        w = st.receive_snapshot(meta)  # streamed in beforehand: already durable
        w.write(b"state")
        w.commit()
        fs.crash_after(step)
        try:
            st.save(None, [], Snapshot(meta))  # installs it: the WAL is reset
        except PowerCut:
            crashed_at.append(step)
        else:
            fs.crash_after(None)
            break
        finally:
            st.wal.close()
        fs.crash()

        again = DiskStorage(d, segment_size=SEGMENT, fs=fs)  # must open
        assert again.snap_meta == meta
        assert again.first_index() == 151
        assert again.term(150) == snap_term
        assert again.hard_state.term == 3
        if snap_term == 3:
            # Our entries after 150 were of a log the leader replaced.
            assert again.last_index() == 150
        else:
            # A log that matches the snapshot may keep entries after it,
            # but only ours, in order.
            last = again.last_index()
            if last > 150:
                got = again.entries(151, last + 1)
                assert [e.index for e in got] == list(range(151, last + 1))
                assert all(e.term == 2 and e.data == b"x" * 100 for e in got)
        again.save(None, [Entry(151, 3, b"after")])  # and it takes writes again
        assert again.last_index() == 151
        again.close()
    else:
        pytest.fail("the reset never finished within the step bound")
    # Every step was hit: at least one per segment deleted.
    assert segments > 10 and len(crashed_at) > segments


class FailingUnlinkFS(FaultFS):
    """Real files; the ``fail_at``-th unlink from now fails with EIO (a
    failing disk, not a power cut: the process lives on and may retry)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__(random.Random(0), os_sync=False)
        self.fail_at = fail_at

    def unlink(self, path: Path) -> None:
        self.fail_at -= 1
        if self.fail_at == 0:
            import errno

            raise OSError(errno.EIO, "I/O error")
        super().unlink(path)


def test_a_reset_that_fails_part_way_writes_nothing_until_a_retry_finishes_it(
    tmp_path: Path,
) -> None:
    """The runtime retries a save that failed with a StorageError.  A reset
    that stopped part-way leaves the RESET mark and some old segments: no
    entry may be appended behind that mark (the next open deletes everything
    it finds), and the retried install must remove every old segment left on
    disk, not only those it still remembers."""
    fs = FailingUnlinkFS(fail_at=10**9)
    st = _store(tmp_path, fs)
    meta = SnapshotMeta(150, 3, CONF)
    fs.fail_at = 4  # three segments go, the fourth unlink fails
    with pytest.raises(StorageError):
        st.save(None, [], Snapshot(meta, b"state"))
    with pytest.raises(StorageError):
        st.save(None, [Entry(151, 3, b"after")])  # refused: the reset is unfinished
    st.save(None, [], Snapshot(meta, b"state"))  # the runtime's retry
    st.save(None, [Entry(151, 3, b"after")])
    st.close()
    again = DiskStorage(tmp_path, segment_size=SEGMENT)
    assert again.snap_meta == meta and again.first_index() == 151
    assert again.entries(151, 152) == [Entry(151, 3, b"after")]
    again.close()
