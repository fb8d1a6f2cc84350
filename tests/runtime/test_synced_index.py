"""The log is never compacted past what a power loss keeps of a durable state
machine (docs/statemachine.md, "The durable contract": the optional
``synced_applied_index``; liferaft/runtime/snapshotter.py).

The state machine here models LMDB with ``MDB_NOMETASYNC``: each batch's
commit makes the *previous* batch survive a power loss, not its own, and
``flush=True`` makes everything survive one.  A snapshot taken at its
applied index without flushing it first would compact the log past entries
a power loss undoes in the store: after such a loss the node could not
start (its store behind a log that no longer holds the gap).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from liferaft.runtime import Node
from liferaft.runtime.checkpoint import split_marker
from liferaft.runtime.statemachine import ApplyEntry, DeferredSyncStateMachine
from liferaft.runtime.store import unwrap_snapshot
from tests.runtime.cluster import MemCluster
from tests.runtime.sms.checkpointing import CheckpointSQLite
from tests.runtime.test_durable_apply import drive, until, write


class LaggingSync(CheckpointSQLite):
    """A deferred-sync store: the last batch is safe from a power loss only
    once the next batch commits or a flush runs (``stuck``: flushes do
    nothing, a disk that never catches up)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._last = self._synced = super().applied_index()
        self.flushes = 0
        self.stuck = False

    def apply_batch(self, entries: Sequence[ApplyEntry]) -> list[Any]:
        out = super().apply_batch(entries)
        if entries:
            self._synced, self._last = self._last, entries[-1].index
        return out

    def synced_applied_index(self, *, flush: bool = False) -> int:
        if flush:
            self.flushes += 1
            if not self.stuck:
                self._synced = self._last
        return self._synced


async def _cluster(tmp: Path) -> MemCluster:
    c = MemCluster(3, snapshot_entries=10_000)  # snapshots only when asked
    for nid in c.ids:
        c.sm_factory = lambda nid=nid: LaggingSync(tmp / f"{nid}.db")  # type: ignore[misc]
        await c.make(nid).start()
    return c


def _first_index(node: Node) -> int:
    store = node.store
    assert store is not None
    return store.reader.first_index()


async def test_a_snapshot_flushes_the_store_and_never_claims_past_its_synced_index(
    tmp_path: Path,
) -> None:
    c = await _cluster(tmp_path)
    try:
        await write(c, range(8))
        ld = await c.leader()
        sm: LaggingSync = c.sms[ld.id]
        # The runtime sees the optional method (a runtime-checkable protocol).
        assert isinstance(sm, DeferredSyncStateMachine)
        await until(c, lambda: sm._last == ld.applied)
        # Not vacuous: the last batch is not yet safe from a power loss.
        assert sm.synced_applied_index() < ld.applied
        x = await drive(c, ld.snapshot())
        synced = sm.synced_applied_index()
        assert x == ld.applied
        assert synced >= x, f"a snapshot at {x} with only {synced} safe from a power loss"
        assert sm.flushes >= 1
        store = ld.store
        assert store is not None
        _, state = unwrap_snapshot(store.snapshot_chunks(store.snapshot_meta()))
        assert split_marker(state)[0] == x
        assert _first_index(ld) - 1 <= synced, "the log was compacted past the synced index"
    finally:
        await c.stop()


async def test_no_snapshot_while_the_store_cannot_sync(tmp_path: Path) -> None:
    c = await _cluster(tmp_path)
    try:
        await write(c, range(8))
        ld = await c.leader()
        sm: LaggingSync = c.sms[ld.id]
        await until(c, lambda: sm._last == ld.applied)
        sm.stuck = True
        before, first = ld.applier.snap_index, _first_index(ld)
        assert sm.synced_applied_index() < ld.applied
        assert await drive(c, ld.snapshot()) == before, "a snapshot past the synced index"
        assert _first_index(ld) == first and sm.flushes >= 1
        # Once the store can sync again, the next snapshot goes through.
        sm.stuck = False
        assert await drive(c, ld.snapshot()) == ld.applied > before
        assert _first_index(ld) - 1 <= sm.synced_applied_index()
    finally:
        await c.stop()
