"""The state machine contract: what the runtime applies entries to.

Theory of operation
-------------------

The runtime ``Node`` hands every committed entry, in log order and exactly
once per life of the state machine, to :meth:`StateMachine.apply`.  The value
``apply`` returns resolves the future of whoever proposed that entry; an
exception raised by ``apply`` fails only that proposal's future (the runtime
catches it and moves on to the next entry).  So ``apply`` must be
*deterministic* (the same entries in the same order leave every replica in
the same state) and must *raise before it mutates* anything, or replicas that
raise and replicas that do not would drift apart.

Snapshots are taken in two steps, as in hashicorp/raft's ``FSM.Snapshot`` and
``FSMSnapshot.Persist``:

1. :meth:`StateMachine.snapshot` runs on the event loop, between two applies.
   It captures a point-in-time view *cheaply*: a shallow copy of references
   to values that are never mutated in place.  It must not serialize the
   whole state; that would stall the loop for as long as the state is big.
2. :meth:`StateSnapshot.chunks` serializes that captured view.  It may run in
   a worker thread *while* ``apply`` keeps running on the loop, so it must
   read only what ``snapshot()`` captured, never the live state.
   :meth:`StateSnapshot.release` is called once the runtime is done with the
   snapshot, whether writing it succeeded or not.

:meth:`StateMachine.restore` replaces the whole state from a stream of
chunks (a snapshot from disk or from the leader).

The durable contract (optional)
------------------------------

A state machine that keeps its state in a store of its own (SQLite, LMDB)
may go further, by having any of these (the runtime detects each with
``getattr``; :class:`DurableStateMachine` and :class:`BatchStateMachine`
name them for type checkers):

- ``applied_index()``: the highest log index whose effects the store has
  *durably* persisted, written in the same transaction as those effects.  On
  start the runtime resumes applying after it instead of restoring the
  snapshot and re-applying what the store already holds; it never hands the
  state machine an entry at or below its applied index (exactly once, across
  restarts too).  A state machine without it is *volatile*: restored from
  the snapshot on every start, as always.
- ``apply_batch(entries)``: every committed index of a batch, as
  :class:`ApplyEntry` values in log order (those that carry nothing for it,
  no-ops and membership changes, with empty data), applied
  atomically (one transaction that also writes the applied index).  It
  returns one result per entry; an exception *instance* in the list refuses
  only that entry's proposal.  Raising from ``apply_batch`` itself means the
  state machine is broken: the node stops, as for a storage failure, and no
  proposal of the batch is settled.
- ``apply_off_loop = True``: the runtime runs ``apply_batch`` in a worker
  thread, so a commit with fsync never stalls heartbeats.  The runtime
  still never calls two state-machine methods at once, and calls
  ``snapshot()`` and ``restore()`` only between batches.
- ``synced_applied_index(flush=False)``
  (:class:`DeferredSyncStateMachine`): for a store whose commit survives a
  crash of the *process* at once but a power loss only later (LMDB's
  ``MDB_NOMETASYNC``: the last commit may be undone): the highest applied
  index a power loss keeps, at most ``applied_index()``; with
  ``flush=True`` it first makes every commit survive one (an fsync; the
  runtime calls it from a worker thread, between batches).  The runtime
  never lets the log be compacted past it (the deferred snapshot's marker
  and index, below), so what a power loss undoes is applied again from the
  WAL after the restart.  Without it, ``applied_index()`` is taken as
  surviving a power loss too.  ``applied_index()`` still says what the
  store holds now, and at start what survived.

- ``settle()`` and ``bind_settle(request)`` (:class:`SettlingStateMachine`;
  with ``apply_off_loop`` and NodeConfig.inline_apply_entries): a batch the
  runtime applies on the loop's thread may be left uncommitted, so that one
  commit and its fsync serve the batches of NodeConfig.settle_delay (etcd's
  backend shape); ``settle()`` commits them.  The runtime calls
  ``bind_settle`` once, on the loop's thread, before the first such batch,
  with a thread-safe ``request()`` that has the loop settle and returns a
  ``concurrent.futures.Future`` done when it has (failed if the node is
  gone): a read from another thread must use it first, as it must see
  every batch applied before it began.  The runtime calls ``settle()`` on
  the loop within ``settle_delay`` of a deferred batch, before any batch,
  snapshot install or hold goes to the worker, and at close; an exception
  from it stops the node like a failed ``apply_batch``.  What is not
  settled must not count in ``applied_index()`` nor in
  ``synced_applied_index()``: a crash of the process loses it, and the log,
  kept to the synced index, applies it again.

With a durable store, a snapshot may be a streamed checkpoint of the store's
own files (``snapshot()`` copies them, ``chunks()`` reads the copy,
``release()`` deletes it), and ``restore()`` must replace the store
atomically: a crash during it leaves the old state or the new, never a mix.
The checkpoint carries the store's own applied index.

Deferred snapshots (optional, :class:`CheckpointStateMachine`): a durable
state machine that also has ``checkpoint_chunks()`` is never asked for an
image of its state to keep.  Its Raft snapshots hold only the runtime's
header and a marker (liferaft/runtime/checkpoint.py): the store *is* the
snapshot, and the log is compacted up to its durable applied index (its
synced one, when it has ``synced_applied_index``: the runtime flushes it
first, so snapshots are not held back).  Only
when a follower needs a snapshot does the runtime call
``checkpoint_chunks()``, in a worker thread while batches keep applying:
a consistent copy of the store as it is *now*, which carries its own
applied index (at or past the snapshot's index).  ``restore()`` adopts it,
and ``applied_index()`` reports that index afterwards: the runtime resumes
after it.

The high-level API in :mod:`liferaft.runtime.commands` implements this
contract for you; the helpers here (:class:`BytesSnapshot`,
:class:`StreamSnapshot`, :func:`iter_chunks`, :func:`rechunk`,
:class:`ChunkReader`, :func:`join_chunks`) are for writing one by hand.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ApplyEntry",
    "BatchStateMachine",
    "BytesSnapshot",
    "CheckpointStateMachine",
    "ChunkReader",
    "DeferredSyncStateMachine",
    "DurableStateMachine",
    "Proposer",
    "SettleRequest",
    "SettlingStateMachine",
    "SnapshotFormatError",
    "StateMachine",
    "StateSnapshot",
    "StreamSnapshot",
    "applies_off_loop",
    "can_checkpoint",
    "durable_applied_index",
    "iter_chunks",
    "join_chunks",
    "rechunk",
    "synced_applied_index",
    "takes_leader_time",
]

T = TypeVar("T")

#: Size of the chunks the helpers produce: big enough to amortize per-chunk
#: overhead, small enough that a chunk never weighs on memory.
DEFAULT_CHUNK_SIZE = 64 * 1024


class SnapshotFormatError(ValueError):
    """A snapshot stream is malformed, truncated or of another state machine.

    :meth:`StateMachine.restore` raises it *before* touching the state, so a
    failed restore leaves the old state in place.
    """


@runtime_checkable
class StateSnapshot(Protocol):
    """A point-in-time view of a state machine, captured by ``snapshot()``.

    Concurrency: :meth:`chunks` may run in a worker thread while ``apply``
    continues on the event loop, so it must read only the state captured
    when the snapshot was taken.
    """

    def chunks(self) -> Iterator[bytes]:
        """Serialize the captured state as a stream of byte chunks."""
        ...

    def release(self) -> None:
        """Drop the captured state.  Called once, whether writing succeeded or not."""
        ...


@runtime_checkable
class StateMachine(Protocol):
    """What the runtime applies committed entries to.

    Concurrency: ``apply``, ``snapshot`` and ``restore`` are all called on
    the event loop, one at a time.  Only :meth:`StateSnapshot.chunks` may run
    elsewhere (see :class:`StateSnapshot`).
    """

    def apply(self, index: int, data: bytes, *, leader_time: float) -> Any:
        """Apply the committed entry at log ``index``; return the proposal's result.

        ``leader_time`` is the leader's wall clock when it appended the entry
        (from the runtime envelope; 0.0 in a cluster of entry format 1): use
        it, never ``time.time()``, for anything time-based.  Must be
        deterministic.  May raise: the runtime fails only that proposal's
        future with the exception.  It must raise *before* mutating any
        state, so that every replica stays identical.  The old signature,
        ``apply(index, data)``, still works until 0.2.0.
        """
        ...

    def snapshot(self) -> StateSnapshot:
        """Capture a point-in-time view cheaply (shallow copies, no serialization)."""
        ...

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Replace the whole state with the one serialized in ``chunks``."""
        ...


