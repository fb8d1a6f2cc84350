"""The KV server's state machine: commands applied to the MVCC store on LMDB.

Theory of operation (docs/kv.md, "The KV state machine"):

- **Apply.**  :class:`KVMachine` is a durable, batch, off-loop state
  machine (docs/statemachine.md, "The durable contract"): the runtime
  hands it each batch of committed entries in a worker thread, and
  :meth:`KVMachine.apply_batch` applies them in ONE LMDB write transaction
  that also writes the last entry's log index (:mod:`.mvcc.commands`: the
  codec, client sessions, leases, the history).  A crash leaves the
  database at one applied index; a restart resumes after
  :meth:`applied_index`, with nothing restored or replayed.  With the
  store's ``metasync=False`` a power loss may undo the last commit:
  :meth:`synced_applied_index` is what it keeps, and the runtime keeps the
  log to it, so the restart replays the undone entries from the WAL.
- **Deferred commits.**  A batch the runtime applies on the event loop's
  thread (NodeConfig.inline_apply_entries) is left in the store's open
  write transaction (:mod:`.mvcc.store`, "Deferred commits"), and
  :meth:`KVMachine.settle` commits it: the runtime calls it within
  NodeConfig.settle_delay, before any batch goes to its worker, before a
  snapshot and at close (docs/statemachine.md).  One commit and its fsync
  then serve the batches of 0.1 s instead of one each (etcd's backend
  commits the same way).  :meth:`bind_settle` gives the store the
  runtime's thread-safe request, so a read in another thread settles first.
- **Listener.**  After the batch is applied, the listener's ``committed``
  gets what it did: its watch events in revision order and the leases
  granted and revoked (:class:`~.mvcc.commands.Committed`).  With a
  deferred commit that is before the commit, as in etcd: a crash of the
  process then undoes the batch in the store, but the log still holds its
  entries and applies them again with the same revisions, so what a watcher
  saw stays true.  It is called **in the apply thread**, so it must only
  hand things over (the watch hub's ``publish_threadsafe``) and never
  block; an exception from it is the listener's bug and stops the node like
  a failed apply.
- **Snapshots are the database.**  :meth:`checkpoint_chunks` streams a
  consistent copy of the store (one LMDB read transaction, taken when the
  stream starts, so at an applied index at or after the snapshot's), framed
  with a length and digest (:mod:`.mvcc.checkpoint`).  :meth:`restore`
  receives one into a new store directory, checks it whole, and swaps it in
  atomically (:mod:`.mvcc.storedir`); the old store is untouched until the
  swap, so a refused checkpoint changes nothing.  Then the listener's
  ``restored(revision)``.
- **Reads** go through :meth:`read` (a consistent :class:`ReadView`) or the
  helpers that open one for a single read.  A restore closes the old store:
  a view still open on it keeps it open until the view ends, and any later
  call on it gets :class:`~.mvcc.ops.StoreClosedError` (retry-safe: read
  again, from the new store) rather than read a store that is gone.
"""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from liferaft.kv.mvcc import MVCCStore, Range, RangeResult, ReadView, check_store, storedir
from liferaft.kv.mvcc.checkpoint import frame, receive
from liferaft.kv.mvcc.commands import Committed, apply_entries, bounded_work
from liferaft.kv.mvcc.leases import LeaseInfo, all_leases, lease_info
from liferaft.kv.mvcc.sessions import MAX_SESSIONS, live_sessions, session_info
from liferaft.kv.mvcc.store import DEFAULT_MAP_SIZE, DEFAULT_METASYNC
from liferaft.kv.mvcc.storedir import StoreDir
from liferaft.runtime.statemachine import (
    DEFAULT_CHUNK_SIZE,
    ApplyEntry,
    SettleRequest,
    StateSnapshot,
    StreamSnapshot,
)

__all__ = ["Committed", "KVMachine", "MachineListener"]


class MachineListener(Protocol):
    """What the machine tells about committed changes (the KV service)."""

    def committed(self, batch: Committed) -> None:
        """A batch committed (called in the apply thread: hand over, never block)."""
        ...

    def restored(self, revision: int) -> None:
        """The whole state was replaced by a checkpoint at ``revision``."""
        ...


