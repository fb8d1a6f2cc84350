"""Compaction done a few keys per applied entry, never all at once.

A :class:`~liferaft.kv.mvcc.ops.Compact` entry takes effect at once: the
store's compact revision moves, and reads below it are refused.  Dropping
the versions it made unreadable is garbage collection, and with a million
keys one pass over the key index took seconds in one write transaction,
stalling every apply behind it (the attack review measured 3.7 s for 200k
keys of 10 versions).  So the pass is spread out: each applied log index,
whatever it carries, removes the superseded versions of at most
:data:`STEP_KEYS` keys, resuming from a cursor kept in the meta table.

Why per *index* and not per batch: the pass changes which dead keys a
scan meets (a bounded range in a transaction counts the keys it examines:
liferaft/kv/mvcc/reader.py), so its progress must be the same on every
replica at every index.  Batches differ from replica to replica; the log
does not.  What a read can see is the same either way: a key's latest
version at or below the compact revision stays (unless it is a
tombstone), so reads at or above it answer alike before and after.

A new Compact while a pass is running starts the pass again from the first
key, for the new revision.
"""

from __future__ import annotations

import lmdb

from liferaft.kv.mvcc import layout
from liferaft.kv.mvcc.layout import Dbs

#: Keys whose old versions one applied index removes at most.
STEP_KEYS = 64

META_TODO = b"compact_todo"
"""The revision the running pass compacts to (absent or 0: no pass)."""
META_CURSOR = b"compact_cursor"
"""The key the running pass goes on from (absent: the first key)."""


def start(txn: lmdb.Transaction, dbs: Dbs, rev: int) -> None:
    """A Compact to ``rev`` was applied: (re)start the pass from the first key."""
    layout.put_meta(txn, dbs, META_TODO, rev)
    txn.delete(META_CURSOR, db=dbs.meta)


def pending(txn: lmdb.Transaction, dbs: Dbs) -> int:
    """The revision a running pass compacts to (0: none)."""
    return layout.get_meta(txn, dbs, META_TODO)


def step(txn: lmdb.Transaction, dbs: Dbs, budget: int = STEP_KEYS) -> bool:
    """Compact the next ``budget`` keys of a running pass (nothing if none);
    True while the pass has keys left."""
    rev = layout.get_meta(txn, dbs, META_TODO)
    if not rev:
        return False
    cur = txn.cursor(db=dbs.index)
    at = txn.get(META_CURSOR, db=dbs.meta)
    ok = cur.set_range(at) if at is not None else cur.first()
    done = 0
    while ok and done < budget:
        key = bytes(cur.key())
        compact_key(txn, dbs, cur, key, rev)
        done += 1
        # Deletes move the cursor: find the next key afresh.
        ok = cur.set_range(key) and (cur.key() != key or cur.next_nodup())
    if ok:
        txn.put(META_CURSOR, cur.key(), db=dbs.meta)
        return True
    txn.delete(META_TODO, db=dbs.meta)
    txn.delete(META_CURSOR, db=dbs.meta)
    return False


def compact_key(
    txn: lmdb.Transaction, dbs: Dbs, cur: lmdb.Cursor, key: bytes, rev: int
) -> None:
    """Drop ``key``'s versions superseded at or before ``rev`` (``cur`` is on
    its first version); its latest version at ``rev`` stays unless it is a
    tombstone (etcd's rule), so a read at ``rev`` or later sees the same."""
    old = [v for v in cur.iternext_dup(keys=False) if layout.unpack_rev(v)[0] <= rev]
    if not old:
        return
    last = layout.decode_record(txn.get(old[-1], db=dbs.rev))
    for v in old if last.deleted else old[:-1]:
        txn.delete(key, v, db=dbs.index)
        txn.delete(v, db=dbs.rev)
