"""The MVCC store's on-disk layout in LMDB: named databases, keys, records, meta.

Theory of operation (docs/kv.md, "MVCC store").  One LMDB environment (a
directory holding ``data.mdb`` and ``lock.mdb``) with three named databases,
after etcd's mvcc package (bbolt's "key" bucket and its in-memory treeIndex):

``rev``
    ``(main: u64 BE, sub: u32 BE)`` -> one :class:`Record` (msgpack): the key,
    its create/mod revision, version, lease, value, and a tombstone flag.
    *main* is the store revision of the write transaction, *sub* numbers the
    changes inside it (a delete-range of three keys writes subs 0, 1, 2).
    Big-endian, so LMDB's byte order is revision order.
``index``
    user key -> ``(main, sub)`` as 12 bytes, one duplicate per version
    (``MDB_DUPSORT | MDB_DUPFIXED``: sorted ascending, packed in pages).  The
    key's state at revision R is its greatest duplicate with main <= R; a
    tombstone there means absent.  etcd keeps this index in memory and
    rebuilds it at start; here it is on disk, so a restart reads nothing
    whole (the issue's 5 s restart).  LMDB caps keys at 511 bytes
    (:data:`~liferaft.kv.mvcc.ops.MAX_KEY_BYTES`).
``meta``
    ``format`` (u32), ``applied_index``, ``revision``, ``compact_revision``
    (u64 each, big-endian).  ``revision`` is the store revision: it grows by
    one for each entry that changed something.  All of it is written in the
    same LMDB transaction as the changes, so a crash leaves one applied index.
``sessions``, ``session_lru``, ``outcomes``
    Client sessions (Raft thesis 6.3): id -> (floor, last used, outcomes
    held); last used -> id (least recently used first); ``(id, seq)`` ->
    the digest and encoded outcome of one write.  :mod:`.sessions`.
``leases``, ``lease_keys``
    Lease id -> its TTL; lease id -> each key attached to it (dupsort: a
    key can be 511 bytes, so it cannot share one LMDB key with the id).
    :mod:`.leases`.

A store created empty starts at revision 1 (as etcd does), so the first
change has revision 2 and revision 0 can mean "the current one" in reads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import lmdb
import msgspec

from liferaft.kv.mvcc.ops import KeyValue, StoreFormatError

#: The on-disk format this build writes and reads (``meta`` key ``format``).
#: 2: the sessions and leases tables (1 had the history only; it was never
#: served by a released server, so there is no migration).
FORMAT_VERSION = 2

DB_REV = b"rev"
DB_INDEX = b"index"
DB_META = b"meta"
DB_SESSIONS = b"sessions"
DB_SESSION_LRU = b"session_lru"
DB_OUTCOMES = b"outcomes"
DB_LEASES = b"leases"
DB_LEASE_KEYS = b"lease_keys"
#: Named databases an environment is opened for (``max_dbs``).
MAX_DBS = 8

META_FORMAT = b"format"
META_APPLIED = b"applied_index"
META_REVISION = b"revision"
META_COMPACT = b"compact_revision"

_REV = struct.Struct(">QI")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
REV_SIZE = _REV.size


class Record(msgspec.Struct, array_like=True, frozen=True):
    """One version of a key in the ``rev`` database (a tombstone: ``deleted``)."""

    key: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int
    value: bytes
    deleted: bool = False

    def to_kv(self, keys_only: bool = False) -> KeyValue:
        value = b"" if keys_only else self.value
        return KeyValue(
            self.key, self.create_revision, self.mod_revision, self.version, value, self.lease
        )


_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(Record).decode


def pack_u64(n: int) -> bytes:
    return _U64.pack(n)


def unpack_u64(b: bytes | memoryview) -> int:
    return int(_U64.unpack(b)[0])


def pack_rev(main: int, sub: int = 0) -> bytes:
    return _REV.pack(main, sub)


def unpack_rev(b: bytes | memoryview) -> tuple[int, int]:
    main, sub = _REV.unpack(b)
    return int(main), int(sub)


def encode_record(r: Record) -> bytes:
    return _encode(r)


def decode_record(b: bytes | memoryview | None) -> Record:
    if b is None:  # an index entry with no record: the store is corrupt
        raise lmdb.CorruptedError("an index entry names a missing revision")
    return _decode_record(b)


@dataclass(frozen=True)
class Dbs:
    """The named databases of one open environment."""

    rev: lmdb._Database
    index: lmdb._Database
    meta: lmdb._Database
    sessions: lmdb._Database
    session_lru: lmdb._Database
    outcomes: lmdb._Database
    leases: lmdb._Database
    lease_keys: lmdb._Database


def open_dbs(env: lmdb.Environment, *, create: bool) -> Dbs:
    """Open (or create) the named databases; :class:`StoreFormatError` if absent."""
    # No explicit txn: py-lmdb opens each handle in a transaction of its own
    # and commits it, which a handle needs to outlive it (a handle opened in a
    # read transaction we end ourselves is not valid after it).
    try:
        meta = env.open_db(DB_META, create=create)
    except lmdb.NotFoundError:
        raise StoreFormatError(
            f"{env.path()} is not an MVCC store (no {DB_META.decode()} database)"
        ) from None
    if not create:
        # A store of another format may lack a table of this one: name the
        # versions rather than the table.
        with env.begin(db=meta) as txn:
            raw = txn.get(META_FORMAT)
        if raw is not None and len(raw) == _U32.size:
            _check_version(int(_U32.unpack(raw)[0]), env.path())
    try:
        return Dbs(
            rev=env.open_db(DB_REV, create=create),
            index=env.open_db(DB_INDEX, dupsort=True, dupfixed=True, create=create),
            meta=meta,
            sessions=env.open_db(DB_SESSIONS, create=create),
            session_lru=env.open_db(DB_SESSION_LRU, create=create),
            outcomes=env.open_db(DB_OUTCOMES, create=create),
            leases=env.open_db(DB_LEASES, create=create),
            lease_keys=env.open_db(DB_LEASE_KEYS, dupsort=True, create=create),
        )
    except lmdb.NotFoundError as exc:
        raise StoreFormatError(f"{env.path()}: an MVCC store missing a table: {exc}") from None


def _check_version(found: int, where: str) -> None:
    if found != FORMAT_VERSION:
        raise StoreFormatError(
            f"{where}: MVCC store format version {found}; this build reads version "
            f"{FORMAT_VERSION}"
        )


def init_meta(txn: lmdb.Transaction, dbs: Dbs) -> None:
    """Write the meta of a new, empty store (a no-op on an existing one)."""
    if txn.get(META_FORMAT, db=dbs.meta) is None:
        txn.put(META_FORMAT, _U32.pack(FORMAT_VERSION), db=dbs.meta)
        put_meta(txn, dbs, META_APPLIED, 0)
        put_meta(txn, dbs, META_REVISION, 1)
        put_meta(txn, dbs, META_COMPACT, 0)


def check_format(txn: lmdb.Transaction, dbs: Dbs, where: str) -> None:
    """:class:`StoreFormatError` (one line, both versions) unless this build reads it."""
    raw = txn.get(META_FORMAT, db=dbs.meta)
    if raw is None or len(raw) != _U32.size:
        raise StoreFormatError(f"{where}: not an MVCC store (no format version in meta)")
    _check_version(int(_U32.unpack(raw)[0]), where)
    for name in (META_APPLIED, META_REVISION, META_COMPACT):
        raw = txn.get(name, db=dbs.meta)
        if raw is None or len(raw) != _U64.size:
            raise StoreFormatError(f"{where}: meta {name.decode()} is missing or malformed")


def get_meta(txn: lmdb.Transaction, dbs: Dbs, name: bytes) -> int:
    raw = txn.get(name, db=dbs.meta)
    return 0 if raw is None else int(_U64.unpack(raw)[0])


def put_meta(txn: lmdb.Transaction, dbs: Dbs, name: bytes, value: int) -> None:
    txn.put(name, _U64.pack(value), db=dbs.meta)
