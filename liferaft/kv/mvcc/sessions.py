"""Client sessions in the MVCC store's LMDB environment (Raft thesis 6.3).

Client sessions make writes idempotent.  A client opens a session with an
:class:`~liferaft.kv.mvcc.codec.OpenSession` entry; the session's id is that
entry's log index.  Each write then names its session, its sequence number
``seq`` and ``lowest_pending``, the lowest ``seq`` the client still awaits
an answer for (:class:`~liferaft.kv.mvcc.codec.SessionRef`).  The machine
remembers each write's outcome (the MVCC result, or the refusal), so a
retry (after a 504, a leader change or a restart) returns the first outcome
and never applies twice.  A write without a session is a plain write:
applied each time it is committed.

Everything here is read and written in the batch's LMDB write transaction,
the one that also writes the applied index (docs/kv.md, "The KV state
machine"): a crash leaves the sessions exactly as of one applied index, and
a checkpoint (a copy of the database) carries them with the data.

Forgetting, and why a forgotten request is never applied
--------------------------------------------------------

The tables are bounded, and what is forgotten depends only on committed
entries (never on clocks or on when a replica applied them), so every
replica gives a retry the same answer:

- within a session, the outcomes below the highest ``lowest_pending``
  committed so far are dropped (the client has their answers), and so is
  the lowest outcome when more than :data:`SESSION_OUTCOMES` are held (a
  client that keeps its window, as :mod:`liferaft.client` does, never gets
  there).  The session's ``floor`` records how far that has gone;
- at most :data:`MAX_SESSIONS` sessions are live; opening one more evicts
  the least recently used (by the index of the last entry naming it).

A request whose session is not live, or whose ``seq`` is below its
session's floor and not held, gets ``session_expired`` and changes nothing.
A request whose ``seq`` holds the outcome of a *different* request (another
op under the same seq: see :func:`~liferaft.kv.mvcc.codec.op_digest`) gets
``seq_reused`` and changes nothing: the held outcome is not its own, so
returning it would tell a client "applied" for a write that never was.
"Never seen" and "forgotten" cannot be confused: a session id is live only
if its own OpenSession entry created it, and ids are log indices, so a
request naming an id that is not live names one that was evicted (or never
opened); within a live session, every ``seq`` at or above the floor that is
not held has never been applied.

Tables (:mod:`.layout`): ``sessions`` id -> :class:`SessionRow`;
``session_lru`` last-used index -> id (an index names at most one session,
so it is a unique key, and the first is the least recently used);
``outcomes`` ``(id, seq)`` -> (digest, :data:`Outcome`).
"""

from __future__ import annotations

import struct

import lmdb
import msgspec

from liferaft.kv.errors import (
    KVBadRequestError,
    KVConflictError,
    KVError,
    KVOutcomeUnknownError,
)
from liferaft.kv.mvcc import layout
from liferaft.kv.mvcc.codec import CommandFormatError, SessionRef
from liferaft.kv.mvcc.layout import Dbs
from liferaft.kv.mvcc.ops import (
    CompactedError,
    DeleteResult,
    FutureRevisionError,
    LeaseExistsError,
    LeaseNotFoundError,
    PutResult,
    TxnResult,
)

SESSION_OUTCOMES = 256  # outcomes held per session: the client's window of writes
MAX_SESSIONS = 10_000  # live sessions; one more evicts the least recently used
_ALL = 1 << 64  # above every seq (stored as u64)


class SessionRow(msgspec.Struct, array_like=True):
    """One live session.  Invariant: every ``seq`` below ``floor`` that is
    not held may have been applied and is forgotten; every ``seq`` at or
    above it that is not held was never applied in this session."""

    floor: int
    last_used: int
    held: int  # outcomes in the outcomes table


class Refusal(msgspec.Struct, frozen=True, tag=True):
    """A write refused with a :class:`KVError`, as remembered for a retry."""

    code: str
    message: str
    extra: dict[str, int | str | bool | None] = {}


Outcome = PutResult | DeleteResult | TxnResult | Refusal

_encode = msgspec.msgpack.Encoder().encode
decode_row = msgspec.msgpack.Decoder(SessionRow).decode
_decode_outcome = msgspec.msgpack.Decoder(tuple[int, Outcome]).decode
_SEQ = struct.Struct(">QQ")

# The refusals a write can get from the store, rebuilt as their own class.
_REFUSALS: dict[str, type[KVError]] = {
    cls.code: cls
    for cls in (KVBadRequestError, CompactedError, FutureRevisionError, LeaseNotFoundError,
                LeaseExistsError, CommandFormatError)
}


def refusal_of(exc: KVError) -> Refusal:
    extra = {k: v for k, v in exc.extra.items() if isinstance(v, int | str | bool | None)}
    return Refusal(exc.code, str(exc), extra)


def error_of(r: Refusal) -> KVError:
    """The :class:`KVError` a :class:`Refusal` was made from (its class, code,
    message and fields), for the retry's answer."""
    cls = _REFUSALS.get(r.code, KVError)
    err = cls.__new__(cls)
    KVError.__init__(err, r.message, r.code, **r.extra)
    for k, v in r.extra.items():
        setattr(err, k, v)
    return err


def session_expired() -> KVOutcomeUnknownError:
    return KVOutcomeUnknownError(
        "session_expired",
        "the session or this request's outcome is forgotten; this entry applied nothing",
    )


def seq_reused() -> KVConflictError:
    return KVConflictError(
        "seq_reused", "the session's seq holds the outcome of a different request; not applied"
    )


