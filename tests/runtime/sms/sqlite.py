"""A small durable state machine on SQLite, with crash injection.

It implements the durable contract of docs/statemachine.md ("The durable
contract") the way an LMDB or SQLite store would, so the runtime's tests
can check exactly-once application across crashes and restarts:

- **apply_batch** runs ONE transaction: each entry's effect on the ``kv``
  table, one ``applied_log`` row per entry (``idx INTEGER PRIMARY KEY``, so
  the database itself refuses an index applied twice, and a trigger refuses
  one applied out of order), and the applied index in ``meta``.  Either all
  of it is durable (``synchronous=FULL``) or none.
- **applied_index()** reads ``meta``: what the store durably holds.
- **snapshot()** is a streamed checkpoint of the database *file*: the
  backup API copies it into a private temp file (on the calling thread,
  between batches, as the runtime promises); ``chunks()`` reads that copy in
  a worker thread while batches go on; ``release()`` deletes it.  The
  checkpoint carries its own applied index (in ``meta``).
- **restore()** writes the stream to a temp file, checks it (framing,
  length, SHA-256, ``PRAGMA integrity_check``, the expected tables and
  schema), then closes the database, ``os.replace``s the file and fsyncs the
  directory, and reopens.  A crash before the replace leaves the old state
  (the temp file is removed at the next open), one after it the new.

Data of an entry: ``b"key=value"`` sets ``key`` and returns its previous
value (``None`` if absent); data without ``=`` is refused (a ``ValueError``
in the results, nothing changed but the ``applied_log`` row marking it).

Threads.  ``apply_off_loop = True``: ``apply_batch`` runs in whatever worker
thread the runtime picks, the other methods on the event loop.  One
connection is opened with ``check_same_thread=False`` and used by one thread
at a time, which SQLite allows; the runtime promises never to call two
methods at once, and :meth:`_exclusive` turns a broken promise into a
:class:`ConcurrentCallError` instead of quietly serializing it.  A connection per
thread would instead have to be found and closed by ``restore`` from another
thread, and would leave one writer's uncommitted state invisible to the
others; one connection keeps the store's view single.

Crash injection (:meth:`SQLiteStateMachine.arm`): raise :class:`InjectedCrash`,
a ``BaseException`` so no ``except Exception`` swallows it as a refusal,
before a batch, inside it after an entry (the transaction is rolled back
first, which is what SQLite's journal recovery does after a kill -9), after
its commit (before the runtime learns of it), or in the middle of a restore;
or, with ``kill=True``, SIGKILL the process at that point instead.
"""

from __future__ import annotations

import enum
import hashlib
import os
import signal
import sqlite3
import struct
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liferaft.runtime.statemachine import (
    DEFAULT_CHUNK_SIZE,
    ApplyEntry,
    ChunkReader,
    SnapshotFormatError,
    StateSnapshot,
    StreamSnapshot,
)

