"""The replicated key-value state machine behind liferaft-kv.

Every node applies the same log to a :class:`KVStore`.  Writes are encoded
commands (msgpack, tagged structs); reads run on the applied state.

- ``revision`` of a key is the log index of the entry that last changed it,
  so revisions only grow; the store's revision is the index of the last
  change to any key.
- Client sessions (Raft thesis §6.3) make writes idempotent.  A client
  opens a session with an :class:`OpenSession` entry; the session's id is
  that entry's log index.  Each write then names its session, its sequence
  number ``seq`` and ``lowest_pending``, the lowest ``seq`` the client still
  awaits an answer for (:class:`SessionRef`).  The store remembers each
  write's outcome, so a retry (after a 504, a leader change or a restart)
  returns the first outcome and never applies twice.  A write without a
  session is a plain write: applied each time it is committed.

Forgetting, and why a forgotten request is never applied
--------------------------------------------------------

Memory is bounded, and what is forgotten depends only on committed entries
(never on clocks or on when a replica applied them), and is in snapshots,
so every replica gives a retry the same answer:

- within a session, the outcomes below the highest ``lowest_pending``
  committed so far are dropped (the client has their answers), and so is
  the lowest outcome when more than :data:`SESSION_OUTCOMES` are held (a
  client that keeps its window, as :mod:`liferaft.client` does, never gets
  there).  ``Session.floor`` records how far that has gone;
- at most :data:`MAX_SESSIONS` sessions are live; opening one more evicts
  the least recently used (by the index of the last entry naming it).

A request whose session is not live, or whose ``seq`` is below its
session's floor and not held, gets ``session_expired`` and changes nothing.
A request whose ``seq`` holds the outcome of a *different* request (same
seq, other key, value, conditions or kind) gets ``seq_reused`` and changes
nothing: the held outcome is not its own, so returning it would tell a
client "applied" for a write that never was.
"Never seen" and "forgotten" cannot be confused: a session id is live only
if its own OpenSession entry created it, and ids are log indices, so a
request naming an id that is not live names one that was evicted (or never
opened); within a live session, every ``seq`` at or above the floor that is
not held has never been applied.

``request_id`` (before sessions) is kept only so that entries and version 1
snapshots written by earlier builds replay exactly as they were first
applied; the HTTP API no longer accepts it.
"""

from __future__ import annotations

import builtins
import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from sortedcontainers import SortedDict

from liferaft.runtime.statemachine import (
    ChunkReader,
    SnapshotFormatError,
    StateSnapshot,
    StreamSnapshot,
)

MAX_KEY_BYTES = 4096
SESSION_OUTCOMES = 256  # outcomes held per session: the client's window of writes
MAX_SESSIONS = 10_000  # live sessions; one more evicts the least recently used
REQUESTS_PER_CLIENT = 256  # legacy request_id outcomes kept per client
MAX_CLIENTS = 10_000  # legacy request_id clients kept
_SNAP_PREFIX = b"LRKV"
_SNAP_VERSION = 2  # 1: before sessions (request_id outcomes only)
_BATCH = 1024  # items per snapshot record


class KV(msgspec.Struct, frozen=True):
    """A value and the revision that wrote it."""

    value: str
    revision: int


class SessionRef(msgspec.Struct, array_like=True, frozen=True):
    """Which session a write belongs to, and where its client stands.

    ``id`` is the log index of the session's OpenSession entry; ``seq``
    numbers the client's writes from 1; ``lowest_pending`` is the lowest
    ``seq`` whose answer the client still awaits (so it holds every answer
    below it, and the store may drop those outcomes)."""

    id: int
    seq: int
    lowest_pending: int


class Put(msgspec.Struct, tag="put", frozen=True):
    key: str
    value: str
    if_value: str | None = None
    if_revision: int | None = None  # 0: create only
    request_id: str | None = None  # legacy: only replayed, never proposed now
    session: SessionRef | None = None


class Delete(msgspec.Struct, tag="del", frozen=True):
    key: str
    if_value: str | None = None
    if_revision: int | None = None
    request_id: str | None = None  # legacy: only replayed, never proposed now
    session: SessionRef | None = None


class OpenSession(msgspec.Struct, tag="sopen", frozen=True):
    """Open a client session; its id is the index of this entry."""