@dataclass(frozen=True, slots=True)
class ApplyEntry:
    """One committed normal entry, as a batch state machine receives it."""

    index: int
    """Its log index."""
    data: bytes
    """The user's bytes, the runtime envelope removed (:mod:`liferaft.runtime.entry_format`)."""
    leader_time: float
    """The leader's wall clock when it appended the entry; 0.0 in an entry-format-1 cluster."""


@runtime_checkable
class DurableStateMachine(StateMachine, Protocol):
    """A state machine whose store persists its own applied index.

    On start the runtime reads :meth:`applied_index` (on the event loop).
    When it is at or past the index of the node's snapshot, the state
    machine is not restored: it already holds more than the snapshot, and
    the runtime resumes applying after that index.  Otherwise it is restored
    from the snapshot, as a volatile one is.  A plain ``apply`` is not
    handed the no-ops and membership changes, so its durable index may stay
    below the runtime's (a restore at the next start); a
    :class:`BatchStateMachine` is handed every index and stays exact.
    """

    def applied_index(self) -> int:
        """The highest log index whose effects are durably persisted (0: none).

        It must be written in the same transaction as those effects, so it
        never claims an entry whose effects a crash could lose, nor misses
        one whose effects survived.  After :meth:`restore` it is the index
        the restored checkpoint carries.
        """
        ...