#: The schema this class writes (``meta.schema``); another is refused, naming both.
SCHEMA_VERSION = 1
#: Version of the checkpoint stream framing.
CHECKPOINT_VERSION = 1
_MAGIC = b"LRSQ"
_HEAD = struct.Struct("<4sBQ")  # magic, version, length of the database file
_DIGEST = 32  # SHA-256 of the file bytes, after them
_TABLES = {"kv", "applied_log", "meta"}

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS applied_log (
    idx INTEGER PRIMARY KEY,          -- a second apply of one index fails here
    leader_time REAL NOT NULL,
    data BLOB NOT NULL,
    refused INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS applied_in_order BEFORE INSERT ON applied_log
    WHEN NEW.idx < (SELECT coalesce(max(idx), 0) FROM applied_log)
    BEGIN SELECT RAISE(ABORT, 'entry applied out of order'); END;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema', {SCHEMA_VERSION}), ('applied_index', 0);
"""


class CrashPoint(enum.Enum):
    """Where an armed :class:`SQLiteStateMachine` raises :class:`InjectedCrash`."""

    BEFORE_BATCH = "before the batch's transaction begins"
    INSIDE_BATCH = "inside the batch, after an entry (rolled back)"
    AFTER_COMMIT = "after the batch committed, before returning to the runtime"
    MID_RESTORE = "in restore, after the new file is checked, before it replaces the old"


class InjectedCrash(BaseException):
    """The simulated death of the process at :attr:`point` (index: the entry or batch end)."""

    def __init__(self, point: CrashPoint, index: int) -> None:
        super().__init__(f"injected crash {point.value} (index {index})")
        self.point = point
        self.index = index


class ConcurrentCallError(AssertionError):
    """Two methods ran at once: the runtime broke the contract."""


@dataclass
class _Plan:
    point: CrashPoint
    after_entries: int
    at_index: int | None
    kill: bool


class SQLiteStateMachine:
    """A durable, batch, off-loop state machine in one SQLite file (see the module doc)."""

    apply_off_loop = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.threads: set[int] = set()  # thread ids apply_batch ran on
        self.crashes: list[InjectedCrash] = []  # every injected crash, in order
        self._plan: _Plan | None = None
        self._busy = threading.Lock()
        self._remove_leftovers()
        self._conn = self._open()

    # --- the contract ---------------------------------------------------------

    def applied_index(self) -> int:
        """The index written by the last committed batch (0: none)."""
        with self._exclusive():
            return _applied_index(self._conn)

    def apply_batch(self, entries: Sequence[ApplyEntry]) -> list[Any]:
        """Apply ``entries`` in one transaction that also writes the applied index."""
        with self._exclusive():
            self.threads.add(threading.get_ident())
            if not entries:
                return []
            self._maybe_crash(CrashPoint.BEFORE_BATCH, entries)
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = []
                for n, e in enumerate(entries, 1):
                    results.append(_apply_one(conn, e))
                    self._maybe_crash(CrashPoint.INSIDE_BATCH, entries, n)
                conn.execute(
                    "UPDATE meta SET v = ? WHERE k = 'applied_index'", (entries[-1].index,)
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._maybe_crash(CrashPoint.AFTER_COMMIT, entries)
            return results

    def apply(self, index: int, data: bytes, *, leader_time: float = 0.0) -> Any:
        """One entry as a batch of one; a refusal is raised, as plain apply does."""
        (result,) = self.apply_batch([ApplyEntry(index, data, leader_time)])
        if isinstance(result, Exception):
            raise result
        return result

    def snapshot(self) -> StateSnapshot:
        """Copy the database into a private file; its chunks are streamed from there."""
        with self._exclusive():
            tmp = self._temp("snap")
            try:
                with closing(sqlite3.connect(tmp)) as dst:
                    self._conn.backup(dst)
            except BaseException:
                _unlink(tmp)
                raise
        return StreamSnapshot(lambda: _stream_file(tmp), on_release=lambda: _unlink(tmp))

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Replace the database with a checkpoint, atomically.

        A bad stream raises :class:`SnapshotFormatError` and leaves the old state.
        """
        with self._exclusive():
            tmp = self._temp("restore")
            try:
                _receive_file(chunks, tmp)
                _check_database(tmp)
                self._maybe_crash(CrashPoint.MID_RESTORE, ())
            except InjectedCrash:
                raise  # a dead process cleans nothing: the next open removes the file
            except BaseException:
                _unlink(tmp)
                raise
            self._conn.close()
            os.replace(tmp, self.path)  # atomic: the old file or the new, never a mix
            _fsync_dir(self.path.parent)
            self._conn = self._open()

    # --- for tests --------------------------------------------------------------

    def arm(
        self,
        point: CrashPoint,
        *,
        after_entries: int = 1,
        at_index: int | None = None,
        kill: bool = False,
    ) -> None:
        """Crash once at ``point``.

        With ``at_index``: in the batch holding that index (``INSIDE_BATCH``:
        right after applying it).  Without: in the next batch (``INSIDE_BATCH``:
        after its ``after_entries``-th entry).  ``kill=True``: SIGKILL this
        process there instead of raising, so SQLite's own recovery (the hot
        journal rolled back at the next open) is what a test sees.
        """
        self._plan = _Plan(point, after_entries, at_index, kill)

    def contents(self) -> dict[str, bytes]:
        """The key/value table."""
        with self._exclusive():
            return dict(self._conn.execute("SELECT key, value FROM kv ORDER BY key"))

    def log(self) -> list[tuple[int, bytes, float, bool]]:
        """Every applied entry: (index, data, leader_time, refused), in index order."""
        with self._exclusive():
            rows = self._conn.execute(
                "SELECT idx, data, leader_time, refused FROM applied_log ORDER BY idx"
            )
            return [(i, d, t, bool(r)) for i, d, t, r in rows]

    def close(self) -> None:
        """Close the connection (a crashed instance may be closed too)."""
        self._conn.close()

    # --- internals ----------------------------------------------------------------

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._busy.acquire(blocking=False):
            raise ConcurrentCallError("two state-machine methods ran at once")
        try:
            yield
        finally:
            self._busy.release()

    def _open(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; apply_batch says BEGIN itself.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            # A rollback journal, not WAL: restore replaces the one database
            # file, which must not leave a -wal file of the old one behind.
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
            conn.executescript(f"BEGIN; {_SCHEMA} COMMIT;")
            schema = _meta(conn, "schema")
            if schema != SCHEMA_VERSION:
                raise SnapshotFormatError(
                    f"database schema version {schema}; this build reads version {SCHEMA_VERSION}"
                )
        except BaseException:
            conn.close()
            raise
        return conn

    def _temp(self, kind: str) -> str:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.{kind}-", suffix=".tmp", dir=self.path.parent
        )
        os.close(fd)
        return tmp

    def _remove_leftovers(self) -> None:
        """Temp files of a process that died mid-snapshot or mid-restore."""
        for kind in ("snap", "restore"):
            for p in self.path.parent.glob(f".{self.path.name}.{kind}-*.tmp"):
                _unlink(str(p))

    def _maybe_crash(self, point: CrashPoint, entries: Sequence[ApplyEntry], n: int = 0) -> None:
        plan = self._plan
        if plan is None or plan.point is not point:
            return
        if point is CrashPoint.INSIDE_BATCH:
            index = entries[n - 1].index
            fire = index == plan.at_index if plan.at_index is not None else n == plan.after_entries
        else:
            index = entries[-1].index if entries else 0
            fire = plan.at_index is None or any(e.index == plan.at_index for e in entries)
        if fire:
            self._plan = None
            if plan.kill:
                os.kill(os.getpid(), signal.SIGKILL)
            crash = InjectedCrash(point, index)
            self.crashes.append(crash)
            raise crash


# --- the store's parts, free of the instance ---------------------------------


def _meta(conn: sqlite3.Connection, key: str) -> int | None:
    row = conn.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
    return None if row is None else int(row[0])


def _applied_index(conn: sqlite3.Connection) -> int:
    return _meta(conn, "applied_index") or 0


def _apply_one(conn: sqlite3.Connection, e: ApplyEntry) -> Any:
    """One entry's effect; the caller's transaction makes the batch atomic."""
    key, sep, value = e.data.partition(b"=")
    refused = not sep
    conn.execute(
        "INSERT INTO applied_log VALUES (?, ?, ?, ?)", (e.index, e.leader_time, e.data, refused)
    )
    if refused:
        return ValueError(f"entry {e.index}: not key=value")
    k = key.decode(errors="surrogateescape")
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (k,)).fetchone()
    conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, value))
    return None if row is None else bytes(row[0])


