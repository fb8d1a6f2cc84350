"""Taking snapshots of the state machine, and compacting the log behind them.

Theory of operation
-------------------
A snapshot is due when ``snapshot_entries`` entries or ``snapshot_bytes``
bytes were applied since the last one, or when asked
(:meth:`Snapshotter.snapshot`).  Taking one has three steps:

1. **Capture**, as an operation of the loop between two Readies
   (liferaft/runtime/loop.py): the applied index and the configuration in
   force there (:meth:`Applier.capture_point`), the member table, the
   state machine's own cheap capture (``sm.snapshot()``) and a writer for
   the snapshot's file.  With an off-loop state machine the apply worker is
   first parked between two batches (:meth:`Applier.hold`), so no batch
   runs in the state machine while it is captured.
2. **Write** the chunks, wrapped with the runtime's header (members, entry
   format; liferaft/runtime/store.py), to the snapshot's own file in a
   worker thread while the node keeps applying.
3. **Adopt** the file and compact the log, again as an operation of the
   loop, which alone touches the WAL.

A capture point may be missing for a while: a durable state machine ahead
of the core after a restart has an applied index whose configuration the
core has not replayed yet.  The snapshot then waits for a later turn.

A state machine with ``checkpoint_chunks()`` is not captured at all: its
store is the snapshot (liferaft/runtime/checkpoint.py).  The file gets the
header and a deferred marker, and the log is compacted up to the capture
point, which must not be past the store's *durable* applied index: the
one a power loss keeps (``synced_applied_index()``, docs/statemachine.md,
"The durable contract"), else ``applied_index()``.  With a store that
syncs every batch the two are equal.  One that defers a sync (LMDB's
``MDB_NOMETASYNC``: its last commit is not yet safe from a power loss) is
flushed first, in a worker thread while the apply worker is held, so the
capture point is synced; a state machine applied on the loop is flushed on
the loop.  Were the snapshot taken past the synced index, a power loss
would bring the store back behind a log that no longer holds the entries
in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from liferaft.storage import StorageError

from .applier import Applier
from .checkpoint import marker
from .config import NodeConfig
from .errors import StoppedError
from .events import EventType
from .loop import RaftLoop
from .membership import Membership
from .statemachine import BytesSnapshot, StateSnapshot, can_checkpoint, synced_applied_index
from .store import Store, Writer, wrap_snapshot

log = logging.getLogger("liferaft.runtime")


class _NotNow(Exception):
    """No capture point yet (see the module doc)."""


class Snapshotter:
    """Takes the node's snapshots (one at a time)."""

    def __init__(
        self,
        applier: Applier,
        loop: RaftLoop,
        membership: Membership,
        config: NodeConfig,
        emit: Callable[..., None],
    ) -> None:
        self._applier = applier
        self._loop = loop
        self._membership = membership
        self._config = config
        self._emit = emit
        self.id = loop.id
        self._task: asyncio.Task[None] | None = None

    def after_ready(self) -> None:
        """Take a snapshot if enough was applied since the last."""
        a = self._applier
        if self._task is None and (
            a.applied - a.snap_index >= self._config.snapshot_entries
            or a.bytes_since_snap >= self._config.snapshot_bytes
        ):
            self._task = asyncio.create_task(self._take())

    async def snapshot(self) -> int:
        """Take a snapshot now (unless one is running); returns its index."""
        a = self._applier
        if self._task is None:
            if a.applied <= a.snap_index:
                return a.snap_index
            self._task = asyncio.create_task(self._take())
        await asyncio.shield(self._task)
        return a.snap_index

    async def wait(self) -> None:
        """Let a snapshot being taken finish (the node stops)."""
        if self._task is not None:
            await self._task

    def _capture(self, store: Store) -> tuple[int, StateSnapshot, Writer, Any, int]:
        """On the loop between two Readies (see the module doc)."""
        a = self._applier
        point = a.capture_point()
        if point is None:
            raise _NotNow
        index, conf = point
        members = {k: dict(v) for k, v in self._membership.members.items()}
        if can_checkpoint(a.sm):
            durable = synced_applied_index(a.sm) or 0
            if durable < index and not a.off_loop:
                # Applied on the loop: its commits already fsync there.
                durable = synced_applied_index(a.sm, flush=True) or 0
            if durable < index:
                raise _NotNow
            cap: StateSnapshot = BytesSnapshot(marker(durable))
        else:
            cap = a.sm.snapshot()
        try:
            writer = store.begin_snapshot(index, conf)
        except BaseException:
            cap.release()
            raise
        return index, cap, writer, members, a.entry_format

    async def _capture_held(self) -> tuple[int, StateSnapshot, Writer, Any, int]:
        a, loop = self._applier, self._loop
        if not a.off_loop:
            return await loop.store_op(self._capture)
        released = await a.hold()
        try:
            if can_checkpoint(a.sm) and (synced_applied_index(a.sm) or 0) < a.applied:
                # No batch runs while held: after this the capture point is synced.
                await asyncio.to_thread(synced_applied_index, a.sm, flush=True)
            return await loop.store_op(self._capture)
        finally:
            if not released.done():
                released.set_result(None)

    async def _take(self) -> None:
        """Capture (cheap), write in a thread while the node keeps applying,
        then adopt it and compact the log on the loop."""
        loop, a = self._loop, self._applier
        t0 = time.perf_counter()
        try:
            index, cap, writer, members, fmt = await self._capture_held()

            def write() -> Any:
                try:
                    for chunk in wrap_snapshot(members, cap.chunks(), fmt):
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

            a.bytes_since_snap = 0
            await loop.store_op(adopt, thread=True)
            a.snap_index = max(a.snap_index, index)
            self._emit(EventType.SNAPSHOT_TAKEN, index, duration=time.perf_counter() - t0)
            log.info("node %s: snapshot at %d", self.id, index)
        except _NotNow:
            log.debug(
                "node %s: no snapshot yet: the core (or the store's durable index) "
                "has not caught up",
                self.id,
            )
        except (StorageError, OSError) as exc:
            log.error("node %s: snapshot failed: %s", self.id, exc)
        except (StoppedError, asyncio.CancelledError):
            # The store closed (or the node stopped) under it: nothing adopted.
            log.info("node %s: snapshot abandoned: the node stopped", self.id)
        finally:
            self._task = None
