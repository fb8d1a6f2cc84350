"""The store's synced applied index with ``metasync=False`` (LMDB's
``MDB_NOMETASYNC``; liferaft/kv/mvcc/store.py, "Sync"), and what a power
loss leaves: the previous commit, whole, from which the lost entries
apply again."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lmdb
import pytest

from liferaft.kv.mvcc import TO_END, MVCCEntry, MVCCStore, Put, Range
from liferaft.kv.mvcc.store import StoreWriteError
from tests.kv.mvcc.powerloss import lose_last_meta, meta_pages

EVERYTHING = Range(b"\x00", TO_END)


def _puts(first: int, last: int, tag: bytes = b"k") -> list[MVCCEntry]:
    return [MVCCEntry(i, Put(tag + b"%d" % i, b"v%d" % i)) for i in range(first, last + 1)]


def test_the_synced_index_is_the_previous_commit_until_a_flush(tmp_path: Path) -> None:
    store = MVCCStore(tmp_path / "db")  # the default: metasync=False
    try:
        assert store._env.flags()["metasync"] is False  # LMDB got the flag
        assert store.synced_applied_index() == store.applied_index() == 0
        store.apply_batch(_puts(1, 3))
        assert (store.applied_index(), store.synced_applied_index()) == (3, 0)
        store.apply_batch(_puts(4, 4))
        assert (store.applied_index(), store.synced_applied_index()) == (4, 3)
        assert store.flush() == store.synced_applied_index() == 4
        assert store.flush() == 4  # nothing pending: no change
        store.apply_batch(_puts(5, 6))
        assert store.synced_applied_index() == 4
    finally:
        store.close()
    # Opening (and closing) flushes: nothing is left for a power loss to undo.
    store = MVCCStore(tmp_path / "db", metasync=False)
    try:
        assert store.synced_applied_index() == store.applied_index() == 6
    finally:
        store.close()


def test_with_metasync_or_without_sync_the_synced_index_is_the_applied_one(
    tmp_path: Path,
) -> None:
    kws: dict[str, dict[str, bool]] = {
        "full": {"metasync": True},
        "nosync": {"sync": False, "metasync": False},
    }
    for name, kw in kws.items():
        store = MVCCStore(tmp_path / name, **kw)
        try:
            for first in (1, 4):
                store.apply_batch(_puts(first, first + 2))
                assert store.synced_applied_index() == store.applied_index() == first + 2
        finally:
            store.close()


def test_a_power_loss_undoes_the_last_commit_only_and_its_entries_apply_again(
    tmp_path: Path,
) -> None:
    store = MVCCStore(tmp_path / "db", metasync=False)
    try:
        store.apply_batch(_puts(1, 5))
        at_p = list(store.range(EVERYTHING).kvs)
        before = meta_pages(store)
        lost = _puts(6, 8, b"late")
        store.apply_batch(lost)
        synced = store.synced_applied_index()
        everything = list(store.range(EVERYTHING).kvs)
        # A copy of the file now, with the last meta write lost.
        for name in ("lost", "kept"):
            (tmp_path / name).mkdir()
            shutil.copyfile(store.path / "data.mdb", tmp_path / name / "data.mdb")
    finally:
        store.close()
    assert synced == 5
    kept = MVCCStore(tmp_path / "kept", readonly=True)
    try:
        assert kept.applied_index() == 8  # the file without the loss: all there
    finally:
        kept.close()
    lose_last_meta(tmp_path / "lost" / "data.mdb", before)
    back = MVCCStore(tmp_path / "lost", metasync=False)
    try:
        # Back at what the synced index promised, whole, nothing of the rest.
        assert back.applied_index() == synced
        assert list(back.range(EVERYTHING).kvs) == at_p
        # The runtime hands it the entries after its applied index again.
        back.apply_batch(lost)
        assert back.applied_index() == 8
        assert list(back.range(EVERYTHING).kvs) == everything
    finally:
        back.close()


class _FailingSync:
    """The store's LMDB environment with a disk that refuses fsync."""

    def __init__(self, env: Any) -> None:
        self._env = env

    def sync(self, force: bool = False) -> None:
        raise lmdb.Error("EIO")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


def test_a_failed_flush_is_one_line_and_claims_nothing(tmp_path: Path) -> None:
    store = MVCCStore(tmp_path / "db")
    env = store._env
    try:
        store.apply_batch(_puts(1, 2))
        store._env = _FailingSync(env)  # type: ignore[assignment]
        with pytest.raises(StoreWriteError, match="synced up to applied index 0") as e:
            store.flush()
        assert "\n" not in str(e.value)
        assert store.synced_applied_index() == 0
        store.close()  # a clean stop on a failing disk still closes
    finally:
        store._env = env
        env.close()
