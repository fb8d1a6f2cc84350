"""An etcd-style MVCC key-value store on LMDB (issue 15, "The store").

A library: the KV server is wired onto it later; the in-memory store
(:mod:`liferaft.kv.state`) stays the default.  docs/kv.md, "MVCC store",
gives the model and the on-disk layout; :mod:`.store` the theory of
operation, :mod:`.layout` the databases, :mod:`.ops` the typed API.
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
    "Compare", "DeleteRange", "DeleteResult", "FutureRevisionError", "KeyValue", "MVCCEntry",
    "MVCCStore", "Op", "Put", "PutResult", "Range", "RangeResult", "ReadView", "Result",
    "StoreFormatError", "Txn", "TxnResult", "check_store", "open_copy", "prefix_end",
    "receive_copy",
]