def _stream_file(path: str) -> Iterator[bytes]:
    """The checkpoint stream: header, the file in chunks, its SHA-256."""
    size = os.path.getsize(path)
    digest = hashlib.sha256()
    yield _HEAD.pack(_MAGIC, CHECKPOINT_VERSION, size)
    with open(path, "rb") as f:
        while chunk := f.read(DEFAULT_CHUNK_SIZE):
            digest.update(chunk)
            yield chunk
    yield digest.digest()


def _receive_file(chunks: Iterable[bytes], path: str) -> None:
    """Write a checkpoint stream's file to ``path``, checking its framing and digest."""
    reader = ChunkReader(chunks)
    magic, version, size = _HEAD.unpack(reader.read_exact(_HEAD.size))
    if magic != _MAGIC:
        raise SnapshotFormatError(f"not a SQLite checkpoint (magic {magic!r})")
    if version != CHECKPOINT_VERSION:
        raise SnapshotFormatError(
            f"checkpoint version {version}; this build reads version {CHECKPOINT_VERSION}"
        )
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            piece = reader.read_exact(min(left, DEFAULT_CHUNK_SIZE))
            digest.update(piece)
            f.write(piece)
            left -= len(piece)
        f.flush()
        os.fsync(f.fileno())  # durable before it may replace the live database
    if reader.read_exact(_DIGEST) != digest.digest():
        raise SnapshotFormatError("checkpoint digest mismatch: the file is corrupt")
    if not reader.at_eof():
        raise SnapshotFormatError(f"bytes after the checkpoint's end (byte {reader.offset})")


def _check_database(path: str) -> None:
    """:class:`SnapshotFormatError` unless ``path`` is a sound database of this schema."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            (verdict,) = conn.execute("PRAGMA integrity_check").fetchone()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            schema = _meta(conn, "schema") if "meta" in tables else None
    except sqlite3.DatabaseError as exc:
        raise SnapshotFormatError(f"checkpoint is not a readable database: {exc}") from None
    if verdict != "ok":
        raise SnapshotFormatError(f"checkpoint fails integrity_check: {verdict}")
    if missing := _TABLES - tables:
        raise SnapshotFormatError(f"checkpoint lacks tables {sorted(missing)}")
    if schema != SCHEMA_VERSION:
        raise SnapshotFormatError(
            f"checkpoint schema version {schema}; this build reads version {SCHEMA_VERSION}"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    with suppress(FileNotFoundError):
        os.unlink(path)