class SessionTable:
    """The session tables, read and written in one write transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: Dbs, max_sessions: int = MAX_SESSIONS) -> None:
        self.txn = txn
        self.dbs = dbs
        self.max_sessions = max_sessions

    def open(self, index: int) -> int:
        """Open the session of the OpenSession entry at ``index``; its id."""
        u = layout.pack_u64(index)
        self.txn.put(u, _encode(SessionRow(1, index, 0)), db=self.dbs.sessions)
        self.txn.put(u, u, db=self.dbs.session_lru)
        while self.txn.stat(self.dbs.sessions)["entries"] > self.max_sessions:
            cur = self.txn.cursor(db=self.dbs.session_lru)
            cur.first()
            self._drop(layout.unpack_u64(cur.value()))
        return index

    def begin(self, index: int, ref: SessionRef, digest: int) -> Outcome | KVError | None:
        """Steps before a session write at log ``index``: the answer to give
        without applying (a held outcome, or ``session_expired`` /
        ``seq_reused``), or None: apply it, then :meth:`record`."""
        # Committed entries are trusted data: numbers the API refuses (an id
        # or seq below 1) are answered, never raised, as any other would be.
        row = self._row(ref.id) if ref.id >= 1 else None
        if row is None:
            # Not live: evicted, or never opened.  Either way it may not apply.
            return session_expired()
        self.txn.delete(layout.pack_u64(row.last_used), db=self.dbs.session_lru)
        row.last_used = index
        self.txn.put(layout.pack_u64(index), layout.pack_u64(ref.id), db=self.dbs.session_lru)
        # The API refuses lowest_pending > seq (a client would claim the
        # answer to the very request it sends); a committed entry with it
        # must still not raise, so it counts as lowest_pending == seq.
        self._forget_below(ref.id, row, min(ref.lowest_pending, ref.seq))
        self._put_row(ref.id, row)
        raw = None if ref.seq < row.floor else self.txn.get(
            _SEQ.pack(ref.id, ref.seq), db=self.dbs.outcomes
        )
        if raw is not None:
            held_digest, held = _decode_outcome(raw)
            if held_digest != digest:
                # Another request under this seq (two clients sharing a
                # session, or a seq reused): its outcome is not this one's.
                return seq_reused()
            return held
        if ref.seq < row.floor:
            return session_expired()
        return None

    def record(self, ref: SessionRef, digest: int, outcome: Outcome) -> None:
        """Remember ``outcome`` for ``ref.seq`` (after :meth:`begin` said apply)."""
        row = self._row(ref.id)
        assert row is not None  # begin() found it in this transaction
        self.txn.put(_SEQ.pack(ref.id, ref.seq), _encode((digest, outcome)), db=self.dbs.outcomes)
        row.held += 1
        if row.held > SESSION_OUTCOMES:
            # Only a client that overran its window gets here; the lowest
            # outcome goes, and the floor moves past it so its retry is
            # answered session_expired rather than applied again.
            cur = self.txn.cursor(db=self.dbs.outcomes)
            cur.set_range(_SEQ.pack(ref.id, 0))
            _, lowest = _SEQ.unpack(cur.key())
            self._forget_below(ref.id, row, lowest + 1)
        self._put_row(ref.id, row)

    def _forget_below(self, sid: int, row: SessionRow, seq: int) -> None:
        """Drop every outcome below ``seq`` and raise the floor to it."""
        if seq <= row.floor:
            return
        cur = self.txn.cursor(db=self.dbs.outcomes)
        cur.set_range(_SEQ.pack(sid, row.floor))
        # delete() moves to the next record, or unpositions the cursor (an
        # empty key) after the last one.
        while len(key := cur.key()) == _SEQ.size:
            s_id, s = _SEQ.unpack(key)
            if s_id != sid or s >= seq:
                break
            cur.delete()
            row.held -= 1
        row.floor = seq

    def _drop(self, sid: int) -> None:
        row = self._row(sid)
        if row is None:
            return
        self._forget_below(sid, row, _ALL)
        self.txn.delete(layout.pack_u64(row.last_used), db=self.dbs.session_lru)
        self.txn.delete(layout.pack_u64(sid), db=self.dbs.sessions)

    def _row(self, sid: int) -> SessionRow | None:
        raw = self.txn.get(layout.pack_u64(sid), db=self.dbs.sessions)
        return None if raw is None else decode_row(raw)

    def _put_row(self, sid: int, row: SessionRow) -> None:
        self.txn.put(layout.pack_u64(sid), _encode(row), db=self.dbs.sessions)


def session_info(txn: lmdb.Transaction, dbs: Dbs, sid: int) -> tuple[int, list[int]] | None:
    """A live session's floor and the seqs it holds outcomes for (tests, tools)."""
    raw = txn.get(layout.pack_u64(sid), db=dbs.sessions)
    if raw is None:
        return None
    seqs = []
    cur = txn.cursor(db=dbs.outcomes)
    ok = cur.set_range(_SEQ.pack(sid, 0))
    while ok:
        s_id, s = _SEQ.unpack(cur.key())
        if s_id != sid:
            break
        seqs.append(int(s))
        ok = cur.next()
    return decode_row(raw).floor, seqs


def live_sessions(txn: lmdb.Transaction, dbs: Dbs) -> list[int]:
    """Live session ids, least recently used first."""
    return [layout.unpack_u64(v) for v in txn.cursor(db=dbs.session_lru).iternext(keys=False)]


