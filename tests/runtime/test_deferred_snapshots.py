"""Deferred snapshots: a durable state machine's store is its Raft snapshot
(docs/statemachine.md, "Deferred snapshots"; liferaft/runtime/checkpoint.py).

The leader's snapshot file holds the runtime header and a marker, the log
is compacted behind it, and a follower that fell behind the compacted log
is streamed a copy of the leader's store made as it reads it (at an index
past the snapshot's).  The SQLite state machine's ``applied_log`` table
refuses an index applied twice, so "each entry exactly once" is checked by
the database: a follower that resumed at the snapshot's index instead of
the copy's would be handed entries its store already holds, and crash.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from liferaft.core import AppendEntries, Message
from liferaft.runtime import Node
from liferaft.runtime.apply_events import Restored
from liferaft.runtime.checkpoint import (
    BrokenCheckpointError,
    checkpoint_index,
    marker,
    split_marker,
)
from liferaft.runtime.errors import BadConfigError
from liferaft.runtime.store import (
    DiskStore,
    MemStore,
    SnapshotPayloadError,
    Store,
    unwrap_snapshot,
)
from liferaft.storage import DiskStorage
from tests.runtime.cluster import MemCluster
from tests.runtime.sms.checkpointing import CheckpointSQLite
from tests.runtime.sms.volatile import RecordingStateMachine
from tests.runtime.test_durable_apply import assert_exactly_once, drive, until, write


def _store(tmp: Path, kind: str, nid: str) -> Store:
    if kind == "mem":
        return MemStore()
    return DiskStore(DiskStorage(tmp / f"{nid}-raft", snapshot_data_in_memory=False))


async def _cluster(tmp: Path, kind: str) -> MemCluster:
    # Snapshots only when a test asks for one.
    c = MemCluster(3, snapshot_entries=10_000)
    for nid in c.ids:
        c.stores[nid] = _store(tmp, kind, nid)  # type: ignore[assignment]
        c.sm_factory = lambda nid=nid: CheckpointSQLite(tmp / f"{nid}.db")  # type: ignore[misc]
        await c.make(nid).start()
    return c


async def _restart(c: MemCluster, tmp: Path, kind: str, nid: str, sm: Any = None) -> Node:
    await c.nodes[nid].stop()
    c.sms[nid].close()
    if kind == "disk":
        c.stores[nid] = _store(tmp, kind, nid)  # type: ignore[assignment]  # closed with the node
    c.sm_factory = (lambda: sm) if sm is not None else (lambda: CheckpointSQLite(tmp / f"{nid}.db"))
    node = c.make(nid)
    await node.start()
    return node


def _same_applied(c: MemCluster) -> Callable[[], bool]:
    return lambda: len({n.applied for n in c.nodes.values()}) == 1


def _snapshot_bytes(node: Node) -> bytes:
    store = node.store
    assert store is not None
    return b"".join(store.snapshot_chunks(store.snapshot_meta()))


async def _behind_a_compacted_log(c: MemCluster) -> tuple[Node, str, int, int]:
    """Cut a follower off, write, snapshot and compact the leader's log past
    the follower, write more: (leader, follower, snapshot index, leader's
    applied index when the follower comes back)."""
    await write(c, range(5))
    await until(c, _same_applied(c))
    ld = await c.leader()
    f = next(nid for nid in c.ids if c.nodes[nid] is not ld)
    c.net.isolate(f)
    await write(c, range(5, 20))
    x = await drive(c, ld.snapshot())
    store = ld.store
    assert store is not None
    assert store.reader.first_index() > c.nodes[f].applied + 1, "compacted past the follower"
    await write(c, range(20, 26))  # the store moves past the snapshot
    return ld, f, x, ld.applied


@pytest.mark.parametrize("kind", ["mem", "disk"])
async def test_a_follower_behind_the_compacted_log_gets_the_leaders_store(
    tmp_path: Path, kind: str
) -> None:
    c = await _cluster(tmp_path, kind)
    try:
        ld, f, x, a = await _behind_a_compacted_log(c)
        assert a > x
        # The leader's snapshot holds no state: the header and a marker.
        raw = _snapshot_bytes(ld)
        header, state = unwrap_snapshot([raw])
        assert split_marker(state)[0] == x
        assert not header.checkpoint
        assert len(raw) < 512 < (tmp_path / f"{ld.id}.db").stat().st_size
        events = c.nodes[f].apply_stream()
        node, sm = c.nodes[f], c.sms[f]
        restores = sm.restores  # the bootstrap snapshot's
        c.net.rejoin(f)
        await until(c, _same_applied(c))
        assert not node.crashed.is_set()
        assert sm.restores == restores + 1 and c.sms[ld.id].checkpoints == 1
        events.close()
        restored = [e.index async for e in events if isinstance(e, Restored)]
        # The copy was made as the follower read it: past the snapshot, and
        # the follower resumed at the copy's index, not the snapshot's.
        assert len(restored) == 1 and restored[0] >= a > x
        assert node.applier.snap_index == x
        received, _ = unwrap_snapshot([_snapshot_bytes(node)])
        assert received.checkpoint
        await write(c, range(26, 30))
        await until(c, _same_applied(c))
        assert_exactly_once(c)

        # A restart after the install resumes after the store: no restore.
        node = await _restart(c, tmp_path, kind, f)
        assert c.sms[f].restores == 0
        assert node.applied == c.sms[f].applied_index() >= a
        await write(c, range(30, 34))
        await until(c, _same_applied(c))
        assert_exactly_once(c)
    finally:
        await c.stop()


async def test_a_restart_between_the_install_and_the_log_catching_up(tmp_path: Path) -> None:
    """The follower installed a copy at A but holds the log only up to the
    snapshot X < A when it restarts: its store is ahead of its log, which
    is right (the copy came from this cluster), not a store of another log."""
    c = await _cluster(tmp_path, "disk")
    try:
        ld, f, x, a = await _behind_a_compacted_log(c)

        def appends_to_f(frm: str, m: Message) -> bool:
            return isinstance(m, AppendEntries) and m.to == f

        c.net.drop_if(appends_to_f)
        restores = c.sms[f].restores
        c.net.rejoin(f)
        await until(c, lambda: c.sms[f].restores > restores and c.nodes[f].applied >= a)
        store = c.nodes[f].store
        assert store is not None and store.reader.last_index() == x < c.nodes[f].applied
        node = await _restart(c, tmp_path, "disk", f)
        assert c.sms[f].restores == 0 and node.applied == c.sms[f].applied_index() >= a
        c.net.drop_if(None)
        await write(c, range(40, 44))
        await until(c, _same_applied(c))
        assert not node.crashed.is_set()
        assert_exactly_once(c)
    finally:
        await c.stop()


async def test_a_deferred_snapshot_needs_its_store(tmp_path: Path) -> None:
    """Never past the store's durable index; and a node whose snapshot is
    deferred refuses to start on a lost store or a volatile state machine,
    in one line, instead of starting empty."""
    c = await _cluster(tmp_path, "mem")
    try:
        await write(c, range(6))
        ld = await c.leader()
        sm = c.sms[ld.id]
        before = ld.applier.snap_index
        sm.lag = 3  # the store has not made the last entries durable yet
        assert await drive(c, ld.snapshot()) == before, "a snapshot past the durable index"
        sm.lag = 0
        x = await drive(c, ld.snapshot())
        assert x == ld.applied > before
        nid = ld.id
        await c.nodes[nid].stop()
        sm.close()
        (tmp_path / f"{nid}.db").unlink()  # the store is lost
        c.sm_factory = lambda: CheckpointSQLite(tmp_path / f"{nid}.db")
        with pytest.raises(BadConfigError, match=rf"index {x} .* holds only index 0") as e:
            await c.make(nid).start()
        assert "\n" not in str(e.value)
        c.sms[nid].close()
        await c.nodes[nid].transport.close()  # made, never started
        c.sm_factory = RecordingStateMachine
        with pytest.raises(BadConfigError, match="keeps no store") as e:
            await c.make(nid).start()
        assert "\n" not in str(e.value)
        assert c.sms[nid].restored == [], "a volatile state machine was handed the marker"
    finally:
        for n in c.nodes.values():
            if n.running:
                await n.stop()


def test_the_marker_and_the_checkpoint_index_are_checked() -> None:
    index, rest = split_marker([marker(42)[:3], marker(42)[3:]])
    assert index == 42 and list(rest) == []
    index, rest = split_marker([b"LRSQ", b"state"])
    assert index is None and b"".join(rest) == b"LRSQstate"
    bad = bytearray(marker(1))
    bad[4] = 9
    with pytest.raises(SnapshotPayloadError, match="marker version 9; this build reads version 1"):
        split_marker([bytes(bad)])
    with pytest.raises(SnapshotPayloadError, match="bytes after"):
        split_marker([marker(1), b"x"])

    class At:
        def __init__(self, i: int) -> None:
            self.i = i

        def applied_index(self) -> int:
            return self.i

    assert checkpoint_index("n1", At(12), 10) == 12
    with pytest.raises(BrokenCheckpointError, match="index 10 restored a store at index 9"):
        checkpoint_index("n1", At(9), 10)
