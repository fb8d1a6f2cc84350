"""A hash of the store's history up to a revision, the same on every replica
that applied it (etcd's HashKV, served by liferaft/etcd/maintenance.py).

What it covers is what a read can see: every version with a revision in
``(compact_revision, revision]``, and, for each key, its latest version at
or below the compact revision unless that is a tombstone (the versions a
finished compaction keeps: :func:`~liferaft.kv.mvcc.compaction.compact_key`).
Versions that compaction has made unreadable are left out whether or not
the pass has removed them yet: the pass runs a few keys per applied index
(compaction.py), so two replicas asked at different moments may hold
different dead versions, and the hash must not tell them apart.

Records are hashed as stored (the revision and the record's bytes), in key
order then revision order; every replica encodes the same op into the same
bytes, so equal histories give equal hashes.  CRC-32, as etcd's uint32.
"""

from __future__ import annotations

import zlib

from liferaft.kv.mvcc import layout
from liferaft.kv.mvcc.reader import ReadView


def hash_kv(view: ReadView, revision: int) -> int:
    """The hash of ``view``'s history up to ``revision`` (at most the view's
    revision, above its compact revision: the caller checks).  A walk of the
    whole key index: run it off the event loop."""
    txn, dbs = view.txn, view.dbs
    compact = view.compact_revision
    crc = 0
    key: bytes | None = None
    kept: bytes | None = None  # the key's latest version at or below ``compact``

    def record(rev: bytes) -> bytes:
        raw = txn.get(rev, db=dbs.rev)
        if raw is None:
            layout.decode_record(raw)  # raises: an index entry with no record
        return bytes(raw)  # type: ignore[arg-type]

    def flush_kept() -> None:
        nonlocal crc, kept
        if kept is not None:
            raw = record(kept)
            if not layout.decode_record(raw).deleted:
                crc = zlib.crc32(kept + raw, crc)
            kept = None

    for k, rev in txn.cursor(db=dbs.index).iternext(keys=True, values=True):
        if k != key:
            flush_kept()
            key = bytes(k)
        main = layout.unpack_rev(rev)[0]
        if main <= compact:
            kept = bytes(rev)
        elif main <= revision:
            flush_kept()
            crc = zlib.crc32(bytes(rev) + record(bytes(rev)), crc)
    flush_kept()
    return crc & 0xFFFFFFFF
