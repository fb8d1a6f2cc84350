"""Hard state is atomic, checksummed, and never goes backwards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liferaft.core import HardState
from liferaft.storage.errors import CorruptionError, StorageError
from liferaft.storage.hardstate import NAME, HardStateStore


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    s = HardStateStore(tmp_path)
    assert s.current == HardState()
    s.save(HardState(3, "n2", 10))
    assert HardStateStore(tmp_path).current == HardState(3, "n2", 10)
    s.save(HardState(4, None, 12))
    assert HardStateStore(tmp_path).current == HardState(4, None, 12)


def test_never_goes_backwards(tmp_path: Path) -> None:
    s = HardStateStore(tmp_path)
    s.save(HardState(5, "n1", 20))
    with pytest.raises(StorageError, match="go back"):
        s.save(HardState(4, "n1", 20))
    with pytest.raises(StorageError, match="second vote"):
        s.save(HardState(5, "n3", 20))
    assert s.save(HardState(5, "n1", 15)).commit == 20  # commit only grows
    assert HardStateStore(tmp_path).current == HardState(5, "n1", 20)


def test_a_crash_before_the_rename_leaves_the_old_state(tmp_path: Path) -> None:
    s = HardStateStore(tmp_path)
    s.save(HardState(2, "n1", 3))
    (tmp_path / (NAME + ".tmp")).write_bytes(b"half-written")
    reopened = HardStateStore(tmp_path)
    assert reopened.current == HardState(2, "n1", 3)
    assert not (tmp_path / (NAME + ".tmp")).exists()


@pytest.mark.parametrize("pos", [0, 5, 9, 17, 25, -1])
def test_any_corruption_is_reported_with_the_file(tmp_path: Path, pos: int) -> None:
    HardStateStore(tmp_path).save(HardState(7, "node-x", 99))
    p = tmp_path / NAME
    data = bytearray(p.read_bytes())
    data[pos] ^= 0x10
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as exc:
        HardStateStore(tmp_path)
    assert exc.value.path == p


def test_truncated_file_is_corruption(tmp_path: Path) -> None:
    HardStateStore(tmp_path).save(HardState(1, None, 0))
    (tmp_path / NAME).write_bytes(b"LRHS")
    with pytest.raises(CorruptionError, match="truncated"):
        HardStateStore(tmp_path)


def test_a_failed_write_keeps_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = HardStateStore(tmp_path)
    s.save(HardState(1, "n1", 1))

    def eio(*a: object, **k: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", eio)
    with pytest.raises(StorageError, match="Input/output"):
        s.save(HardState(2, "n2", 1))
    assert s.current == HardState(1, "n1", 1)
    monkeypatch.undo()
    assert HardStateStore(tmp_path).current == HardState(1, "n1", 1)
    s.save(HardState(2, "n2", 1))
    assert HardStateStore(tmp_path).current == HardState(2, "n2", 1)


def test_disk_storage_writes_a_commit_only_change_lazily(tmp_path: Path) -> None:
    """A new commit index alone costs no write (etcd's MustSync); it reaches
    the file with the next term or vote change, capped at the durable log,
    or on close; a crash before that loses only the hint."""
    import random

    from liferaft.core import Entry
    from liferaft.storage import DiskStorage
    from liferaft.storage.fs import FaultFS

    fs = FaultFS(random.Random(1))
    d = DiskStorage(tmp_path, fs=fs)
    d.save(HardState(1, "n1", 0), [Entry(i, 1, b"e") for i in range(1, 6)])
    before = (tmp_path / NAME).read_bytes()
    d.save(HardState(1, "n1", 4), [])
    assert (tmp_path / NAME).read_bytes() == before  # nothing written
    assert d.hard_state == HardState(1, "n1", 4)  # but reported
    fs.crash()
    d = DiskStorage(tmp_path, fs=fs)
    assert d.hard_state == HardState(1, "n1", 0) and d.last_index() == 5
    d.save(HardState(1, "n1", 5), [])
    d.save(HardState(2, None, 9), [])  # a term change carries the commit, capped at the log
    assert HardStateStore(tmp_path).current == HardState(2, None, 5)
    d.save(HardState(2, "n2", 5), [Entry(6, 2, b"f")])
    d.save(HardState(2, "n2", 6), [])
    d.close()
    fs.crash()
    assert DiskStorage(tmp_path, fs=fs).hard_state == HardState(2, "n2", 6)
