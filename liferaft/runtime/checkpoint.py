"""Deferred snapshots: the durable state machine's store is the snapshot.

Theory of operation
-------------------
A durable state machine keeps its state in a store of its own, written in
the same transaction as its applied index (docs/statemachine.md, "The
durable contract").  Keeping a second image of that state in a Raft
snapshot file buys nothing: the store already survives a restart, and the
log can be compacted up to the store's *durable* applied index without one.
So when the state machine also offers ``checkpoint_chunks()``
(:class:`~liferaft.runtime.statemachine.CheckpointStateMachine`):

* **Taking** a snapshot (liferaft/runtime/snapshotter.py) writes the
  runtime's header (members, entry format; liferaft/runtime/store.py) and,
  instead of the state, a *deferred marker*: ``"LRDF" | u8 version (1) |
  u64 LE`` the store's durable applied index when it was taken: what a
  power loss keeps (``synced_applied_index()`` when the state machine has
  it, liferaft/runtime/statemachine.py).  Never past that index: a snapshot
  that claimed more than the store durably holds would let the log be
  compacted past entries a crash could still lose.
* **Sending** one to a follower (:func:`outgoing`, called by
  ``Node.snapshot_source``): the marker is replaced by
  ``checkpoint_chunks()``, a consistent copy of the store as it is *now*
  (at an applied index A at or past the snapshot's index X), and the header
  says ``"checkpoint": true``.  The copy is streamed; no image of it is held.
* **Installing** it (liferaft/runtime/applier.py): the state machine
  restores the copy, and the node's applied index becomes the copy's own,
  A.  The entries X+1..A that the leader then sends go to membership only,
  exactly as after a restart whose store is ahead of the core.
* **Starting** on a marker: the store must hold at least the snapshot's
  index, or it was lost or replaced; that is a one-line
  :class:`~liferaft.runtime.errors.BadConfigError`, never a silent empty
  state.  A volatile state machine is never handed a marker.

Why the marker records an index: ``liferaft inspect`` and a reader of the
file can tell what the store held when the snapshot was taken; the runtime
itself trusts only the store's ``applied_index()``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from .statemachine import can_checkpoint, durable_applied_index
from .store import SnapshotPayloadError, unwrap_snapshot, wrap_snapshot

__all__ = [
    "MARKER_VERSION",
    "BrokenCheckpointError",
    "checkpoint_index",
    "lost_store",
    "marker",
    "outgoing",
    "split_marker",
]

_MAGIC = b"LRDF"
#: The version of the marker's bytes; another is refused, naming both.
MARKER_VERSION = 1
_MARKER = struct.Struct("<4sBQ")


def marker(durable: int) -> bytes:
    """The state part of a deferred snapshot taken when the store durably
    held index ``durable``."""
    return _MARKER.pack(_MAGIC, MARKER_VERSION, durable)


def split_marker(state: Iterable[bytes]) -> tuple[int | None, Iterator[bytes]]:
    """(the index a deferred marker records, or None if ``state`` is a
    state machine's own stream; that stream, unchanged).  Reads at most a
    chunk or two.  :class:`SnapshotPayloadError` for a marker of another
    version or with bytes after it."""
    it = iter(state)
    head = b""
    for chunk in it:
        head += chunk
        if len(head) >= _MARKER.size:
            break
    if head[: len(_MAGIC)] != _MAGIC:

        def again() -> Iterator[bytes]:
            if head:
                yield head
            yield from it

        return None, again()
    if len(head) < _MARKER.size:
        raise SnapshotPayloadError("deferred snapshot marker is truncated")
    _, version, index = _MARKER.unpack_from(head)
    if version != MARKER_VERSION:
        raise SnapshotPayloadError(
            f"deferred snapshot marker version {version}; this build reads version "
            f"{MARKER_VERSION}"
        )
    if len(head) > _MARKER.size or any(it):
        raise SnapshotPayloadError("bytes after the deferred snapshot marker")
    return index, iter(())


def outgoing(chunks: Iterable[bytes], sm: object) -> Iterator[bytes]:
    """What a follower is sent for the snapshot file ``chunks``: the file
    itself, or, for a deferred one, its header and ``sm.checkpoint_chunks()``.

    A generator: the file's header is read, and the checkpoint begun, when
    the transport asks for the first chunk (in its worker thread)."""
    header, state = unwrap_snapshot(chunks)
    index, state = split_marker(state)
    if index is None:
        yield from wrap_snapshot(
            header.members, state, header.entry_format, checkpoint=header.checkpoint
        )
        return
    if not can_checkpoint(sm):
        # The node was restarted with a state machine that cannot copy its
        # store: there is nothing to send (the transport reports failure).
        raise SnapshotPayloadError(
            f"the snapshot is deferred (store at index {index}) but "
            f"{type(sm).__name__} has no checkpoint_chunks() to send"
        )
    yield from wrap_snapshot(
        header.members,
        sm.checkpoint_chunks(),  # type: ignore[attr-defined]
        header.entry_format,
        checkpoint=True,
    )


class BrokenCheckpointError(RuntimeError):
    """A restored checkpoint holds less than the snapshot it was sent for:
    this replica's state would differ for good, so the node stops."""


def checkpoint_index(node_id: str, sm: object, index: int) -> int:
    """The applied index after ``sm`` restored a checkpoint sent for the
    snapshot at ``index``: the copy's own, at or past ``index``."""
    got = durable_applied_index(sm)
    if got is None or got < index:
        # The entries up to ``index`` would never reach the store.
        raise BrokenCheckpointError(
            f"node {node_id}: a checkpoint sent for the snapshot at index {index} "
            f"restored a store at index {got}: a broken checkpoint"
        )
    return got


def lost_store(node_id: str, sm: object, index: int, durable: int | None) -> str:
    """Why a node cannot start on a deferred snapshot at ``index`` (one line)."""
    name = type(sm).__name__
    if durable is None:
        return (
            f"node {node_id}: the snapshot at index {index} is a durable state machine's "
            f"own store (deferred), but {name} keeps no store: start this data dir with "
            "the state machine that wrote it"
        )
    return (
        f"node {node_id}: the snapshot at index {index} is the state machine's own store "
        f"(deferred), but {name} holds only index {durable}: its store was lost or "
        "replaced (put its files back, or start on an empty data dir to be sent a copy)"
    )
