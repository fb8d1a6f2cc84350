"""Applying a batch of KV commands in one LMDB write transaction.

:func:`apply_entries` is the body of :meth:`KVMachine.apply_batch`
(:mod:`liferaft.kv.machine`): it decodes each entry (:mod:`.codec`), runs
it against the history (:mod:`.batch`), the client sessions
(:mod:`.sessions`) and the leases (:mod:`.leases`), all in the one
transaction that also writes the applied index, and collects what the
batch did for the watch hub and the leader's lease clock: the watch
events, in revision order, built from the records as the writer writes
them (no read-back), and the leases granted and revoked.

Every result is deterministic: it depends on the entries and the
database only (never a clock), so every replica answers alike.  Refusals
are :class:`~liferaft.kv.errors.KVError` instances in the results; an
entry refused changed nothing of the data (a session write refused as
``session_expired`` or ``seq_reused`` still counts as a use of its session,
as in :mod:`.sessions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from liferaft.kv.errors import KVError
from liferaft.kv.mvcc import leases as lease_mod
from liferaft.kv.mvcc.batch import BatchWriter
from liferaft.kv.mvcc.codec import (
    Command,
    LeaseGrant,
    LeaseRevoke,
    OpenSession,
    Write,
    decode_command,
    op_digest,
)
from liferaft.kv.mvcc.layout import Record
from liferaft.kv.mvcc.leases import LeaseGrantResult, LeaseRevokeResult, LeaseTable
from liferaft.kv.mvcc.ops import (
    Compact,
    DeleteRange,
    DeleteResult,
    KeyValue,
    LeaseExistsError,
    LeaseNotFoundError,
    Put,
    PutResult,
    Range,
    Txn,
    TxnResult,
)
from liferaft.kv.mvcc.sessions import (
    MAX_SESSIONS,
    Refusal,
    SessionTable,
    error_of,
    refusal_of,
)
from liferaft.kv.watch_types import EventKind, WatchEvent
from liferaft.runtime.statemachine import ApplyEntry


@dataclass(frozen=True, slots=True)
class Committed:
    """What one committed batch did, for its listener (see :mod:`liferaft.kv.machine`)."""

    revision: int
    """The store revision after the batch."""
    events: tuple[WatchEvent, ...] = ()
    """Every key change, in revision order (a revision's in write order);
    ``prev_kv`` always filled when the key existed before."""
    granted: tuple[tuple[int, int], ...] = ()
    """Leases granted, as (id, ttl), in log order."""
    revoked: tuple[int, ...] = ()
    """Leases revoked (their keys' deletes are among ``events``), in log order."""

    def __bool__(self) -> bool:
        return bool(self.events or self.granted or self.revoked)


def tombstone(key: bytes, revision: int) -> KeyValue:
    """A deleted key as a watch event carries it (etcd's shape: docs/kv.md)."""
    return KeyValue(key, 0, revision, 0, b"", 0)


class _Hooks:
    """The writer's hooks for one batch: lease checks and key sets, and events."""

    def __init__(self, leases: LeaseTable) -> None:
        self.leases = leases
        self.events: list[WatchEvent] = []

    def lease_exists(self, lease: int) -> bool:
        return self.leases.exists(lease)

    def changed(self, main: int, prev: Record | None, rec: Record) -> None:
        self.leases.changed(prev, rec)
        before = None if prev is None else prev.to_kv()
        if rec.deleted:
            kv = tombstone(rec.key, main)
            self.events.append(WatchEvent(main, EventKind.DELETE, rec.key, kv, before))
        else:
            self.events.append(WatchEvent(main, EventKind.PUT, rec.key, rec.to_kv(), before))


class _Batch:
    """One run of :func:`apply_entries` (run again whole if LMDB's map fills)."""

    def __init__(self, batch: BatchWriter, max_sessions: int) -> None:
        self.batch = batch
        self.leases = LeaseTable(batch.txn, batch.dbs)
        self.sessions = SessionTable(batch.txn, batch.dbs, max_sessions)
        self.hooks = _Hooks(self.leases)
        self.granted: list[tuple[int, int]] = []
        self.revoked: list[int] = []

    def apply(self, e: ApplyEntry) -> Any:
        self.batch.advance(e.index)
        try:
            cmd = decode_command(e.data)
            return None if cmd is None else self._command(e.index, cmd)
        except KVError as exc:  # refused before any change
            return exc

    def _command(self, index: int, cmd: Command) -> Any:
        if isinstance(cmd, Write):
            return self._write(index, cmd)
        if isinstance(cmd, OpenSession):
            return self.sessions.open(index)
        if isinstance(cmd, LeaseGrant):
            return self._grant(index, cmd)
        if isinstance(cmd, LeaseRevoke):
            return self._revoke(cmd.id)
        assert isinstance(cmd, Compact)
        return self.batch.apply_op(cmd)

    def _write(self, index: int, cmd: Write) -> Any:
        ref = cmd.session
        if ref is None:
            return self.batch.apply_op(cmd.op, self.hooks)
        digest = op_digest(cmd.op)
        held = self.sessions.begin(index, ref, digest)
        if held is not None:
            return error_of(held) if isinstance(held, Refusal) else held
        result = self.batch.apply_op(cmd.op, self.hooks)
        # A Write's op is a put, delete-range or txn: it always has one of theirs.
        assert isinstance(result, PutResult | DeleteResult | TxnResult | KVError)
        self.sessions.record(
            ref, digest, refusal_of(result) if isinstance(result, KVError) else result
        )
        return result

    def _grant(self, index: int, cmd: LeaseGrant) -> LeaseGrantResult:
        lease_mod.check_grant(cmd.id, cmd.ttl)
        lease = cmd.id or index
        if self.leases.exists(lease):
            raise LeaseExistsError(lease)
        self.leases.grant(lease, cmd.ttl)
        self.granted.append((lease, cmd.ttl))
        return LeaseGrantResult(lease, cmd.ttl)

    def _revoke(self, lease: int) -> LeaseRevokeResult:
        lease_mod.check_id(lease)
        if not self.leases.exists(lease):
            raise LeaseNotFoundError(lease)
        w = self.batch.writer(self.hooks)
        # Every key at one revision: one writer, one `main`.
        deleted = sum(w.delete(DeleteRange(key)).deleted for key in self.leases.keys(lease))
        self.batch.revision = w.revision
        self.leases.drop(lease)
        self.revoked.append(lease)
        return LeaseRevokeResult(w.revision, deleted)


def apply_entries(
    batch: BatchWriter, entries: Sequence[ApplyEntry], max_sessions: int = MAX_SESSIONS
) -> tuple[list[Any], Committed]:
    """Apply ``entries`` in ``batch``: one result per entry, and what the batch did."""
    b = _Batch(batch, max_sessions)
    results = [b.apply(e) for e in entries]
    done = Committed(batch.revision, tuple(b.hooks.events), tuple(b.granted), tuple(b.revoked))
    return results, done


def bounded_work(data: bytes) -> bool:
    """True if the command in ``data`` does work bounded by its own size, so
    the runtime may apply it on the event loop (KVMachine.may_apply_inline).
    A range (deleted, read or compared in a txn), a lease revoke (every key
    attached to it) or a compaction may touch every key of the store: over
    half a second for 100 000 keys, a stall of every client and the heartbeats."""
    try:
        cmd = decode_command(data)
    except KVError:
        return True  # refused before any work
    if cmd is None or isinstance(cmd, OpenSession | LeaseGrant):
        return True
    if isinstance(cmd, Write):
        return _bounded_op(cmd.op)
    return False  # LeaseRevoke, Compact


def _bounded_op(op: Put | DeleteRange | Range | Txn) -> bool:
    if isinstance(op, Txn):
        return all(c.range_end is None for c in op.compare) and all(
            _bounded_op(o) for o in (*op.success, *op.failure)
        )
    if isinstance(op, DeleteRange | Range):
        return op.range_end is None
    return True  # a Put: one key