@runtime_checkable
class BatchStateMachine(StateMachine, Protocol):
    """A state machine that applies committed entries a batch at a time."""

    apply_off_loop: bool
    """True: the runtime calls :meth:`apply_batch` in a worker thread, one
    batch at a time and never together with another method of the state
    machine.  False (the default when absent): on the event loop."""

    def apply_batch(self, entries: Sequence[ApplyEntry]) -> list[Any]:
        """Apply ``entries`` in order; one result per entry.

        A durable state machine applies the batch atomically, writing its
        applied index (the last entry's) in the same transaction.  An
        exception instance in the returned list refuses that entry only: its
        proposal fails with it, and the entry must have changed nothing.
        Raising instead means the state machine is broken: the node stops and
        no proposal of the batch is settled.  Must be deterministic.
        """
        ...


@runtime_checkable
class CheckpointStateMachine(DurableStateMachine, Protocol):
    """A durable state machine whose store is its own Raft snapshot.

    The runtime's snapshots of it hold no state (a "deferred" marker,
    liferaft/runtime/checkpoint.py); a follower that needs one is streamed
    :meth:`checkpoint_chunks` instead (docs/statemachine.md, "Deferred
    snapshots").
    """

    def checkpoint_chunks(self) -> Iterator[bytes]:
        """A consistent copy of the whole store as it is now, in chunks.

        Called from a worker thread (or, with the in-memory transport, the
        event loop) while batches keep applying: it must read from a view of
        its own (a read transaction, a copy), never from state a batch may
        change under it.  The copy carries its own applied index, which may
        be past any snapshot's index; :meth:`restore` of these chunks adopts
        the copy whole, and :meth:`applied_index` reports that index after.
        It must be at or past the index of the snapshot it is sent for (the
        runtime refuses less).
        """
        ...


