"""In-memory state machines for the runtime's tests of the apply boundary.

:class:`RecordingStateMachine` is volatile (no ``applied_index``): the
runtime restores it from the snapshot on every start, as always.  It records
every entry it is handed, so a test can assert order and exactly-once within
one life, and the leader time each entry carried.
:class:`BatchRecordingStateMachine` adds ``apply_batch`` (on or off the loop)
and records the batch boundaries; :class:`LegacyStateMachine` has the old
``apply(index, data)`` signature the runtime must keep calling for a release.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from liferaft.runtime.statemachine import (
    ApplyEntry,
    SnapshotFormatError,
    StateSnapshot,
    StreamSnapshot,
    iter_chunks,
    join_chunks,
)

#: An entry whose data starts with this is refused (apply raises before mutating).
REFUSE = b"!"
_SNAPSHOT_TAG = "recording-v1"


class Applied(msgspec.Struct, frozen=True, array_like=True):
    """One entry as the state machine received it (a msgpack array in snapshots)."""

    index: int
    data: bytes
    leader_time: float


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(tuple[str, list[Applied]])


class RefusedError(ValueError):
    """What apply raises for an entry starting with :data:`REFUSE`."""


class RecordingStateMachine:
    """A volatile state machine whose state is the list of entries it accepted.

    ``state`` is replicated (it is what snapshots hold); ``calls`` is every
    index this instance was handed in this life, refused ones included,
    which is what :meth:`assert_exactly_once` checks.
    """

    def __init__(self) -> None:
        self.state: list[Applied] = []
        self.calls: list[int] = []
        self.restored: list[int] = []  # the last index of each restored snapshot (-1: empty)

    def apply(self, index: int, data: bytes, *, leader_time: float = 0.0) -> int:
        """Record the entry; return its index.  Refuses data starting with ``!``."""
        self.calls.append(index)
        if data.startswith(REFUSE):
            raise RefusedError(f"entry {index} refused")  # before mutating: the contract
        self.state = [*self.state, Applied(index, data, leader_time)]  # replace, never mutate
        return index

    def snapshot(self) -> StateSnapshot:
        captured = self.state  # never mutated in place, so sharing it is a capture
        return StreamSnapshot(lambda: iter_chunks(_ENCODER.encode((_SNAPSHOT_TAG, captured))))

    def restore(self, chunks: Iterable[bytes]) -> None:
        try:
            tag, rows = _DECODER.decode(join_chunks(chunks))
        except msgspec.DecodeError as exc:
            raise SnapshotFormatError(f"not a recording snapshot: {exc}") from None
        if tag != _SNAPSHOT_TAG:
            raise SnapshotFormatError(f"snapshot of {tag!r}, not {_SNAPSHOT_TAG!r}")
        self.state = rows
        self.restored.append(self.state[-1].index if self.state else -1)

    def indexes(self) -> list[int]:
        """The indexes of the accepted entries, in state order."""
        return [a.index for a in self.state]

    def assert_exactly_once(self) -> None:
        """Every index was handed over at most once in this life, in increasing order."""
        for before, after in zip(self.calls, self.calls[1:], strict=False):
            assert after > before, f"index {after} applied after {before}: {self.calls}"
        state = self.indexes()
        assert state == sorted(set(state)), f"state holds an index twice or out of order: {state}"


class BatchRecordingStateMachine(RecordingStateMachine):
    """:class:`RecordingStateMachine` with ``apply_batch``; records each batch.

    Still volatile (no ``applied_index``).  ``off_loop`` sets ``apply_off_loop``;
    ``threads`` collects the thread ids batches ran on, so a test can tell
    the runtime honoured it.
    """

    def __init__(self, *, off_loop: bool = False) -> None:
        super().__init__()
        self.apply_off_loop = off_loop
        self.batches: list[tuple[int, ...]] = []
        self.threads: set[int] = set()
        #: The thread of each batch, beside ``batches``.
        self.batch_threads: list[int] = []
        self._busy = threading.Lock()

    def apply_batch(self, entries: Sequence[ApplyEntry]) -> list[Any]:
        """Apply in order; a refused entry becomes its exception in the results."""
        if not self._busy.acquire(blocking=False):
            raise AssertionError("apply_batch called while another call is running")
        try:
            self.threads.add(threading.get_ident())
            self.batch_threads.append(threading.get_ident())
            self.batches.append(tuple(e.index for e in entries))
            results: list[Any] = []
            for e in entries:
                try:
                    results.append(self.apply(e.index, e.data, leader_time=e.leader_time))
                except RefusedError as exc:
                    results.append(exc)
            return results
        finally:
            self._busy.release()


class LegacyStateMachine(RecordingStateMachine):
    """The pre-issue-13 signature, ``apply(index, data)``: no ``leader_time``."""

    def apply(self, index: int, data: bytes) -> int:  # type: ignore[override]
        return super().apply(index, data)
