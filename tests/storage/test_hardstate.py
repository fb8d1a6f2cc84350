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