@runtime_checkable
class DeferredSyncStateMachine(DurableStateMachine, Protocol):
    """A durable state machine whose last commits may be undone by a power
    loss (not by a crash of the process), e.g. LMDB with ``MDB_NOMETASYNC``."""

    def synced_applied_index(self, *, flush: bool = False) -> int:
        """The highest applied index that survives a power loss or OS crash
        (at most :meth:`applied_index`).

        ``flush=True``: first make every commit survive one (an fsync), so
        the result equals :meth:`applied_index`.  The runtime calls it that
        way from a worker thread while no batch runs, before compacting the
        log; without ``flush`` it must be cheap (the runtime calls it on the
        event loop).
        """
        ...


#: What ``bind_settle`` is given: a thread-safe call that has the loop
#: settle the state machine, done when it has (failed if the node is gone).
SettleRequest = Callable[[], "Future[None]"]


class SettlingStateMachine(DeferredSyncStateMachine, Protocol):
    """A durable state machine that may leave batches applied on the loop
    uncommitted until :meth:`settle` (see the module doc)."""

    def bind_settle(self, request: SettleRequest) -> None:
        """Called once, on the event loop's thread, before the first batch it
        may defer: ``request()`` (thread-safe) has the loop settle."""
        ...

    def settle(self) -> None:
        """Commit every deferred batch (on the event loop's thread)."""
        ...


def can_checkpoint(sm: object) -> bool:
    """True if ``sm`` is durable and has ``checkpoint_chunks`` (deferred snapshots)."""
    return callable(getattr(sm, "applied_index", None)) and callable(
        getattr(sm, "checkpoint_chunks", None)
    )


def durable_applied_index(sm: object) -> int | None:
    """``sm.applied_index()`` if the state machine is durable, else None (volatile)."""
    applied_index = getattr(sm, "applied_index", None)
    return None if applied_index is None else int(applied_index())


def synced_applied_index(sm: object, *, flush: bool = False) -> int | None:
    """What of ``sm``'s applied index survives a power loss: its
    ``synced_applied_index(flush=...)`` if it has one, else
    :func:`durable_applied_index` (None: volatile)."""
    synced = getattr(sm, "synced_applied_index", None)
    if synced is None:
        return durable_applied_index(sm)
    return int(synced(flush=flush))


def applies_off_loop(sm: object) -> bool:
    """True if ``sm`` has ``apply_batch`` and asks to run it off the event loop."""
    return callable(getattr(sm, "apply_batch", None)) and bool(
        getattr(sm, "apply_off_loop", False)
    )


def takes_leader_time(apply: Callable[..., Any]) -> bool:
    """True if ``apply`` accepts ``leader_time=`` (a keyword parameter or ``**kwargs``).

    A legacy ``apply(index, data)`` does not: for one release the runtime
    calls it the old way (and warns once), deciding with this at start.
    """
    try:
        params = inspect.signature(apply).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume legacy
        return False
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == "leader_time" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in params
    )


class Proposer(Protocol):
    """How a state machine reaches its node.  ``runtime.Node`` implements it."""

    async def propose(
        self, data: bytes, *, stamp_time: bool = False, timeout: float | None = None
    ) -> Any:
        """Replicate ``data``; return what ``apply`` returned for it on this node.

        With ``stamp_time=True`` the *leader* overwrites ``data[0:8]`` with its
        wall clock (``time.time()`` as a little-endian float64) right before it
        appends the entry; a proposal forwarded by a follower is stamped when it
        reaches the leader.  State machines thus get a deterministic "leader
        time" without trusting any client's clock.
        """
        ...

    async def read(self, fn: Callable[[], T], *, consistency: str = "linearizable") -> T:
        """Run ``fn`` on this node's state once a safe read index is applied."""
        ...


def iter_chunks(
    data: bytes | bytearray | memoryview, size: int = DEFAULT_CHUNK_SIZE
) -> Iterator[bytes]:
    """Cut ``data`` into ``bytes`` chunks of ``size`` (the last may be shorter).

    Empty ``data`` yields nothing.
    """
    if size <= 0:
        raise ValueError(f"chunk size must be positive, not {size}")
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


