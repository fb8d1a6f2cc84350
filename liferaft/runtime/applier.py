"""The apply boundary: the one owner of the state machine.

Theory of operation
-------------------
:class:`Applier` hands committed entries to the state machine, in log order,
each once per life of the node, and keeps the applied index.  It works in
batches: :meth:`Applier.apply` first runs the state machine over the whole
batch (a committed membership change goes to the member table instead),
collecting each entry's result, and only then settles the callers' futures
(the proposal tracker) and serves the reads waiting for those indexes (the
read batcher).  So the state machine's part can move off the event loop or
into one transaction later without touching how outcomes are told.

It also owns the state machine's snapshots:

* restore, from the store's snapshot at start or from one the leader sent
  (:meth:`Applier.install`; the waiters it covers learn ``NodeTimeoutError``,
  outcome unknown);
* take, when ``snapshot_entries`` entries or ``snapshot_bytes`` bytes were
  applied since the last one, or on :meth:`Applier.snapshot`.  The capture
  (``sm.snapshot()``, cheap by contract), the members and the conf state
  are taken together as an operation of the loop, between two Readies, so
  they agree with the applied index; the chunks are written to the
  snapshot's own file in a worker thread while the node keeps applying; the
  adoption and the log compaction are again operations of the loop, which
  alone touches the WAL (liferaft/runtime/loop.py).

The snapshot payload wraps the state machine's chunks with the member table
(liferaft/runtime/store.py: ``wrap_snapshot``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from liferaft.core import ConfState, Entry, EntryType, ReadState, Snapshot, SnapshotMeta
from liferaft.storage import StorageError

from .config import NodeConfig
from .errors import StoppedError
from .events import EventType
from .loop import RaftLoop
from .membership import Membership
from .proposals import ProposalTracker
from .reads import ReadBatcher
from .statemachine import StateMachine, StateSnapshot
from .store import Store, Writer, unwrap_snapshot, wrap_snapshot

log = logging.getLogger("liferaft.runtime")


class Applier:
    """Applies entries and snapshots to the state machine; takes snapshots."""

    def __init__(
        self,
        sm: StateMachine,
        loop: RaftLoop,
        tracker: ProposalTracker,
        membership: Membership,
        reads: ReadBatcher,
        config: NodeConfig,
        emit: Callable[..., None],
    ) -> None:
        self.sm = sm
        self._loop = loop
        self._tracker = tracker
        self._membership = membership
        self._config = config
        self._emit = emit
        self.id = loop.id
        self._reads = reads
        self.applied = 0
        self.snap_index = 0
        self._bytes_since_snap = 0
        self._snapshotting: asyncio.Task[None] | None = None

    # -- entries ---------------------------------------------------------------------

    def apply(self, ents: list[Entry]) -> bool:
        """Apply ``ents``; True if a caller's future was settled."""
        results = self._run(ents)
        settled = self._tracker.settle_applied(ents, results)
        self._emit(EventType.APPLY, self.applied)
        self._reads.wake_applied(self.applied)
        return settled

    def _run(self, ents: list[Entry]) -> list[tuple[bool, Any]]:
        """The state machine's part of a batch: (ok, result or error) each."""
        sm_apply = self.sm.apply
        membership = self._membership
        results: list[tuple[bool, Any]] = []
        n = 0
        for e in ents:
            ok, result = True, None
            if e.type is EntryType.CONF_CHANGE:
                membership.apply_change(e)
            elif e.data:
                try:
                    result = sm_apply(e.index, e.data)
                except Exception as exc:  # the state machine refused this entry
                    ok, result = False, exc
                n += len(e.data)
            self.applied = e.index
            results.append((ok, result))
        self._bytes_since_snap += n
        return results

    def read_states(self, states: list[ReadState]) -> None:
        """ReadIndex answers: served once this node has applied their index."""
        self._reads.on_read_states(states, self.applied)

    # -- snapshots in -------------------------------------------------------------------

    def initial_snapshot(self, members: dict[str, dict[str, Any]]) -> bytes:
        """The payload of a brand-new cluster's first snapshot: ``members``
        and the state machine as it is now."""
        snap = self.sm.snapshot()
        try:
            return b"".join(wrap_snapshot(members, snap.chunks()))
        finally:
            snap.release()

    def restore_from(self, store: Store, meta: SnapshotMeta) -> None:
        """Restore the state machine and the member table from ``meta``."""
        members, state = unwrap_snapshot(store.snapshot_chunks(meta))
        self.sm.restore(state)
        self._membership.members = members
        self.applied = self.snap_index = meta.index
        self._bytes_since_snap = 0

    def install(self, snap: Snapshot) -> None:
        """A snapshot from the leader replaced our log: restore from it."""
        store = self._loop.store
        assert store is not None
        self.restore_from(store, snap.meta)
        self._membership.update_peers()
        self._tracker.fail_covered(snap.index)
        self._emit(EventType.SNAPSHOT_INSTALLED, snap.index)
        self._reads.wake_applied(self.applied)

    # -- snapshots out ------------------------------------------------------------------

    def after_ready(self) -> None:
        """Take a snapshot if enough was applied since the last."""
        if self._snapshotting is None and (
            self.applied - self.snap_index >= self._config.snapshot_entries
            or self._bytes_since_snap >= self._config.snapshot_bytes
        ):
            self._snapshotting = asyncio.create_task(self._take_snapshot())

    async def snapshot(self) -> int:
        """Take a snapshot now (unless one is running); returns its index."""
        if self._snapshotting is None:
            if self.applied <= self.snap_index:
                return self.snap_index
            self._snapshotting = asyncio.create_task(self._take_snapshot())
        task = self._snapshotting
        await asyncio.shield(task)
        return self.snap_index

    async def wait_snapshot(self) -> None:
        """Let a snapshot being taken finish (the node stops)."""
        if self._snapshotting is not None:
            await self._snapshotting

    def _capture(self, store: Store) -> tuple[int, StateSnapshot, Writer, Any]:
        """On the loop between two Readies: the applied index, the state
        machine's capture, and a writer for the snapshot file."""
        rn = self._loop.rn
        assert rn is not None
        index = self.applied
        conf: ConfState = rn.conf_state()
        members = {k: dict(v) for k, v in self._membership.members.items()}
        cap = self.sm.snapshot()
        try:
            writer = store.begin_snapshot(index, conf)
        except BaseException:
            cap.release()
            raise
        return index, cap, writer, members

    async def _take_snapshot(self) -> None:
        """Capture on the loop (cheap), write in a thread while the node keeps
        applying, then adopt it and compact the log on the loop."""
        loop = self._loop
        try:
            index, cap, writer, members = await loop.store_op(self._capture)

            def write() -> Any:
                try:
                    for chunk in wrap_snapshot(members, cap.chunks()):
                        writer.write(chunk)
                    return writer.commit()
                except BaseException:
                    writer.abort()
                    raise

            store = loop.store
            assert store is not None
            try:
                if store.threaded:
                    meta = await asyncio.to_thread(write)
                else:
                    meta = write()
            finally:
                cap.release()

            def adopt(store: Store) -> None:
                store.adopt_snapshot(meta)
                store.compact(index)

            self._bytes_since_snap = 0
            await loop.store_op(adopt, thread=True)
            self.snap_index = max(self.snap_index, index)
            self._emit(EventType.SNAPSHOT_TAKEN, index)
            log.info("node %s: snapshot at %d", self.id, index)
        except (StorageError, OSError) as exc:
            log.error("node %s: snapshot failed: %s", self.id, exc)
        except StoppedError:  # the store closed under it: nothing was adopted
            log.info("node %s: snapshot abandoned: the node stopped", self.id)
        finally:
            self._snapshotting = None
