"""The MVCC store: an LMDB environment, applied a batch of committed ops at a time.

Theory of operation (docs/kv.md, "MVCC store"; the layout is in
:mod:`liferaft.kv.mvcc.layout`):

- :meth:`MVCCStore.apply_batch` applies committed entries in order in ONE
  LMDB write transaction, which also writes the last entry's log index and
  the store revision.  LMDB commits by writing the new pages, then the meta
  page that points at them (copy-on-write, one writer): a process killed at
  any point leaves the old meta page or the new one, so the database is at
  one applied index, never between two.  It fits the runtime's durable
  state-machine contract (docs/statemachine.md, "The durable contract"):
  :meth:`applied_index` reads back what a commit made durable, a refused op
  is an exception *instance* in the results and changes nothing, and
  raising means the store is broken.
- **Sync.**  Every commit is fsynced before ``apply_batch`` returns.
  ``metasync=True`` (LMDB's own default) fsyncs twice: the data pages, then
  the meta page.  The default, ``metasync=False`` (LMDB's
  ``MDB_NOMETASYNC``), keeps the first fsync and drops the second: LMDB
  documents that this "maintains database integrity, but a system crash may
  undo the last committed transaction" (the meta page written without a
  flush is carried to the disk by the NEXT commit's data flush, or by
  ``mdb_env_sync``).  So after a commit at applied index A whose previous
  commit was at P, a power loss keeps at least P, and A once a later
  commit or :meth:`flush` has run; a crash of the *process* loses nothing
  (the page cache keeps the writes).  :meth:`synced_applied_index` is that
  lower bound, and the runtime keeps the Raft log from being compacted past
  it (docs/statemachine.md, "The durable contract"), so the entries a power
  loss undoes are still in this node's WAL (fsynced before any entry is
  applied) and are applied again after the restart (the store restarts at
  what the file holds, and they were undone whole).  No acknowledged write is
  lost by it: a write is acknowledged once committed in a majority's WAL,
  never on the strength of this store's fsync.  Opening a writable store
  flushes whatever a killed process left in the page cache, so the synced
  index starts at the applied index; :meth:`close` flushes too.
  ``sync=False`` skips every fsync: a crash of the *process* still loses
  nothing, but an OS crash or power loss may lose the last commits, and
  the store then comes back at an older applied index.  Raft replays those
  entries only if the log still holds them, and with ``sync=False`` the
  synced index claims every commit (there is nothing to track), so the log
  may be truncated past them: they are gone from this replica.  Use it for
  tests and throwaway clusters only.
- **Deferred commits** (etcd's backend shape: one commit, one fsync, for
  the batches of up to 0.1 s, NodeConfig.settle_delay).  ``write(run, defer=True)`` applies a
  batch into a write transaction left OPEN, with its applied index and
  revision, and returns at once; :meth:`MVCCStore.settle` commits it (the
  runtime calls it on the loop: docs/statemachine.md, "settle").  Nothing
  acknowledged depends on it: a write is acknowledged once committed in a
  majority's WAL, and a crash of the process (or a failed commit) loses
  only what the open transaction held, whose entries the log still has:
  :meth:`applied_index` and :meth:`synced_applied_index` count committed
  batches only, and the runtime keeps the log to the synced one.  Replayed
  after the restart, the same entries give the same results.  Reads must
  see every batch applied before they began (a write's answer goes out
  before its commit), so the thread that owns the open transaction reads
  through it (a view of it is synchronous: a write or a commit while one
  is open is refused, as a bug), and any other thread's read, copy, flush
  or write first asks the owner to settle (``settle_request``, bound by the
  KV machine to the runtime's) and waits for it.  LMDB write transactions
  belong to the thread that began them, so only that thread commits.
- **Map size.**  LMDB maps the file at a fixed size; a batch that fills it
  (``MapFullError``) is aborted whole, the map doubled, and the batch run
  again, so the caller never sees it.  LMDB remaps the file to grow it, so
  it allows that only while no other transaction of the process is open:
  new read views wait, and the growth waits for the open ones to end (at
  most :data:`GROW_WAIT`; then the batch fails with
  :class:`StoreWriteError` and the node stops rather than remap the file
  under a reader, which would crash the process).
- **Reads.**  :meth:`read` opens a :class:`ReadView` (one read transaction:
  a consistent snapshot while batches go on in another thread).
- **Copies.**  :meth:`copy_to` and :meth:`stream_copy` write a consistent
  copy (LMDB's ``mdb_env_copy``, from its own read transaction, compacted);
  :func:`liferaft.kv.mvcc.copy.check_store` checks one before it is opened.

Threads: one writer at a time (the runtime's applier thread, or the loop's
for a deferred batch), any number of readers.  LMDB write transactions
belong to the thread that began them: :meth:`apply_batch` begins and
commits in one call, and a deferred transaction is committed by its owner.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

import lmdb

from liferaft.kv.errors import KVError
from liferaft.kv.mvcc import layout
from liferaft.kv.mvcc.batch import BatchWriter
from liferaft.kv.mvcc.layout import Dbs
from liferaft.kv.mvcc.ops import (
    MVCCEntry,
    Range,
    RangeResult,
    Result,
    StoreClosedError,
    StoreFormatError,
)
from liferaft.kv.mvcc.reader import ReadView
from liferaft.runtime.statemachine import DEFAULT_CHUNK_SIZE, SettleRequest

T = TypeVar("T")

log = logging.getLogger("liferaft.kv")

#: Initial map size.  The mapping is address space, not memory or disk: the
#: file grows only as pages are used, and a full map is doubled on demand.
#: Large on purpose: LMDB allows ``mdb_env_set_mapsize`` only while no
#: transaction is active in the process, and a read view (a checkpoint
#: streamed to a follower, a range read in a thread) may be open when a
#: batch fills the map, so the doubling is a last resort that should not
#: be reached (etcd's bbolt reserves 10 GiB the same way).  Reserving it
#: costs page tables as pages are touched, not memory.
DEFAULT_MAP_SIZE = 16 << 30

#: LMDB's compacting copy (``MDB_CP_COMPACT``) crashes the process (SIGSEGV)
#: when a write transaction commits in another thread while it runs: seen in
#: the soak, and reproduced by tests/kv/mvcc/test_copy_concurrent.py.  The
#: plain copy is as consistent (one read transaction) and only keeps the
#: free pages, so copies are never compacted.
COMPACT_COPY = False

#: Whether a commit also fsyncs LMDB's meta page (see the module doc,
#: "Sync").  Off: one fsync fewer per batch (BENCHMARKS.md, issue 16: one-
#: connection writes 2.64 -> 2.43 ms p50), and the runtime keeps the log to
#: :meth:`MVCCStore.synced_applied_index`, so nothing acknowledged depends
#: on the meta page's fsync.
DEFAULT_METASYNC = False


#: Longest a full map waits for the open read views to end before it grows
#: (see the module doc, "Map size"): range reads end in well under a
#: second; a checkpoint being streamed may not, and then the batch fails.
GROW_WAIT = 10.0

#: Longest a thread waits for the owner of a deferred transaction to commit
#: it (a read, copy or flush off the loop): the loop answers within one of
#: its turns, so this is reached only if it is stuck or gone.
SETTLE_WAIT = 30.0



class _Open:
    """The deferred write transaction (see the module doc, "Deferred commits")."""

    def __init__(self, txn: lmdb.Transaction, batch: BatchWriter, owner: int) -> None:
        self.txn = txn
        self.batch = batch
        #: The thread that began it: the only one that may use or commit it.
        self.owner = owner
        #: The batches in it, to run again in a new transaction if the map
        #: fills (LMDB then aborts the transaction whole).
        self.runs: list[Callable[[BatchWriter], object]] = []
        #: Read views of it in use (see MVCCStore.read).
        self.views = 0
        #: Aborted for a full map: rebuilt before the next use.
        self.stale = False


class StoreWriteError(OSError):
    """A write transaction the disk refused (full, or an I/O error): the
    batch changed nothing; one line naming the store and its applied index."""


def _space_note(path: Path) -> str:
    """", the filesystem is full (N bytes free)" when it nearly is, else ""."""
    try:
        st = os.statvfs(path)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    return f", and its filesystem is full ({free} bytes free)" if free < (1 << 20) else ""


class MVCCStore:
    """An etcd-style MVCC key-value store in one LMDB environment (see the module doc)."""

    apply_off_loop = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sync: bool = True,
        metasync: bool = DEFAULT_METASYNC,
        map_size: int = DEFAULT_MAP_SIZE,
        readonly: bool = False,
    ) -> None:
        """Open the store in directory ``path``, creating it (unless ``readonly``).

        ``sync`` and ``metasync``: the fsyncs of a commit (see the module
        doc, "Sync"); ``metasync`` matters only with ``sync``.

        Raises :class:`StoreFormatError` (one line) for a directory that holds
        another LMDB database, a store of another format version, or nothing
        LMDB can open.
        """
        self.path = Path(path)
        self.sync = sync
        # The deferred write transaction, if one is open, and how another
        # thread asks its owner to commit it (see the module doc).
        self._open: _Open | None = None
        self.settle_request: SettleRequest | None = None
        # Copies and read views in use (maybe in other threads), and whether
        # close() waits for them (see close()); the map being grown: new
        # users wait (see _set_mapsize).
        self._users = 0
        self._users_lock = threading.Lock()
        self._close_deferred = False
        self._env_closed = False
        self._growing = False
        self._users_changed = threading.Condition(self._users_lock)
        self.metasync = sync and metasync
        try:
            if not readonly:
                self.path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(self.path),
                subdir=True,
                max_dbs=layout.MAX_DBS,
                map_size=map_size,
                sync=sync,
                metasync=self.metasync,
                readonly=readonly,
                # No readahead: the database may be larger than memory, and
                # reads are point lookups or short scans.
                readahead=False,
                max_readers=256,
            )
        except (lmdb.Error, OSError) as exc:
            raise StoreFormatError(f"{self.path}: cannot open as an MVCC store: {exc}") from None
        try:
            self._dbs = self._open_dbs(readonly)
            with self._env.begin() as txn:
                layout.check_format(txn, self._dbs, str(self.path))
        except BaseException:
            self._env.close()
            raise
        self._writer = threading.Lock()
        self._readonly = readonly
        # The applied index of the last commit, and the highest one a power
        # loss keeps (see the module doc, "Sync").  Opening flushes what a
        # killed process (or a store opened with metasync=False) left
        # unsynced in the page cache, so both start at the file's.
        if sync and not readonly:
            self._env.sync(True)
        self._last_commit = self.applied_index()
        self._synced = self._last_commit

    def _open_dbs(self, readonly: bool) -> Dbs:
        try:
            return layout.open_dbs(self._env, create=False)
        except StoreFormatError:
            # The main database lists the named ones: empty means a new store.
            if readonly or self._env.stat()["entries"]:
                raise
        dbs = layout.open_dbs(self._env, create=True)
        with self._env.begin(write=True) as txn:
            layout.init_meta(txn, dbs)
        return dbs

    # --- the durable contract ------------------------------------------------------

    def applied_index(self) -> int:
        """The log index of the last committed batch (0: none)."""
        return self._meta(layout.META_APPLIED)

    def synced_applied_index(self) -> int:
        """The highest applied index that survives a power loss or OS crash
        (<= :meth:`applied_index`; equal unless ``metasync=False``)."""
        return self._synced

    def flush(self) -> int:
        """Make every commit survive a power loss (one fsync, unless nothing
        is pending); returns :meth:`synced_applied_index`, then equal to
        :meth:`applied_index`.  Waits for a batch being written, and settles
        a deferred one first.  :class:`StoreWriteError` if the disk refuses
        (the synced index stays); :class:`StoreClosedError` once closed."""
        self._refuse_closed()
        self._await_settled()
        with self._writer:
            if self._synced < self._last_commit:
                try:
                    self._env.sync(True)
                except lmdb.Error as exc:
                    raise StoreWriteError(
                        f"{self.path}: flushing the store failed ({exc})"
                        f"{_space_note(self.path)}; it is synced up to applied index "
                        f"{self._synced}"
                    ) from exc
                self._synced = self._last_commit
            return self._synced

    def _committed(self, applied: int) -> None:
        """A write transaction at ``applied`` committed (under the writer lock)."""
        if self.metasync or not self.sync:
            self._synced = applied
        else:
            # This commit's data flush carried the previous commit's meta
            # page to the disk; its own meta page is not flushed yet.
            self._synced = self._last_commit
        self._last_commit = applied

    def revision(self) -> int:
        """The current store revision (1 for a new store)."""
        return self._meta(layout.META_REVISION)

    def compact_revision(self) -> int:
        """Reads below this revision fail with :class:`CompactedError` (0: none compacted)."""
        return self._meta(layout.META_COMPACT)

    def apply_batch(
        self, entries: Sequence[MVCCEntry], *, defer: bool = False
    ) -> list[Result | KVError]:
        """Apply ``entries`` in order, with the last one's index, in one transaction.

        One result per entry: its op's result, None for an entry without op,
        or the :class:`~liferaft.kv.errors.KVError` that refused it (it
        changed nothing).  Raises ``ValueError`` for an index at or below the
        applied one or out of order (the runtime never sends one: the store
        is then not what the runtime thinks).  ``defer``: as :meth:`write`'s.
        """
        if not entries:
            return []

        def run(batch: BatchWriter) -> list[Result | KVError]:
            out: list[Result | KVError] = []
            for e in entries:
                batch.advance(e.index)
                out.append(None if e.op is None else batch.apply_op(e.op))
            return out

        return self.write(run, defer=defer)

    def write(self, run: Callable[[BatchWriter], T], *, defer: bool = False) -> T:
        """Run ``run`` in one write transaction and commit it with the applied
        index and revision it left in its :class:`BatchWriter`.

        ``run`` may be called more than once (a full map aborts the
        transaction, doubles the map and runs it again), so it must keep
        whatever it collects inside the call.  An exception from it aborts
        the whole transaction.

        ``defer``: leave the transaction open, after the batches already in
        it, for :meth:`settle` to commit (see the module doc, "Deferred
        commits"); an exception then aborts those batches too (the node
        stops, and its log still holds them).  Without it, a deferred
        transaction open in any thread is settled first.

        :class:`StoreClosedError` once :meth:`close` was called.
        """
        self._refuse_closed()
        if defer:
            return self._write_deferred(run)
        self._await_settled()
        with self._writer:
            while True:
                try:
                    with self._env.begin(write=True) as txn:
                        batch = BatchWriter(txn, self._dbs)
                        out = run(batch)
                        batch.finish()
                    self._committed(batch.applied)
                    return out
                except lmdb.MapFullError:
                    # The transaction was aborted whole; grow and run it again.
                    self._set_mapsize(self._env.info()["map_size"] * 2)
                except lmdb.Error as exc:
                    # A disk that is full or failing: LMDB says only "EIO".  The
                    # transaction was aborted whole, so the store is still at its
                    # last batch; the runtime stops the node with this line.
                    raise self._write_error(exc) from exc

    def _set_mapsize(self, size: int) -> None:
        """Grow the map once no other transaction of the process is open
        (LMDB remaps the file: a reader inside it would crash the process).
        New read views wait meanwhile; :class:`StoreWriteError` if the open
        ones do not end within :data:`GROW_WAIT`.  Called with no write
        transaction open (the full one was aborted)."""
        deadline = time.monotonic() + GROW_WAIT
        with self._users_changed:
            self._growing = True
            try:
                while self._users:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise StoreWriteError(
                            f"{self.path}: the store's map is full and {self._users} read "
                            f"view(s) stayed open for {GROW_WAIT:g} s, so it cannot grow; "
                            "the node stops (it grows the map when it starts again)"
                        )
                    self._users_changed.wait(left)
                self._env.set_mapsize(size)
            finally:
                self._growing = False
                self._users_changed.notify_all()

    def _write_error(self, exc: lmdb.Error) -> StoreWriteError:
        return StoreWriteError(
            f"{self.path}: writing a batch failed ({exc}){_space_note(self.path)}; "
            f"the store stays at applied index {self.applied_index()}: fix the "
            "disk and restart the node (it resumes from there)"
        )

    def _raise_write_error(self, exc: BaseException) -> NoReturn:
        """Raise ``exc``, LMDB's as the one-line :class:`StoreWriteError`."""
        if isinstance(exc, lmdb.Error):
            raise self._write_error(exc) from exc
        raise exc

    # --- deferred commits (see the module doc) -----------------------------------------

    def _write_deferred(self, run: Callable[[BatchWriter], T]) -> T:
        me = threading.get_ident()
        o = self._open
        if o is None:
            self._writer.acquire()  # held until the commit (settle)
            try:
                txn = self._env.begin(write=True)
            except BaseException as exc:
                self._writer.release()
                self._raise_write_error(exc)
            o = self._open = _Open(txn, BatchWriter(txn, self._dbs), me)
        self._check_use(o, "a deferred write")
        while True:
            try:
                if o.stale:
                    self._rebuild(o)
                out = run(o.batch)
                o.batch.finish()  # a read through the transaction sees the meta too
                o.runs.append(run)
                return out
            except lmdb.MapFullError:
                # Aborted whole, the earlier batches too: grow, and run them
                # all again (they give the same results: the same entries on
                # the same state).
                o.txn.abort()
                self._grow(o)
            except BaseException as exc:
                self._end_open(o)
                self._raise_write_error(exc)

    def _check_use(self, o: _Open, what: str) -> None:
        if o.owner != threading.get_ident():
            raise RuntimeError(f"{self.path}: {what} from a thread that does not own the "
                               "open transaction")  # fmt: skip
        if o.views:
            raise RuntimeError(f"{self.path}: {what} while a read view of the open "
                               "transaction is in use")  # fmt: skip

    def _grow(self, o: _Open) -> None:
        """``o`` was ended by a full map: double the map; the next use
        rebuilds it.  If the map cannot grow, ``o`` is forgotten (and the
        writer lock released) before the error goes up, so the store is at
        its last commit, not stuck on a transaction that is gone."""
        o.stale = True
        try:
            self._set_mapsize(self._env.info()["map_size"] * 2)
        except BaseException as exc:
            self._end_open(o)
            self._raise_write_error(exc)

    def _rebuild(self, o: _Open) -> None:
        o.txn = self._env.begin(write=True)
        o.stale = False
        o.batch = BatchWriter(o.txn, self._dbs)
        for r in o.runs:
            r(o.batch)
            o.batch.finish()

    def settle(self) -> int:
        """Commit the deferred transaction, if one is open (only from the
        thread that opened it); returns the applied index committed.
        :class:`StoreWriteError` if the disk refuses: the store then stays at
        its last commit (the open batches are lost to it, not to the log)."""
        o = self._open
        if o is None:
            return self._last_commit
        self._check_use(o, "settle")
        while True:
            try:
                if o.stale:
                    self._rebuild(o)
                o.txn.commit()
            except lmdb.MapFullError:
                # LMDB ended the transaction: rebuild it larger and try again.
                self._grow(o)
                continue
            except BaseException as exc:
                o.stale = True  # LMDB ended it (or the rebuild failed)
                self._end_open(o)
                self._raise_write_error(exc)
            self._committed(o.batch.applied)
            self._close_open(o)
            return self._last_commit

    def _end_open(self, o: _Open) -> None:
        """Abort ``o`` (unless LMDB already ended it) and forget it."""
        try:
            if not o.stale:
                o.txn.abort()
        finally:
            self._close_open(o)

    def _close_open(self, o: _Open) -> None:
        if self._open is o:
            # Only after the commit: another thread that finds no open
            # transaction reads every batch applied so far (_await_settled).
            self._open = None
            self._writer.release()

    def _await_settled(self) -> None:
        """Return once every batch applied so far is committed: the owner of
        the open transaction commits it itself; another thread asks the
        owner (:attr:`settle_request`) and waits."""
        o = self._open
        if o is None:
            return
        if o.owner == threading.get_ident():
            self.settle()
            return
        request = self.settle_request
        if request is None:
            raise RuntimeError(f"{self.path}: a deferred transaction is open in another "
                               "thread and nothing can ask it to settle")  # fmt: skip
        try:
            request().result(timeout=SETTLE_WAIT)
        except concurrent.futures.TimeoutError:
            raise StoreWriteError(
                f"{self.path}: the thread that owns the open transaction did not settle it "
                f"within {SETTLE_WAIT:g} s"
            ) from None

    # --- reads -----------------------------------------------------------------------

    def read(self) -> ReadView:
        """A consistent snapshot for reads; close it (``with store.read() as r:``).

        It sees every batch applied before the call: in the thread that owns
        a deferred transaction it reads through that transaction (use it at
        once: a write or a commit while it is open is refused); in any other
        thread a deferred transaction is settled first."""
        o = self._open
        if o is not None and o.owner == threading.get_ident():
            def done() -> None:
                o.views -= 1

            view = ReadView(self._env, self._dbs, done, txn=o.txn)
            o.views += 1  # only once it exists: a failed one never counts
            return view
        self._await_settled()
        self._acquire()
        try:
            return ReadView(self._env, self._dbs, self._release)
        except BaseException:
            self._release()
            raise

    def range(self, req: Range) -> RangeResult:
        """``req`` in a read transaction of its own."""
        with self.read() as view:
            return view.range(req)

    def size_in_use(self) -> int:
        """Bytes of ``data.mdb`` up to its highest page in use: what a copy
        of it writes (LMDB reuses freed pages below that mark; the file may
        be longer)."""
        self._acquire()
        try:
            return int((self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"])
        finally:
            self._release()

    # --- copies ----------------------------------------------------------------------

    def copy_to(self, path: str | os.PathLike[str]) -> None:
        """Write a consistent, compacted copy of the store into the new directory ``path``."""
        self._await_settled()
        Path(path).mkdir(parents=True, exist_ok=False)
        self._acquire()
        try:
            self._env.copy(str(path), compact=COMPACT_COPY)
        finally:
            self._release()

    def stream_copy(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """A consistent copy of ``data.mdb``, in chunks, without a file in between.

        LMDB writes the copy into a pipe from a thread (from its own read
        transaction); this generator reads the other end.  Closing the
        generator early breaks the pipe, which ends the copy.
        """
        self._await_settled()
        rfd, wfd = os.pipe()
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                self._env.copyfd(wfd, compact=COMPACT_COPY)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader
                failure.append(exc)
            finally:
                os.close(wfd)
                self._release()

        try:
            self._acquire()
        except BaseException:
            os.close(rfd)
            os.close(wfd)
            raise

        t = threading.Thread(target=produce, name="mvcc-copy", daemon=True)
        t.start()
        try:
            with os.fdopen(rfd, "rb", buffering=0) as r:
                rfd = -1
                while chunk := r.read(chunk_size):
                    yield chunk
        finally:
            if rfd != -1:
                os.close(rfd)
            t.join()
        if failure:
            raise failure[0]

    def _acquire(self, *, closing_ok: bool = False) -> None:
        """Count a user of the environment (a read transaction or a copy),
        once no growth of the map is under way.  ``closing_ok``: a short
        read may still use an environment whose close waits for others (it
        gets :class:`StoreClosedError` once the environment is closed)."""
        with self._users_changed:
            while self._growing:
                self._users_changed.wait()
            if self._env_closed or (self._close_deferred and not closing_ok):
                raise self._closed_error()
            self._users += 1

    def _closed_error(self) -> StoreClosedError:
        return StoreClosedError(
            f"{self.path}: the store is closed (a restore replaced it, or the node is stopping)"
        )

    def _refuse_closed(self) -> None:
        """A write or flush after :meth:`close`: one clear, retry-safe error
        (LMDB's own is "Attempt to operate on closed/deleted/dropped object",
        or a write into an environment about to close)."""
        if self._close_deferred:
            raise self._closed_error()

    def _release(self) -> None:
        with self._users_changed:
            self._users -= 1
            if self._users == 0:
                self._users_changed.notify_all()
            if self._users == 0 and self._close_deferred:
                self._close_env()

    def _close_env(self) -> None:
        """Under the users' lock: a short read counting itself meanwhile
        (_meta, closing_ok) must find the environment open or closed, never
        begin a transaction while it closes."""
        self._env_closed = True
        self._env.close()

    def close(self) -> None:
        """Close the environment (open read views must be closed first).

        A copy or a read view in use (maybe in another thread: a checkpoint
        streamed to a follower, a range read off the loop) keeps it open
        until it ends: closing an LMDB environment under a thread that reads
        it crashes the process.  New reads and copies are refused
        (:class:`StoreClosedError`).  A deferred transaction is settled
        first (a disk that refuses it loses nothing the log does not hold)."""
        try:
            self._await_settled()
        except Exception as exc:  # noqa: BLE001 - closing anyway: the log holds it
            log.warning("%s: the open transaction was not settled at close: %s", self.path, exc)
        with self._users_lock:
            if self._close_deferred:
                return
        if self.sync and not self._readonly:
            # A clean stop leaves nothing for a power loss to undo.  A
            # disk failing now loses at most the last commit to a power
            # loss, which the log still holds (see "Sync"): close anyway.
            # Not under the users' lock: the flush waits for the writer, and
            # a writer growing the map waits for that lock.
            with contextlib.suppress(StoreWriteError):
                self.flush()
        with self._users_lock:
            if self._close_deferred:
                return
            self._close_deferred = True
            if not self._users:
                self._close_env()

    def _meta(self, name: bytes) -> int:
        o = self._open
        if name != layout.META_APPLIED and o is not None:
            if o.owner == threading.get_ident():
                # The owner sees its open batches (the revision a watch or a
                # read on the loop reports); the applied index stays the
                # committed one (the durable contract).
                return layout.get_meta(o.txn, self._dbs, name)
            # A read like any other: another thread must not report less
            # than a write already answered from the open transaction.
            self._await_settled()
        self._acquire(closing_ok=True)  # a read transaction like any other (_set_mapsize)
        try:
            with self._env.begin() as txn:
                return layout.get_meta(txn, self._dbs, name)
        finally:
            self._release()
