"""Snapshot files are atomic, streamed, checksummed and pruned."""

from __future__ import annotations

from pathlib import Path

import pytest

from liferaft.core import ConfState, SnapshotMeta
from liferaft.storage.errors import CorruptionError
from liferaft.storage.snapshots import SnapshotStore

CONF = ConfState(voters=frozenset({"n1", "n2", "n3"}), learners=frozenset({"n4"}))


def write(store: SnapshotStore, index: int, term: int, chunks: list[bytes]) -> SnapshotMeta:
    with store.create(SnapshotMeta(index, term, CONF)) as w:
        for c in chunks:
            w.write(c)
        return w.commit()


def test_streamed_round_trip_in_chunks(tmp_path: Path) -> None:
    s = SnapshotStore(tmp_path)
    chunks = [bytes([i]) * 1000 for i in range(50)]
    meta = write(s, 100, 3, chunks)
    assert s.latest() == meta and meta.conf_state == CONF
    got = list(s.open(meta, chunk=4096))
    assert b"".join(got) == b"".join(chunks)
    assert all(len(c) <= 4096 for c in got)


def test_keeps_the_last_k_and_sorts_by_index(tmp_path: Path) -> None:
    s = SnapshotStore(tmp_path, keep=2)
    for i, t in [(10, 1), (20, 2), (30, 2), (40, 5)]:
        write(s, i, t, [b"x"])
    assert [m.index for m in s.list()] == [30, 40]


def test_an_uncommitted_snapshot_never_appears(tmp_path: Path) -> None:
    s = SnapshotStore(tmp_path)
    write(s, 5, 1, [b"old"])
    with s.create(SnapshotMeta(9, 2, CONF)) as w:
        w.write(b"half")
        # the process dies here: no commit
    assert s.latest() is not None and s.latest().index == 5  # type: ignore[union-attr]
    (tmp_path / "0000000000000002-0000000000000009.tmp").write_bytes(b"crash leftover")
    s2 = SnapshotStore(tmp_path)
    assert [m.index for m in s2.list()] == [5]
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("where", ["head", "data", "trailer"])
def test_corruption_anywhere_is_detected(tmp_path: Path, where: str) -> None:
    s = SnapshotStore(tmp_path)
    meta = write(s, 7, 2, [b"payload" * 100])
    p = s.path_of(meta)
    data = bytearray(p.read_bytes())
    pos = {"head": 8, "data": len(data) // 2, "trailer": len(data) - 2}[where]
    data[pos] ^= 0x04
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as exc:
        s.verify(s.list()[-1] if where != "head" else meta)
    assert exc.value.path == p


def test_truncated_snapshot_is_corruption(tmp_path: Path) -> None:
    s = SnapshotStore(tmp_path)
    meta = write(s, 7, 2, [b"payload" * 100])
    p = s.path_of(meta)
    p.write_bytes(p.read_bytes()[:-30])
    with pytest.raises(CorruptionError):
        s.load(meta)


@pytest.mark.parametrize("order", ["first-commits", "first-aborts"])
def test_two_streams_of_the_same_snapshot_never_share_a_file(tmp_path: Path, order: str) -> None:
    """Two leaders (or one that reconnected) can stream the same snapshot
    (same index and term) to a node at once, on two connections, with no
    lock between them.  Each writer must own its temporary file: sharing
    one, the second open emptied the first's file under it (the committed
    snapshot held zeros: the node installed it, reset its log, and could not
    restore or restart), or the first's abort deleted the second's."""
    s = SnapshotStore(tmp_path)
    meta = SnapshotMeta(5, 2, CONF)
    data = b"x" * 1000 + b"y" * 1000
    a = s.create(meta)
    a.write(data[:1000])
    b = s.create(meta)
    b.write(data[:500])
    if order == "first-commits":
        a.write(data[1000:])
        a.commit()
        b.abort()
    else:
        a.abort()
        b.write(data[500:])
        b.commit()
    assert s.load(meta) == data
    assert not list(tmp_path.glob("*.tmp"))