class KVMachine:
    """The replicated KV state machine over :class:`MVCCStore` (see the module doc).

    ``data_dir`` is the machine's own directory (numbered stores and their
    ``CURRENT`` pointer); ``sync``, ``metasync`` and ``map_size`` are the
    store's (:class:`~.mvcc.MVCCStore`).
    ``max_sessions`` must be the same on every replica (tests lower it).
    """

    apply_off_loop = True

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        sync: bool = True,
        metasync: bool = DEFAULT_METASYNC,
        map_size: int = DEFAULT_MAP_SIZE,
        listener: MachineListener | None = None,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        self._dir = StoreDir(data_dir)
        self._sync = sync
        self._metasync = metasync
        self._map_size = map_size
        self._max_sessions = max_sessions
        self.listener = listener
        # The runtime's settle request, and the thread whose batches are
        # deferred (the event loop's), once bound (bind_settle).
        self._settle_request: SettleRequest | None = None
        self._defer_thread: int | None = None
        self.store = self._open(self._dir.open_current())

    def _open(self, path: Path) -> MVCCStore:
        store = MVCCStore(
            path, sync=self._sync, metasync=self._metasync, map_size=self._map_size
        )
        store.settle_request = self._settle_request
        return store

    # --- deferred commits (the runtime's optional settle contract) ---------------------

    def bind_settle(self, request: SettleRequest) -> None:
        """From the runtime, on the event loop's thread: batches applied in
        this thread from now on are deferred, and ``request`` (thread-safe)
        asks the loop to :meth:`settle`; a read from another thread uses it."""
        self._settle_request = request
        self._defer_thread = threading.get_ident()
        self.store.settle_request = request

    def settle(self) -> None:
        """Commit the batches deferred so far (one fsync); on the loop's thread."""
        self.store.settle()

    # --- applying ----------------------------------------------------------------------

    def apply_batch(self, entries: Sequence[ApplyEntry]) -> list[Any]:
        """Apply ``entries`` in one transaction; one result per entry: the
        MVCC result, the new session's id for OpenSession, a lease result,
        None for an empty entry, or the :class:`~liferaft.kv.errors.KVError`
        that refused it."""
        if not entries:
            return []
        results, done = self.store.write(
            lambda batch: apply_entries(batch, entries, self._max_sessions),
            defer=self._defer_thread == threading.get_ident(),
        )
        if done and self.listener is not None:
            self.listener.committed(done)
        return results

    def may_apply_inline(self, entries: Sequence[ApplyEntry]) -> bool:
        """The runtime's optional off-loop method (docs/statemachine.md): may
        this small batch run on the event loop's thread?  Only if every
        entry's work is bounded by its size (:func:`.mvcc.commands.bounded_work`:
        no range delete, range read or compare, lease revoke or compaction)."""
        return all(bounded_work(e.data) for e in entries)

    def apply(self, index: int, data: bytes, *, leader_time: float = 0.0) -> Any:
        """The plain contract, for a runtime that does not batch: one entry;
        a refusal is raised (the runtime fails that proposal with it)."""
        result = self.apply_batch([ApplyEntry(index, data, leader_time)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def applied_index(self) -> int:
        """The log index of the last committed batch (0: none)."""
        return self.store.applied_index()

    def synced_applied_index(self, *, flush: bool = False) -> int:
        """The highest applied index a power loss keeps (the runtime's
        optional durable-contract method); ``flush``: make every commit
        survive one first (an fsync: called from a worker thread)."""
        return self.store.flush() if flush else self.store.synced_applied_index()

    # --- reads -------------------------------------------------------------------------

    def read(self) -> ReadView:
        """A consistent snapshot for reads; close it (``with machine.read() as r:``)."""
        return self.store.read()

    def range(self, req: Range) -> RangeResult:
        return self.store.range(req)

    def revision(self) -> int:
        return self.store.revision()

    def compact_revision(self) -> int:
        return self.store.compact_revision()

    def db_size(self) -> int:
        """Bytes of the store's file (LMDB's ``data.mdb``)."""
        return os.stat(self.store.path / "data.mdb").st_size

    def db_size_in_use(self) -> int:
        """Bytes of the store's file up to its highest page in use (what a
        checkpoint copies, before framing)."""
        return self.store.size_in_use()

    def lease(self, lease: int) -> LeaseInfo | None:
        """Lease ``lease`` (granted TTL, attached keys), or None if not live."""
        with self.read() as view:
            return lease_info(view.txn, view.dbs, lease)

    def leases(self) -> list[tuple[int, int]]:
        """Every live lease as (id, granted TTL), by id."""
        with self.read() as view:
            return all_leases(view.txn, view.dbs)

    def session(self, sid: int) -> tuple[int, list[int]] | None:
        """A live session's floor and held seqs (None: not live)."""
        with self.read() as view:
            return session_info(view.txn, view.dbs, sid)

    def sessions(self) -> list[int]:
        """Live session ids, least recently used first."""
        with self.read() as view:
            return live_sessions(view.txn, view.dbs)

    # --- snapshots ---------------------------------------------------------------------

    def checkpoint_chunks(
        self, chunk_size: int = DEFAULT_CHUNK_SIZE, align: tuple[int, int] | None = None
    ) -> Iterator[bytes]:
        """A framed, consistent copy of the store (see the module doc).

        May run in a thread while batches apply; closing it early ends the
        copy.  The copy carries its own applied index (>= the last one
        applied before the stream started).  ``align``: the stream's length
        modulo ``align[0]`` is ``align[1]`` (:func:`~.mvcc.checkpoint.frame`)."""
        return frame(self.store.stream_copy(chunk_size), align)

    def snapshot(self) -> StateSnapshot:
        """The plain contract: a snapshot whose chunks are :meth:`checkpoint_chunks`."""
        return StreamSnapshot(self.checkpoint_chunks)

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Replace the store with the checkpoint in ``chunks`` (an empty stream:
        an empty store), atomically; :class:`~liferaft.kv.mvcc.StoreFormatError`
        for a checkpoint that is truncated, damaged or not a store, with the
        old store left as it was."""
        new = self._dir.next_path()
        try:
            it = iter(chunks)
            first = next((c for c in it if c), None)
            if first is None:  # the empty state of a brand-new cluster
                MVCCStore(new, sync=self._sync).close()
            else:
                receive(itertools.chain([first], it), new)
            storedir.crash_point("received")
            check_store(new)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        storedir.crash_point("checked")
        self._dir.commit(new)
        old = self.store
        old.close()
        self.store = self._open(new)
        storedir.crash_point("reopened")
        shutil.rmtree(old.path)
        if self.listener is not None:
            self.listener.restored(self.store.revision())

    def close(self) -> None:
        self.store.close()

