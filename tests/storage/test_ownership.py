"""DiskStorage may be called from two threads at once: the runtime saves
Readies in a worker thread while it compacts the log, adopts snapshots and
starts new ones on the event loop.  The WAL itself is not thread-safe, so
DiskStorage must never let two of those calls touch it together.

The check: one call is held inside its first file operation; a second call,
from another thread, must not reach the files until the first has finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from liferaft.core import ConfState, Entry
from liferaft.storage import DiskStorage
from liferaft.storage.fs import FileSystem

CONF = ConfState(voters=frozenset({"n1"}))
WAIT = 10.0  # seconds; only a bound against hanging, never reached when all is well


class GateFS(FileSystem):
    """Real files.  Once armed, the first ``op`` holds its thread at a gate
    until released; any file operation from another thread meanwhile is an
    overlap."""

    def __init__(self) -> None:
        self.op: str | None = None
        self.holder: int | None = None
        self.inside = threading.Event()
        self.release = threading.Event()
        self.overlaps: list[str] = []

    def _enter(self, what: str) -> None:
        me = threading.get_ident()
        if self.holder is not None and self.holder != me:
            self.overlaps.append(what)
        if what == self.op and self.holder is None:
            self.op = None
            self.holder = me
            self.inside.set()
            self.release.wait(WAIT)
            self.holder = None

    def write_all(self, fd: int, data: bytes | bytearray) -> None:
        self._enter("write_all")
        super().write_all(fd, data)

    def pwrite_all(self, fd: int, data: bytes | bytearray, offset: int) -> None:
        self._enter("write_all")  # a preallocated segment's write
        super().pwrite_all(fd, data, offset)

    def fdatasync(self, fd: int) -> None:
        self._enter("fdatasync")
        super().fdatasync(fd)

    def unlink(self, path: Path) -> None:
        self._enter("unlink")
        super().unlink(path)

    def fsync_dir(self, d: Path) -> None:
        self._enter("fsync_dir")
        super().fsync_dir(d)

    def create(self, path: Path, data: bytes) -> None:
        self._enter("create")
        super().create(path, data)


def _store(d: Path, fs: GateFS) -> DiskStorage:
    st = DiskStorage(d, segment_size=300, fs=fs)
    for i in range(1, 41, 4):
        st.save(None, [Entry(j, 2, b"x" * 10) for j in range(i, i + 4)])
    st.create_snapshot(30, CONF, b"state")
    return st


def _run_both(first: Callable[[], object], gate: str, second: Callable[[], object],
              fs: GateFS) -> None:
    errors: list[BaseException] = []

    def run(fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)

    fs.op = gate
    a = threading.Thread(target=run, args=(first,))
    a.start()
    try:
        assert fs.inside.wait(WAIT), "the first call never reached the gate"
        b = threading.Thread(target=run, args=(second,))
        b.start()
        # Give the second call every chance to run into the first one; with
        # the lock it waits, and this join simply times out.
        b.join(0.5)
    finally:
        fs.release.set()
        a.join(WAIT)
    b.join(WAIT)
    assert not errors, errors
    assert not fs.overlaps, f"file operations of two calls interleaved: {fs.overlaps}"


@pytest.mark.parametrize("held", ["save", "compact"])
def test_compaction_and_appends_from_two_threads_never_interleave(
    tmp_path: Path, held: str
) -> None:
    fs = GateFS()
    st = _store(tmp_path, fs)
    first_before = st.wal.first_index

    def save() -> None:
        st.save(None, [Entry(41, 2, b"y" * 10)])

    def compact() -> None:
        st.compact(30)

    if held == "save":
        _run_both(save, "write_all", compact, fs)
    else:
        _run_both(compact, "unlink", save, fs)
    assert st.last_index() == 41 and st.wal.first_index > first_before
    assert [e.index for e in st.entries(31, 42)] == list(range(31, 42))
    st.close()
    again = DiskStorage(tmp_path, segment_size=300)
    assert again.last_index() == 41
    again.close()


def test_a_snapshot_install_and_a_compaction_never_interleave(tmp_path: Path) -> None:
    from liferaft.core import Snapshot, SnapshotMeta

    fs = GateFS()
    st = _store(tmp_path, fs)
    meta = SnapshotMeta(60, 3, CONF)

    def install() -> None:
        st.save(None, [], Snapshot(meta, b"leader's state"))

    def compact() -> None:
        st.compact(30)

    _run_both(install, "fdatasync", compact, fs)
    assert st.snap_meta == meta and st.last_index() == 60
    st.close()
