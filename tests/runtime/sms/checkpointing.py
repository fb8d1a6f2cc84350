"""The SQLite state machine with ``checkpoint_chunks()``: its store is its
Raft snapshot (docs/statemachine.md, "Deferred snapshots").

``checkpoint_chunks()`` copies the live database through a connection of
its own (SQLite's backup API: one read transaction, so a consistent copy of
the database as it is *now*, with the applied index in the same file) into
a private temp file, streams that file in the framing ``restore()`` reads
(tests/runtime/sms/sqlite.py), and deletes it.  It runs from whatever
thread the transport streams on, while ``apply_batch`` goes on in the apply
worker: the copy never touches the instance's own connection.

Counters let the tests see what the runtime asked for: ``restores``,
``checkpoints``; ``lag`` makes ``applied_index()`` report a durable index
that many entries behind the store (a store that does not sync every
batch), for the snapshotter's "never past the durable index" rule.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing
from pathlib import Path

from .sqlite import SQLiteStateMachine, _stream_file, _unlink


class CheckpointSQLite(SQLiteStateMachine):
    """A durable, off-loop state machine with deferred snapshots."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.restores = 0
        self.checkpoints = 0
        self.lag = 0

    def applied_index(self) -> int:
        """The store's applied index, ``lag`` behind when a test asks."""
        return max(0, super().applied_index() - self.lag)

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Count, then replace the database (checked, atomic)."""
        self.restores += 1
        super().restore(chunks)

    def checkpoint_chunks(self) -> Iterator[bytes]:
        """A consistent copy of the database as it is now, streamed."""
        self.checkpoints += 1
        tmp = self._temp("snap")
        try:
            with (
                closing(sqlite3.connect(self.path, timeout=30)) as src,
                closing(sqlite3.connect(tmp)) as dst,
            ):
                src.backup(dst)  # one read transaction: batches commit before or after
            yield from _stream_file(tmp)
        finally:
            _unlink(tmp)
