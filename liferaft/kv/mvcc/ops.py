"""The MVCC store's typed API: operations, conditions, results and errors.

These are the values :meth:`MVCCStore.apply_batch` takes and returns
(docs/kv.md, "MVCC store").  They are plain msgspec structs so a command
codec can carry them later; decoding Raft commands into them is not this
module's job.  Keys and values are ``bytes``: the store orders keys as
bytes, like etcd.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import msgspec

from liferaft.kv.errors import (
    KVBadRequestError,
    KVConflictError,
    KVError,
    KVNotFoundError,
    KVUnavailableError,
)
from liferaft.runtime.statemachine import SnapshotFormatError

#: LMDB's compiled-in maximum key size (``mdb_env_get_maxkeysize``); the key
#: index is keyed by the user's key, so no key may be longer.
MAX_KEY_BYTES = 511

#: ``range_end`` meaning "every key at or after ``key``" (etcd's convention).
TO_END = b"\x00"


class KeyValue(msgspec.Struct, frozen=True):
    """One version of a key, as a read sees it."""

    key: bytes
    create_revision: int
    """The revision that created this generation of the key."""
    mod_revision: int
    """The revision of this version."""
    version: int
    """Puts since the key was (re)created: 1 for the first; a delete resets it."""
    value: bytes
    lease: int = 0
    """The lease the key is attached to; 0: none."""


# --- operations -----------------------------------------------------------------


class Put(msgspec.Struct, frozen=True, tag=True, omit_defaults=True):
    """Set ``key`` to ``value`` (attached to ``lease``; 0: none).

    ``ignore_value`` / ``ignore_lease`` (etcd's): keep the key's current
    value / lease, as it is when the entry applies; the key must exist then
    (:class:`KeyNotFoundError` otherwise, and nothing changes).  With either,
    ``value`` / ``lease`` must be empty / 0.
    """

    key: bytes
    value: bytes
    lease: int = 0
    prev_kv: bool = False
    # Added after the first release: omitted when False, so every entry
    # written before decodes as it did (docs/etcd.md, "Stored commands").
    ignore_value: bool = False
    ignore_lease: bool = False


class DeleteRange(msgspec.Struct, frozen=True, tag=True, omit_defaults=True):
    """Delete ``key`` (``range_end`` None), or every key in ``[key, range_end)``."""

    key: bytes
    range_end: bytes | None = None
    prev_kv: bool = False


class Range(msgspec.Struct, frozen=True, tag=True, omit_defaults=True):
    """Read ``key``, or ``[key, range_end)``, at ``revision`` (0: the current one).

    ``limit`` (0: none) caps the keys returned; when more remain, the
    result's ``more`` is true and ``next_key`` continues the range.
    """

    key: bytes
    range_end: bytes | None = None
    revision: int = 0
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False


CompareTarget: TypeAlias = Literal["value", "version", "create_revision", "mod_revision", "lease"]
CompareOp: TypeAlias = Literal["=", "!=", "<", ">"]


class Compare(msgspec.Struct, frozen=True, omit_defaults=True):
    """A condition on one key's current state, or on every key of
    ``[key, range_end)`` (etcd's ``range_end``; TO_END: every key from ``key``).

    A missing key has version, create_revision, mod_revision and lease 0;
    every ``value`` condition on a missing key is false.  On a range, the
    condition holds if it holds for every key there; on an empty range, as
    on a missing key (etcd's rule).
    """

    key: bytes
    target: CompareTarget
    op: CompareOp
    operand: bytes | int
    # Added after the first release (omitted when None: older entries decode alike).
    range_end: bytes | None = None


class Txn(msgspec.Struct, frozen=True, tag=True, omit_defaults=True):
    """If every ``compare`` holds, run ``success``, else ``failure``: one revision.

    The ops of the branch run in order, and each sees the ones before it.  A
    branch may hold a nested Txn (etcd's ``request_txn``), at most
    :data:`MAX_TXN_DEPTH` deep; every compare on the path taken, nested ones
    too, is decided against the store as it was before the txn wrote
    anything (etcd's rule), and all of it is one revision.
    """

    compare: tuple[Compare, ...] = ()
    success: tuple[TxnOp, ...] = ()
    failure: tuple[TxnOp, ...] = ()


# After Txn: a branch may hold a Txn (annotations are resolved lazily).
TxnOp: TypeAlias = Put | DeleteRange | Range | Txn

#: The deepest txn nesting (a txn alone is depth 1).  Its encoding must stay
#: within the codec's MAX_NESTING containers: depth d nests 2d + 2 deep.
MAX_TXN_DEPTH = 7


class Compact(msgspec.Struct, frozen=True, tag=True):
    """Drop history below ``revision``; it is replicated like a write, takes no revision."""

    revision: int


Op: TypeAlias = Put | DeleteRange | Txn | Compact


class MVCCEntry(msgspec.Struct, frozen=True):
    """One committed log entry for :meth:`MVCCStore.apply_batch`.

    ``op`` None: an entry with nothing for the store (a no-op, a membership
    change); it is recorded as applied and changes nothing else.
    """

    index: int
    op: Op | None


# --- results ---------------------------------------------------------------------


class PutResult(msgspec.Struct, frozen=True, tag=True):
    revision: int
    """The store revision after the op (the put's own)."""
    prev_kv: KeyValue | None = None


class DeleteResult(msgspec.Struct, frozen=True, tag=True):
    revision: int
    """The store revision after the op (unchanged when nothing was deleted)."""
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()


class RangeResult(msgspec.Struct, frozen=True, tag=True):
    revision: int
    """The store's current revision (etcd's header revision), not the one read at."""
    kvs: tuple[KeyValue, ...] = ()
    count: int = 0
    """Every key in the range at that revision, regardless of ``limit``."""
    more: bool = False
    next_key: bytes | None = None
    """With ``more``: the ``key`` of the request that continues this range."""


class TxnResult(msgspec.Struct, frozen=True, tag=True):
    revision: int
    succeeded: bool
    results: tuple[PutResult | DeleteResult | RangeResult | TxnResult, ...] = ()


class CompactResult(msgspec.Struct, frozen=True, tag=True):
    revision: int
    compact_revision: int


Result: TypeAlias = PutResult | DeleteResult | TxnResult | CompactResult | None


# --- errors -----------------------------------------------------------------------


class CompactedError(KVError):
    """A read (or compaction) at a revision that compaction removed."""

    code = "compacted"

    def __init__(self, revision: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {revision} is compacted (compact revision {compact_revision})",
            compact_revision=compact_revision,
        )
        self.compact_revision = compact_revision


class FutureRevisionError(KVError):
    """A read or compaction at a revision the store has not reached."""

    code = "future_revision"

    def __init__(self, revision: int, current: int) -> None:
        super().__init__(
            f"revision {revision} is ahead of the store (current revision {current})",
            current=current,
        )


class LeaseNotFoundError(KVNotFoundError):
    """A revoke, a read or a put naming a lease that does not exist (never
    granted, revoked, or expired)."""

    code = "lease_not_found"

    def __init__(self, lease: int) -> None:
        super().__init__(f"lease {lease} not found", lease=lease)


class LeaseExistsError(KVConflictError):
    """A grant of an id that is already a live lease (HTTP 409)."""

    code = "lease_exists"

    def __init__(self, lease: int) -> None:
        KVError.__init__(self, f"lease {lease} already exists", lease=lease)


class KeyNotFoundError(KVBadRequestError):
    """A put with ``ignore_value`` or ``ignore_lease`` of a key that does not
    exist when it applies (etcd's "key not found"); nothing was changed."""

    code = "key_not_found"

    def __init__(self, key: bytes) -> None:
        super().__init__(f"key {key!r} not found (ignore_value/ignore_lease need an existing key)")


class StoreFormatError(SnapshotFormatError):
    """An LMDB environment this build cannot read: another format version, or
    not an MVCC store at all, or a copy that fails its check.  One line."""


def check_key(key: bytes, what: str = "key") -> None:
    """:class:`KVBadRequestError` unless ``key`` is a key the store can hold."""
    if not isinstance(key, bytes):
        raise KVBadRequestError(f"{what} must be bytes, not {type(key).__name__}")
    if not key:
        raise KVBadRequestError(f"{what} is empty")
    if len(key) > MAX_KEY_BYTES:
        raise KVBadRequestError(f"{what} is {len(key)} bytes; the store's limit is {MAX_KEY_BYTES}")


def in_range(key: bytes, start: bytes, end: bytes | None) -> bool:
    """True if ``key`` is in ``[start, end)`` (``end`` None: ``start`` only; TO_END: no bound)."""
    if end is None:
        return key == start
    return key >= start and (end == TO_END or key < end)


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes ``[prefix, end)`` every key starting with ``prefix``."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return TO_END  # all 0xff (or empty): every key from there on


class StoreClosedError(KVUnavailableError):
    """A read or copy of a store that was closed: a snapshot replaced it
    (read again: the machine has the new one) or the node is stopping."""

    def __init__(self, message: str) -> None:
        super().__init__("store_closed", message)
