"""The native API's requests and results, and their MVCC operations.

Every front end of :class:`~liferaft.kv.service.KVService` speaks these:
the HTTP API decodes its JSON bodies straight into them (msgspec), and the
service turns them into the store's typed operations
(:mod:`liferaft.kv.mvcc.ops`).  The native API is text: keys and values are
strings, stored as their UTF-8 bytes; a value that is not UTF-8 (written by
a binary front end) reads back with U+FFFD in place of the bad bytes.

What the API calls a key's ``revision`` is its ``mod_revision`` in the
store: the store revision of the write that last changed it (docs/kv.md,
"Revisions").  Conditions (``if_revision``) compare against it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .errors import KVBadRequestError, KVTooLargeError
from .mvcc.ops import (
    MAX_KEY_BYTES,
    TO_END,
    Compare,
    DeleteRange,
    DeleteResult,
    KeyValue,
    Put,
    PutResult,
    Range,
    RangeResult,
    TxnOp,
    TxnResult,
    prefix_end,
)

#: Keys a range or a page returns at most.
MAX_LIMIT = 10_000
#: Largest number of compares or operations in one transaction (etcd's
#: default ``--max-txn-ops``).
MAX_TXN_OPS = 128
# Revisions are unsigned 64-bit numbers in the store: anything larger is
# refused as input, never met when encoding.
MAX_REVISION = 2**63 - 1


class Item(msgspec.Struct, frozen=True, omit_defaults=True):
    """One key as a read returns it.  ``revision`` is the key's mod revision;
    ``lease`` is left out when the key has none."""

    key: str
    value: str
    revision: int
    create_revision: int
    version: int
    lease: int = 0


def text(b: bytes) -> str:
    """Stored bytes as the native API's text."""
    return b.decode("utf-8", "replace")


def item(kv: KeyValue) -> Item:
    """The API's form of a key version."""
    return Item(text(kv.key), text(kv.value), kv.mod_revision, kv.create_revision, kv.version,
                kv.lease)  # fmt: skip


def item_or_none(kv: KeyValue | None) -> Item | None:
    return None if kv is None else item(kv)


def key_bytes(key: str, what: str = "key") -> bytes:
    """``key`` as stored; :class:`KVBadRequestError` if empty or too long."""
    if not key:
        raise KVBadRequestError(f"empty {what}")
    b = key.encode()
    if len(b) > MAX_KEY_BYTES:
        raise KVBadRequestError(f"{what} is {len(b)} bytes; the limit is {MAX_KEY_BYTES}")
    return b


def check_revision(revision: int, what: str = "revision") -> int:
    if not 0 <= revision <= MAX_REVISION:
        raise KVBadRequestError(f"{what} must be in 0..2^63-1")
    return revision


# -- key ranges ------------------------------------------------------------------------------


class KeySpan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Which keys: one ``key``; or every key under ``prefix`` (from
    ``start`` on, if given: how a listing continues); or ``[start, end)``
    (``end`` absent: to the last key)."""

    key: str | None = None
    prefix: str | None = None
    start: str | None = None
    end: str | None = None

    def bounds(self) -> tuple[bytes, bytes | None]:
        """``(key, range_end)`` as the store takes them (None: one key)."""
        if self.key is not None:
            if self.prefix is not None or self.start is not None or self.end is not None:
                raise KVBadRequestError("key names one key: no prefix, start or end with it")
            return key_bytes(self.key), None
        start = key_bytes(self.start, "start") if self.start else b"\x00"
        if self.prefix is not None:
            if self.end is not None:
                raise KVBadRequestError("give prefix or end, not both")
            if self.prefix == "":
                return start, TO_END
            p = key_bytes(self.prefix, "prefix")
            return max(p, start), prefix_end(p)
        if self.start is None and self.end is None:
            raise KVBadRequestError("give key, prefix, or start (and end)")
        end = key_bytes(self.end, "end") if self.end else TO_END
        if end != TO_END and end <= start:
            raise KVBadRequestError("end must come after start")
        return start, end


# -- transactions ----------------------------------------------------------------------------


class TxnCompare(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``key``'s ``target`` compared with ``value`` (a string for the value
    target, an integer for the others; a missing key has 0 for each)."""

    key: str
    target: Literal["value", "version", "create_revision", "mod_revision", "lease"]
    op: Literal["=", "!=", "<", ">"]
    value: str | int


