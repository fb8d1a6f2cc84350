"""The replicated key-value state machine behind liferaft-kv.

Every node applies the same log to a :class:`KVStore`.  Writes are encoded
commands (msgpack, tagged structs); reads run on the applied state.

- ``revision`` of a key is the log index of the entry that last changed it,
  so revisions only grow; the store's revision is the index of the last
  change to any key.
- A write may carry a ``request_id``.  Its outcome is remembered, so a retry
  (after a 504, a leader change or a restart) returns the first outcome and
  never applies twice.  The memory is part of the replicated state and of
  snapshots, and bounded: the client is the part of the id before its last
  ``:`` (``"c7f3:42"`` is request 42 of client ``c7f3``), and each client
  keeps its newest :data:`REQUESTS_PER_CLIENT` outcomes, for at most
  :data:`MAX_CLIENTS` clients (the least recently active are forgotten
  first).  Eviction depends only on the log, so every replica agrees.
"""

from __future__ import annotations

import builtins
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
REQUESTS_PER_CLIENT = 256
MAX_CLIENTS = 10_000
_SNAP_MAGIC = b"LRKV\x01"
_BATCH = 1024  # items per snapshot record


class KV(msgspec.Struct, frozen=True):
    """A value and the revision that wrote it."""

    value: str
    revision: int


class Put(msgspec.Struct, tag="put", frozen=True):
    key: str
    value: str
    if_value: str | None = None
    if_revision: int | None = None  # 0: create only
    request_id: str | None = None


class Delete(msgspec.Struct, tag="del", frozen=True):
    key: str
    if_value: str | None = None
    if_revision: int | None = None
    request_id: str | None = None


class SetAddr(msgspec.Struct, tag="addr", frozen=True):
    """A member announces its client (HTTP) address, so any node can tell a
    client where the leader's API is.  Not a key: invisible to kv reads."""

    node_id: str
    client_addr: str


Command = Put | Delete | SetAddr


class WriteResult(msgspec.Struct, frozen=True):
    """The outcome of one write, as remembered for its request_id.

    ``outcome`` is ``ok``, ``not_found`` (delete of a missing key) or
    ``precondition_failed`` (then ``current`` is what the key holds)."""

    outcome: str
    revision: int
    prev: KV | None = None
    current: KV | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode_cmd = msgspec.msgpack.Decoder(Command).decode


def encode_command(cmd: Put | Delete | SetAddr) -> bytes:
    return _encode(cmd)


class _SnapHead(msgspec.Struct):
    revision: int
    clients: list[tuple[str, list[tuple[str, WriteResult]]]]
    addrs: dict[str, str] = {}


_decode_head = msgspec.msgpack.Decoder(_SnapHead).decode
_decode_items = msgspec.msgpack.Decoder(list[tuple[str, str, int]]).decode


def client_of(request_id: str) -> str:
    return request_id.rpartition(":")[0]


class KVStore:
    """The state machine (liferaft.runtime.StateMachine)."""

    def __init__(self) -> None:
        self.data: SortedDict[str, KV] = SortedDict()
        self.revision = 0
        self.clients: OrderedDict[str, OrderedDict[str, WriteResult]] = OrderedDict()
        self.addrs: dict[str, str] = {}  # node id -> client address

    # -- writes -----------------------------------------------------------------------

    def apply(self, index: int, data: bytes) -> WriteResult:
        try:
            cmd = _decode_cmd(data)
        except msgspec.DecodeError as exc:
            # Refused alike on every replica, and before any change.
            raise ValueError(f"not a kv command: {exc}") from exc
        if isinstance(cmd, SetAddr):
            self.addrs[cmd.node_id] = cmd.client_addr
            return WriteResult("ok", self.revision)
        rid = cmd.request_id
        if rid is not None:
            seen = self._seen(rid)
            if seen is not None:
                return seen
        res = self._put(index, cmd) if isinstance(cmd, Put) else self._delete(index, cmd)
        if rid is not None:
            self._remember(rid, res)
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
            [(c, list(reqs.items())) for c, reqs in self.clients.items()],
            dict(self.addrs),
        )
        return StreamSnapshot(lambda: _snapshot_chunks(head, items))

    def restore(self, chunks: Iterable[bytes]) -> None:
        r = ChunkReader(chunks)
        if r.at_eof():  # the empty state of a brand-new cluster
            self.data, self.revision = SortedDict(), 0
            self.clients, self.addrs = OrderedDict(), {}
            return
        if r.read_exact(len(_SNAP_MAGIC)) != _SNAP_MAGIC:
            raise SnapshotFormatError("not a liferaft-kv snapshot")
        try:
            head = _decode_head(_record(r))
            data: SortedDict[str, KV] = SortedDict()
            while not r.at_eof():
                for k, v, rev in _decode_items(_record(r)):
                    data[k] = KV(v, rev)
        except msgspec.DecodeError as exc:
            raise SnapshotFormatError(f"bad liferaft-kv snapshot: {exc}") from exc
        self.data = data
        self.revision = head.revision
        self.clients = OrderedDict((c, OrderedDict(reqs)) for c, reqs in head.clients)
        self.addrs = dict(head.addrs)


def _record(r: ChunkReader) -> bytes:
    n = int.from_bytes(r.read_exact(4), "little")
    return r.read_exact(n)


def _framed(b: bytes) -> bytes:
    return len(b).to_bytes(4, "little") + b


def _snapshot_chunks(head: _SnapHead, items: list[tuple[str, KV]]) -> Iterator[bytes]:
    yield _SNAP_MAGIC + _framed(_encode(head))
    for i in range(0, len(items), _BATCH):
        batch = [(k, kv.value, kv.revision) for k, kv in items[i : i + _BATCH]]
        yield _framed(_encode(batch))


def as_json(kv: KV | None) -> dict[str, Any] | None:
    return None if kv is None else {"value": kv.value, "revision": kv.revision}
