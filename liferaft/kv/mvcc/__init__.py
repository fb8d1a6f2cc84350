"""An etcd-style MVCC key-value store on LMDB (issue 15, "The store").

docs/kv.md, "MVCC store", gives the model and the on-disk layout;
:mod:`.store` the theory of operation, :mod:`.layout` the databases,
:mod:`.ops` the typed API.  The KV state machine over it
(:mod:`liferaft.kv.machine`) adds the command codec (:mod:`.codec`), client
sessions (:mod:`.sessions`), leases (:mod:`.leases`), their application in
one transaction (:mod:`.commands`), checkpoints (:mod:`.checkpoint`) and
the store directory a restore swaps atomically (:mod:`.storedir`); those
are imported from their modules, not from here (:mod:`.commands` imports
the watch types, which import this package).
"""

from liferaft.kv.mvcc.copy import check_store, open_copy, receive_copy
from liferaft.kv.mvcc.layout import FORMAT_VERSION
from liferaft.kv.mvcc.ops import (
    MAX_KEY_BYTES,
    TO_END,
    Compact,
    CompactedError,
    CompactResult,
    Compare,
    DeleteRange,
    DeleteResult,
    FutureRevisionError,
    KeyValue,
    LeaseExistsError,
    LeaseNotFoundError,
    MVCCEntry,
    Op,
    Put,
    PutResult,
    Range,
    RangeResult,
    Result,
    StoreFormatError,
    Txn,
    TxnResult,
    prefix_end,
)
from liferaft.kv.mvcc.reader import ReadView
from liferaft.kv.mvcc.store import MVCCStore

__all__ = [
    "FORMAT_VERSION", "MAX_KEY_BYTES", "TO_END", "Compact", "CompactResult", "CompactedError",
    "Compare", "DeleteRange", "DeleteResult", "FutureRevisionError", "KeyValue", "LeaseExistsError",
    "LeaseNotFoundError", "MVCCEntry",
    "MVCCStore", "Op", "Put", "PutResult", "Range", "RangeResult", "ReadView", "Result",
    "StoreFormatError", "Txn", "TxnResult", "check_store", "open_copy", "prefix_end",
    "receive_copy",
]