def rechunk(pieces: Iterable[bytes], size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    """Regroup ``pieces`` of any sizes into chunks of exactly ``size`` bytes.

    Only the last chunk may be shorter.  At most about one chunk plus one
    piece is held at a time.
    """
    if size <= 0:
        raise ValueError(f"chunk size must be positive, not {size}")
    buf = bytearray()
    for piece in pieces:
        buf += piece
        if len(buf) >= size:
            view = memoryview(buf)
            whole = len(buf) - len(buf) % size
            for start in range(0, whole, size):
                yield bytes(view[start : start + size])
            view.release()
            del buf[:whole]
    if buf:
        yield bytes(buf)


def join_chunks(chunks: Iterable[bytes], max_size: int | None = None) -> bytes:
    """Concatenate a chunk stream; :class:`SnapshotFormatError` past ``max_size``."""
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        if max_size is not None and len(buf) > max_size:
            raise SnapshotFormatError(f"snapshot is larger than {max_size} bytes")
    return bytes(buf)


class ChunkReader:
    """Read exact byte counts from a chunk stream whose boundaries fall anywhere.

    Used by ``restore`` implementations that parse a framed stream without
    first joining it into one buffer.
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = bytearray()
        self._offset = 0  # bytes consumed so far, for error messages

    @property
    def offset(self) -> int:
        """How many bytes have been consumed."""
        return self._offset

    def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            self._buf += chunk
        return True

    def read_exact(self, n: int) -> bytes:
        """The next ``n`` bytes; :class:`SnapshotFormatError` if the stream ends first."""
        if not self._fill(n):
            raise SnapshotFormatError(
                f"snapshot truncated at byte {self._offset + len(self._buf)}: "
                f"needed {n} bytes at byte {self._offset}"
            )
        with memoryview(self._buf) as view:
            out = bytes(view[:n])  # one copy, even for a big record
        del self._buf[:n]
        self._offset += n
        return out

    def at_eof(self) -> bool:
        """True if every byte of the stream has been consumed."""
        return not self._fill(1)


class BytesSnapshot:
    """A :class:`StateSnapshot` of already-serialized bytes.

    Fits a small state machine whose whole state serializes in microseconds.
    A big one should capture cheaply and serialize in :meth:`chunks`, with
    :class:`StreamSnapshot`.
    """

    def __init__(self, data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self._data: bytes | None = bytes(data)
        self._chunk_size = chunk_size

    def chunks(self) -> Iterator[bytes]:
        """The bytes, in chunks of ``chunk_size``."""
        if self._data is None:
            raise RuntimeError("snapshot already released")
        return iter_chunks(self._data, self._chunk_size)

    def release(self) -> None:
        """Drop the bytes."""
        self._data = None


class StreamSnapshot:
    """A :class:`StateSnapshot` that serializes lazily, in :meth:`chunks`.

    ``produce`` is called by :meth:`chunks`, possibly in a worker thread, and
    must read only state captured beforehand, e.g.::

        def snapshot(self) -> StateSnapshot:
            captured = dict(self.data)           # cheap: copies references only
            return StreamSnapshot(lambda: iter_chunks(msgspec.msgpack.encode(captured)))

    ``on_release`` (optional) runs once, from :meth:`release`.
    """

    def __init__(
        self,
        produce: Callable[[], Iterable[bytes]],
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._produce: Callable[[], Iterable[bytes]] | None = produce
        self._on_release = on_release

    def chunks(self) -> Iterator[bytes]:
        """Serialize the captured state, chunk by chunk."""
        if self._produce is None:
            raise RuntimeError("snapshot already released")
        return iter(self._produce())

    def release(self) -> None:
        """Drop the captured state; run ``on_release`` the first time."""
        self._produce = None
        on_release, self._on_release = self._on_release, None
        if on_release is not None:
            on_release()
