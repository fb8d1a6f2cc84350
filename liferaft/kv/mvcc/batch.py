"""One batch's write transaction: entries applied in order, then the meta.

:class:`BatchWriter` is what :meth:`MVCCStore.write` hands its caller: the
open LMDB write transaction, the applied index, revision and compact
revision as the entries so far left them, and :meth:`BatchWriter.apply_op`
to apply one op (validated first, so a refused op changes nothing).  The
store's own ``apply_batch`` and the KV state machine
(:mod:`liferaft.kv.machine`, which adds sessions and leases in the same
transaction) both apply through it, so there is one path from an op to the
database.
"""

from __future__ import annotations

import lmdb

from liferaft.kv.errors import KVError
from liferaft.kv.mvcc import compaction, layout
from liferaft.kv.mvcc.layout import Dbs
from liferaft.kv.mvcc.ops import Compact, Op, Result
from liferaft.kv.mvcc.writer import EntryWriter, WriteHooks, validate


class BatchWriter:
    """The state of one write transaction between entries."""

    def __init__(self, txn: lmdb.Transaction, dbs: Dbs) -> None:
        self.txn = txn
        self.dbs = dbs
        self.applied = layout.get_meta(txn, dbs, layout.META_APPLIED)
        self.revision = layout.get_meta(txn, dbs, layout.META_REVISION)
        self.compact = layout.get_meta(txn, dbs, layout.META_COMPACT)
        # Read once a batch: most batches have no compaction pass to advance.
        self.compacting = compaction.pending(txn, dbs) != 0

    def advance(self, index: int) -> None:
        """Take the entry at log ``index`` as the batch's last applied one.

        ``ValueError`` (the transaction is then aborted) if it is not after
        the last: the runtime never sends one, so the store is not what the
        runtime thinks.
        """
        if index <= self.applied:
            raise ValueError(f"entry {index} is at or below applied index {self.applied}")
        self.applied = index
        # A running compaction pass advances with the log, index by index.
        if self.compacting:
            self.compacting = compaction.step(self.txn, self.dbs)

    def apply_op(self, op: Op, hooks: WriteHooks | None = None) -> Result | KVError:
        """``op``'s result, or the :class:`KVError` that refused it (nothing changed)."""
        try:
            validate(op, self.revision, self.compact)
            w = self.writer(hooks)
            result = w.apply(op)
        except KVError as exc:
            return exc
        self.revision = w.revision
        if isinstance(op, Compact):
            self.compact = op.revision
            self.compacting = True  # the entry started a pass
        return result

    def writer(self, hooks: WriteHooks | None = None) -> EntryWriter:
        """A writer at the next revision; set :attr:`revision` to its
        ``revision`` after using it directly."""
        return EntryWriter(self.txn, self.dbs, self.revision, self.compact, hooks)

    def finish(self) -> None:
        """Write the applied index and revision (the store commits after)."""
        layout.put_meta(self.txn, self.dbs, layout.META_APPLIED, self.applied)
        layout.put_meta(self.txn, self.dbs, layout.META_REVISION, self.revision)
