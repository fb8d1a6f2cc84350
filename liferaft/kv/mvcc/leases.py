"""Leases in the MVCC store's LMDB environment: ids, TTLs and attached keys.

What is replicated is only what every replica must agree on: which leases
exist, each one's TTL, and which keys are attached to which lease.  *When*
a lease expires is not here: the leader alone keeps each lease's deadline
on its own clock and proposes a :class:`~liferaft.kv.mvcc.codec.LeaseRevoke`
when it passes (docs/kv.md, "Leases"), so every replica deletes the same
keys at the same revision.

- A grant of id 0 takes the entry's log index as the id (unique, and the
  same on every replica); a grant of a live id is refused
  (:class:`~liferaft.kv.mvcc.ops.LeaseExistsError`).  The TTL is whole
  seconds in ``1..MAX_LEASE_TTL`` (etcd's maximum); a minimum TTL is the
  service's rule, not the machine's.
- A put with ``lease != 0`` needs a live lease, else it is refused
  (:class:`~liferaft.kv.mvcc.ops.LeaseNotFoundError`) and changes nothing;
  the writer checks every put of a txn's branch before the first write.
- The key set is kept exact by :meth:`LeaseTable.changed`, which the writer
  calls for every record it writes: a key leaves its old lease when it is
  deleted or put again (under another lease or none), and joins its new one.
- A revoke deletes every attached key at ONE new revision (one watch event
  per key), then the lease.

Tables (:mod:`.layout`): ``leases`` id -> TTL (u64); ``lease_keys`` id ->
each attached key (dupsort, sorted).
"""

from __future__ import annotations

import lmdb
import msgspec

from liferaft.kv.errors import KVBadRequestError
from liferaft.kv.mvcc import layout
from liferaft.kv.mvcc.layout import Dbs, Record

#: etcd's maximum lease TTL (``MaxLeaseTTL``), in seconds.
MAX_LEASE_TTL = 9_000_000_000
_MAX_ID = (1 << 63) - 1  # etcd's lease ids are int64


class LeaseGrantResult(msgspec.Struct, frozen=True, tag=True):
    id: int
    ttl: int


class LeaseRevokeResult(msgspec.Struct, frozen=True, tag=True):
    revision: int
    """The store revision after the revoke (its own if it deleted keys)."""
    deleted: int


class LeaseInfo(msgspec.Struct, frozen=True):
    """A live lease: its granted TTL and the keys attached to it, in key order."""

    id: int
    ttl: int
    keys: tuple[bytes, ...] = ()


def check_grant(lease: int, ttl: int) -> None:
    """:class:`KVBadRequestError` for an id or TTL no lease may have."""
    if not 0 <= lease <= _MAX_ID:
        raise KVBadRequestError(f"lease id must be in 0..{_MAX_ID}, not {lease}")
    if not 1 <= ttl <= MAX_LEASE_TTL:
        raise KVBadRequestError(f"lease ttl must be in 1..{MAX_LEASE_TTL} seconds, not {ttl}")


def check_id(lease: int) -> None:
    if not 1 <= lease <= _MAX_ID:
        raise KVBadRequestError(f"lease id must be in 1..{_MAX_ID}, not {lease}")


class LeaseTable:
    """The lease tables in one transaction (the writer's lease hooks)."""

    def __init__(self, txn: lmdb.Transaction, dbs: Dbs) -> None:
        self.txn = txn
        self.dbs = dbs

    def exists(self, lease: int) -> bool:
        return 1 <= lease <= _MAX_ID and self.txn.get(
            layout.pack_u64(lease), db=self.dbs.leases
        ) is not None

    def grant(self, lease: int, ttl: int) -> None:
        self.txn.put(layout.pack_u64(lease), layout.pack_u64(ttl), db=self.dbs.leases)

    def keys(self, lease: int) -> list[bytes]:
        return lease_keys(self.txn, self.dbs, lease)

    def drop(self, lease: int) -> None:
        """Forget ``lease`` and its key set (its keys must be deleted first)."""
        u = layout.pack_u64(lease)
        self.txn.delete(u, db=self.dbs.lease_keys)  # no value: every duplicate
        self.txn.delete(u, db=self.dbs.leases)

    def changed(self, prev: Record | None, rec: Record) -> None:
        """Keep the key sets exact after ``rec`` replaced ``prev`` (see the module doc)."""
        if prev is not None and prev.lease:
            self.txn.delete(layout.pack_u64(prev.lease), prev.key, db=self.dbs.lease_keys)
        if not rec.deleted and rec.lease:
            self.txn.put(layout.pack_u64(rec.lease), rec.key, db=self.dbs.lease_keys)


def lease_keys(txn: lmdb.Transaction, dbs: Dbs, lease: int) -> list[bytes]:
    cur = txn.cursor(db=dbs.lease_keys)
    if not cur.set_key(layout.pack_u64(lease)):
        return []
    return [bytes(k) for k in cur.iternext_dup()]


def lease_info(txn: lmdb.Transaction, dbs: Dbs, lease: int) -> LeaseInfo | None:
    """Lease ``lease`` with its keys, or None if it is not live."""
    if not 1 <= lease <= _MAX_ID:
        return None
    raw = txn.get(layout.pack_u64(lease), db=dbs.leases)
    if raw is None:
        return None
    return LeaseInfo(lease, layout.unpack_u64(raw), tuple(lease_keys(txn, dbs, lease)))


def all_leases(txn: lmdb.Transaction, dbs: Dbs) -> list[tuple[int, int]]:
    """Every live lease as (id, ttl), by id."""
    return [
        (layout.unpack_u64(k), layout.unpack_u64(v)) for k, v in txn.cursor(db=dbs.leases)
    ]