class TxnPut(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    key: str
    value: str
    lease: int = 0
    prev_kv: bool = False


class TxnDelete(KeySpan, frozen=True, kw_only=True):
    prev_kv: bool = False


class TxnRange(KeySpan, frozen=True, kw_only=True):
    revision: int = 0
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False


class TxnRequestOp(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """One operation of a branch: exactly one of ``put``, ``delete``, ``range``."""

    put: TxnPut | None = None
    delete: TxnDelete | None = None
    range: TxnRange | None = None


class TxnRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """If every ``compare`` holds, ``success`` runs, else ``failure``; at one
    revision.  Session fields make it idempotent, like any write."""

    compare: list[TxnCompare] = []
    success: list[TxnRequestOp] = []
    failure: list[TxnRequestOp] = []
    session: int | None = None
    seq: int | None = None
    lowest_pending: int | None = None


def compare_op(c: TxnCompare) -> Compare:
    if c.target == "value":
        if not isinstance(c.value, str):
            raise KVBadRequestError("a value compare needs a string")
        return Compare(key_bytes(c.key), "value", c.op, c.value.encode())
    if not isinstance(c.value, int) or isinstance(c.value, bool):
        raise KVBadRequestError(f"a {c.target} compare needs an integer")
    return Compare(key_bytes(c.key), c.target, c.op, c.value)


def txn_op(o: TxnRequestOp, max_value: int) -> TxnOp:
    given = [x for x in (o.put, o.delete, o.range) if x is not None]
    if len(given) != 1:
        raise KVBadRequestError("each txn operation is one of put, delete or range")
    if o.put is not None:
        return put_op(o.put.key, o.put.value, max_value, o.put.lease, o.put.prev_kv)
    if o.delete is not None:
        key, end = o.delete.bounds()
        return DeleteRange(key, end, o.delete.prev_kv)
    r = o.range
    assert r is not None
    return range_op(r, r.revision, r.limit, r.keys_only, r.count_only)


def put_op(key: str, value: str, max_value: int, lease: int = 0, prev_kv: bool = False) -> Put:
    v = value.encode()
    if len(v) > max_value:
        raise KVTooLargeError(f"value larger than {max_value} bytes")
    if not 0 <= lease <= MAX_REVISION:
        raise KVBadRequestError("lease must be a lease id (0: none)")
    return Put(key_bytes(key), v, lease, prev_kv)


def range_op(span: KeySpan, revision: int, limit: int, keys_only: bool, count_only: bool) -> Range:
    key, end = span.bounds()
    check_revision(revision)
    if not 0 <= limit <= MAX_LIMIT:
        raise KVBadRequestError(f"limit must be in 0..{MAX_LIMIT} (0: the most, {MAX_LIMIT})")
    return Range(key, end, revision, limit or MAX_LIMIT, keys_only, count_only)


# -- results -------------------------------------------------------------------------------


class Written(msgspec.Struct, frozen=True):
    """A write applied at store ``revision``; ``prev`` is what it replaced."""

    revision: int
    prev: Item | None


class Page(msgspec.Struct, frozen=True, omit_defaults=True):
    """A range's keys.  ``count`` is every key in the range at ``read_revision``;
    ``next`` (absent when done) is the ``start`` that continues it, to be
    read at the same ``read_revision`` for one consistent listing.
    ``revision`` is the store's revision when it was read."""

    items: list[Item]
    revision: int
    count: int = 0
    read_revision: int = 0
    next: str | None = None


def page(res: RangeResult, read_revision: int) -> Page:
    nxt = text(res.next_key) if res.more and res.next_key is not None else None
    return Page([item(kv) for kv in res.kvs], res.revision, res.count, read_revision, nxt)


class TxnOpResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """One operation's result: the field of its kind."""

    put: Written | None = None
    delete: Deleted | None = None
    range: Page | None = None


class Deleted(msgspec.Struct, frozen=True, omit_defaults=True):
    revision: int
    deleted: int
    prev: list[Item] = []


class TxnResponse(msgspec.Struct, frozen=True):
    succeeded: bool
    revision: int
    results: list[TxnOpResult]


def txn_response(res: TxnResult) -> TxnResponse:
    out = []
    for r in res.results:
        if isinstance(r, PutResult):
            out.append(TxnOpResult(put=Written(r.revision, item_or_none(r.prev_kv))))
        elif isinstance(r, DeleteResult):
            prev = [item(kv) for kv in r.prev_kvs]
            out.append(TxnOpResult(delete=Deleted(r.revision, r.deleted, prev)))
        elif isinstance(r, RangeResult):
            out.append(TxnOpResult(range=page(r, 0)))
        # (A nested txn's result: the /v1 API takes no nested txn.)
    return TxnResponse(res.succeeded, res.revision, out)