class SetAddr(msgspec.Struct, tag="addr", frozen=True):
    """Legacy: a member's client address, as earlier builds announced it.
    Still decoded and applied (into ``addrs``, kept in snapshots) so their
    logs replay as before, but never proposed now and read by nothing: the
    one address book is the runtime's (liferaft/runtime/address_book.py).
    Not a key: invisible to kv reads."""

    node_id: str
    client_addr: str


Command = Put | Delete | SetAddr | OpenSession


class WriteResult(msgspec.Struct, frozen=True):
    """The outcome of one write, as remembered for its request_id.

    ``outcome`` is ``ok``, ``not_found`` (delete of a missing key) or
    ``precondition_failed`` (then ``current`` is what the key holds), or
    ``session_expired``: the request's session or outcome is forgotten, and
    this entry changed nothing (an earlier copy may have applied), or
    ``seq_reused``: the session's ``seq`` holds the outcome of a different
    request, and this entry changed nothing.

    ``request`` is the digest of the session write that produced it (see
    :func:`request_digest`; 0 when not recorded, as in earlier snapshots)."""

    outcome: str
    revision: int
    prev: KV | None = None
    current: KV | None = None
    request: int = 0


class Opened(msgspec.Struct, frozen=True):
    """The result of an :class:`OpenSession` entry: the new session's id."""

    session: int


class Session:
    """One live session's memory.

    Invariant: every ``seq`` below ``floor`` that is not in ``outcomes``
    may have been applied and is forgotten; every ``seq`` at or above it
    that is not in ``outcomes`` was never applied in this session."""

    __slots__ = ("floor", "outcomes")

    def __init__(self, floor: int = 1, outcomes: Iterable[tuple[int, WriteResult]] = ()) -> None:
        self.floor = floor
        self.outcomes: SortedDict[int, WriteResult] = SortedDict(outcomes)

    def forget_below(self, seq: int) -> None:
        """Drop every outcome below ``seq`` and raise the floor to it."""
        if seq <= self.floor:
            return
        for s in list(self.outcomes.irange(maximum=seq, inclusive=(True, False))):
            del self.outcomes[s]
        self.floor = seq


_encode = msgspec.msgpack.Encoder().encode
_decode_cmd = msgspec.msgpack.Decoder(Command).decode


def encode_command(cmd: Put | Delete | SetAddr | OpenSession) -> bytes:
    return _encode(cmd)


_LegacyClients = list[tuple[str, list[tuple[str, WriteResult]]]]


class _SnapHeadV1(msgspec.Struct):
    revision: int
    clients: _LegacyClients
    addrs: dict[str, str] = {}


class _SnapHead(msgspec.Struct, array_like=True):
    """Version 2: sessions in least-recently-used order, each as
    (id, floor, outcomes by seq)."""

    revision: int
    sessions: list[tuple[int, int, list[tuple[int, WriteResult]]]]
    clients: _LegacyClients
    addrs: dict[str, str]


_decode_head_v1 = msgspec.msgpack.Decoder(_SnapHeadV1).decode
_decode_head = msgspec.msgpack.Decoder(_SnapHead).decode
_decode_items = msgspec.msgpack.Decoder(list[tuple[str, str, int]]).decode


def request_digest(cmd: Put | Delete) -> int:
    """What a retry must repeat: the command without its session fields
    (``lowest_pending`` may move between retries).  Only the entry's bytes
    go in, so every replica computes the same digest."""
    b = _encode(msgspec.structs.replace(cmd, session=None))
    return int.from_bytes(hashlib.blake2b(b, digest_size=8).digest(), "little")


def client_of(request_id: str) -> str:
    return request_id.rpartition(":")[0]


class KVStore:
    """The state machine (liferaft.runtime.StateMachine)."""

    def __init__(self) -> None:
        self.data: SortedDict[str, KV] = SortedDict()
        self.revision = 0
        # Live sessions by id, least recently used first (see the module doc).
        self.sessions: OrderedDict[int, Session] = OrderedDict()
        # Legacy request_id outcomes by client (entries of earlier builds).
        self.clients: OrderedDict[str, OrderedDict[str, WriteResult]] = OrderedDict()
        self.addrs: dict[str, str] = {}  # legacy SetAddr entries: node id -> client address

    # -- writes -----------------------------------------------------------------------

    def apply(self, index: int, data: bytes, *, leader_time: float = 0.0) -> WriteResult | Opened:
        try:
            cmd = _decode_cmd(data)
        except msgspec.DecodeError as exc:
            # Refused alike on every replica, and before any change.
            raise ValueError(f"not a kv command: {exc}") from exc
        if isinstance(cmd, SetAddr):
            self.addrs[cmd.node_id] = cmd.client_addr
            return WriteResult("ok", self.revision)
        if isinstance(cmd, OpenSession):
            return self._open_session(index)
        if cmd.session is not None:
            return self._apply_in_session(index, cmd, cmd.session)
        rid = cmd.request_id
        if rid is not None:
            seen = self._seen(rid)
            if seen is not None:
                return seen
        res = self._put(index, cmd) if isinstance(cmd, Put) else self._delete(index, cmd)
        if rid is not None:
            self._remember(rid, res)
        return res

    def _open_session(self, index: int) -> Opened:
        self.sessions[index] = Session()
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return Opened(index)

    def _apply_in_session(self, index: int, cmd: Put | Delete, ref: SessionRef) -> WriteResult:
        """Thesis §6.3: apply a session's request at most once."""
        sess = self.sessions.get(ref.id)
        if sess is None:
            # Not live: evicted, or never opened.  Either way it may not apply.
            return WriteResult("session_expired", self.revision)
        self.sessions.move_to_end(ref.id)
        # The API refuses lowest_pending > seq (a client would claim the
        # answer to the very request it sends); a committed entry with it
        # must still not raise, so it counts as lowest_pending == seq.
        sess.forget_below(min(ref.lowest_pending, ref.seq))
        digest = request_digest(cmd)
        held: WriteResult | None = sess.outcomes.get(ref.seq)
        if held is not None:
            if held.request not in (0, digest):
                # Another request under this seq (two clients sharing a
                # session, or a seq reused): its outcome is not this one's.
                return WriteResult("seq_reused", self.revision)
            return held
        if ref.seq < sess.floor:
            return WriteResult("session_expired", self.revision)
        res = self._put(index, cmd) if isinstance(cmd, Put) else self._delete(index, cmd)
        res = msgspec.structs.replace(res, request=digest)
        sess.outcomes[ref.seq] = res
        if len(sess.outcomes) > SESSION_OUTCOMES:
            # Only a client that overran its window gets here; the lowest
            # outcome goes, and the floor moves past it so its retry is
            # answered session_expired rather than applied again.
            lowest, _ = sess.outcomes.popitem(0)
            sess.forget_below(lowest + 1)
        return res

    def _check(self, cur: KV | None, if_value: str | None, if_revision: int | None) -> bool:
        if if_revision is not None:
            if if_revision == 0:
                if cur is not None:
                    return False
            elif cur is None or cur.revision != if_revision:
                return False
        return if_value is None or (cur is not None and cur.value == if_value)

    def _put(self, index: int, cmd: Put) -> WriteResult:
        cur = self.data.get(cmd.key)
        if not self._check(cur, cmd.if_value, cmd.if_revision):
            return WriteResult("precondition_failed", self.revision, current=cur)
        self.data[cmd.key] = KV(cmd.value, index)
        self.revision = index
        return WriteResult("ok", index, prev=cur)

    def _delete(self, index: int, cmd: Delete) -> WriteResult:
        cur = self.data.get(cmd.key)
        if cur is None:
            if cmd.if_value is not None or cmd.if_revision not in (None, 0):
                return WriteResult("precondition_failed", self.revision)
            return WriteResult("not_found", self.revision)
        if not self._check(cur, cmd.if_value, cmd.if_revision):
            return WriteResult("precondition_failed", self.revision, current=cur)
        del self.data[cmd.key]
        self.revision = index
        return WriteResult("ok", index, prev=cur)

    # Legacy request_id dedup: entries written before sessions replay as they
    # were first applied.  Not sound after eviction (a forgotten id looks
    # new), which is why the API no longer accepts request_id.

    def _seen(self, rid: str) -> WriteResult | None:
        reqs = self.clients.get(client_of(rid))
        return None if reqs is None else reqs.get(rid)

    def _remember(self, rid: str, res: WriteResult) -> None:
        c = client_of(rid)
        reqs = self.clients.get(c)
        if reqs is None:
            reqs = self.clients[c] = OrderedDict()
            while len(self.clients) > MAX_CLIENTS:
                self.clients.popitem(last=False)
        else:
            self.clients.move_to_end(c)
        reqs[rid] = res
        while len(reqs) > REQUESTS_PER_CLIENT:
            reqs.popitem(last=False)

    # -- reads ------------------------------------------------------------------------

    def get(self, key: str) -> KV | None:
        kv: KV | None = self.data.get(key)
        return kv

    def list(self, prefix: str = "", limit: int | None = None) -> tuple[list[tuple[str, KV]], int]:
        """Keys starting with ``prefix`` in order, at most ``limit``; and the
        store's revision."""
        out: list[tuple[str, KV]] = []
        for k in self.data.irange(minimum=prefix):
            if not k.startswith(prefix) or (limit is not None and len(out) >= limit):
                break
            out.append((k, self.data[k]))
        return out, self.revision

    def page(
        self, prefix: str, start: str, limit: int, max_bytes: int
    ) -> tuple[builtins.list[tuple[str, KV]], str | None, int]:
        """One page of ``list``: keys under ``prefix`` from ``start`` on, at
        most ``limit`` of them and, past the first, about ``max_bytes`` of
        keys and values (UTF-8).  Returns the items, the key the next page
        starts at (None when done) and the store's revision."""
        out: builtins.list[tuple[str, KV]] = []
        size = 0
        for k in self.data.irange(minimum=max(prefix, start)):
            if not k.startswith(prefix):
                break
            kv = self.data[k]
            # 40: the JSON around one item ({"key":..,"value":..,"revision":..}).
            size += len(k.encode()) + len(kv.value.encode()) + 40
            if out and (len(out) >= limit or size > max_bytes):
                return out, k, self.revision
            out.append((k, kv))
        return out, None, self.revision

    # -- snapshots --------------------------------------------------------------------

    def snapshot(self) -> StateSnapshot:
        # References only: values are immutable, so this is the whole capture.
        items = list(self.data.items())
        head = _SnapHead(
            self.revision,
            [(sid, s.floor, list(s.outcomes.items())) for sid, s in self.sessions.items()],
            [(c, list(reqs.items())) for c, reqs in self.clients.items()],
            dict(self.addrs),
        )
        return StreamSnapshot(lambda: _snapshot_chunks(head, items))

    def restore(self, chunks: Iterable[bytes]) -> None:
        r = ChunkReader(chunks)
        if r.at_eof():  # the empty state of a brand-new cluster
            self.data, self.revision = SortedDict(), 0
            self.sessions, self.clients, self.addrs = OrderedDict(), OrderedDict(), {}
            return
        if r.read_exact(len(_SNAP_PREFIX)) != _SNAP_PREFIX:
            raise SnapshotFormatError("not a liferaft-kv snapshot")
        version = r.read_exact(1)[0]
        if version not in (1, _SNAP_VERSION):
            raise SnapshotFormatError(
                f"liferaft-kv snapshot version {version}; this build reads versions "
                f"1 and {_SNAP_VERSION}"
            )
        try:
            if version == 1:
                v1 = _decode_head_v1(_record(r))
                head = _SnapHead(v1.revision, [], v1.clients, v1.addrs)
            else:
                head = _decode_head(_record(r))
            data: SortedDict[str, KV] = SortedDict()
            while not r.at_eof():
                for k, v, rev in _decode_items(_record(r)):
                    data[k] = KV(v, rev)
        except msgspec.DecodeError as exc:
            raise SnapshotFormatError(f"bad liferaft-kv snapshot: {exc}") from exc
        self.data = data
        self.revision = head.revision
        self.sessions = OrderedDict(
            (sid, Session(floor, outcomes)) for sid, floor, outcomes in head.sessions
        )
        self.clients = OrderedDict((c, OrderedDict(reqs)) for c, reqs in head.clients)
        self.addrs = dict(head.addrs)


def _record(r: ChunkReader) -> bytes:
    n = int.from_bytes(r.read_exact(4), "little")
    return r.read_exact(n)


def _framed(b: bytes) -> bytes:
    return len(b).to_bytes(4, "little") + b


def _snapshot_chunks(head: _SnapHead, items: list[tuple[str, KV]]) -> Iterator[bytes]:
    yield _SNAP_PREFIX + bytes([_SNAP_VERSION]) + _framed(_encode(head))
    for i in range(0, len(items), _BATCH):
        batch = [(k, kv.value, kv.revision) for k, kv in items[i : i + _BATCH]]
        yield _framed(_encode(batch))


def as_json(kv: KV | None) -> dict[str, Any] | None:
    return None if kv is None else {"value": kv.value, "revision": kv.revision}
