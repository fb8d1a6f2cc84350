"""etcd's KV service: Range, Put, DeleteRange, Txn and Compact over the
node's MVCC store.

The store already has etcd's model (liferaft/kv/mvcc/ops.py: bytes keys,
``range_end`` with ``"\\x00"`` meaning "to the end", revisions as etcd's),
so each call maps onto one store operation; what etcd does in its server
rather than its store (sorting, revision filters, ``limit`` after them) is
done here, in the same order as etcd's ``applierV3.Range``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from liferaft.kv.mvcc.codec import Write
from liferaft.kv.mvcc.ops import (
    MAX_KEY_BYTES,
    Compact,
    CompactResult,
    DeleteRange,
    DeleteResult,
    KeyValue,
    Put,
    PutResult,
    Range,
    RangeResult,
)
from liferaft.kv.mvcc.reader import check_read_revision

from . import errors
from .calls import Call
from .context import EtcdContext
from .load import check_load
from .proto import kv_pb2 as mvccpb
from .proto import rpc_pb2 as pb

RangeReq = pb.RangeRequest


def key_value(kv: KeyValue, keys_only: bool = False) -> mvccpb.KeyValue:
    """A store version as etcd's KeyValue (value left out for keys_only)."""
    return mvccpb.KeyValue(
        key=kv.key,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
        value=b"" if keys_only else kv.value,
        lease=kv.lease,
    )


def check_key(key: bytes) -> bytes:
    """etcd's rules for a request's key: present; and liferaft's store limit."""
    if not key:
        raise errors.EMPTY_KEY
    if len(key) > MAX_KEY_BYTES:
        raise errors.EtcdError(
            errors.Code.INVALID_ARGUMENT,
            f"etcdserver: key is {len(key)} bytes; liferaft-kv's limit is {MAX_KEY_BYTES}",
        )
    return key


def range_end(key: bytes, end: bytes) -> bytes | None:
    """A request's ``range_end`` as the store takes it (None: ``key`` alone)."""
    return end or None


def is_empty_range(key: bytes, end: bytes | None) -> bool:
    """``[key, end)`` holds no key (etcd answers an empty result)."""
    return end is not None and end != b"\x00" and end <= key


# -- Range ------------------------------------------------------------------------------

_SORT_KEYS: dict[int, Callable[[KeyValue], Any]] = {
    RangeReq.KEY: lambda kv: kv.key,
    RangeReq.VERSION: lambda kv: kv.version,
    RangeReq.CREATE: lambda kv: kv.create_revision,
    RangeReq.MOD: lambda kv: kv.mod_revision,
    RangeReq.VALUE: lambda kv: kv.value,
}


def _needs_all(r: pb.RangeRequest) -> bool:
    """etcd reads the whole range (no limit) when it sorts or filters."""
    return bool(
        r.sort_order != RangeReq.NONE
        or r.min_mod_revision
        or r.max_mod_revision
        or r.min_create_revision
        or r.max_create_revision
    )


def _filter(r: pb.RangeRequest, kvs: Sequence[KeyValue]) -> list[KeyValue]:
    out = list(kvs)
    if r.max_mod_revision:
        out = [kv for kv in out if kv.mod_revision <= r.max_mod_revision]
    if r.min_mod_revision:
        out = [kv for kv in out if kv.mod_revision >= r.min_mod_revision]
    if r.max_create_revision:
        out = [kv for kv in out if kv.create_revision <= r.max_create_revision]
    if r.min_create_revision:
        out = [kv for kv in out if kv.create_revision >= r.min_create_revision]
    return out


def _sort(r: pb.RangeRequest, kvs: list[KeyValue]) -> list[KeyValue]:
    order = r.sort_order
    if r.sort_target != RangeReq.KEY and order == RangeReq.NONE:
        # The store answers in key order; another target means ascending.
        order = RangeReq.ASCEND
    if order == RangeReq.NONE:
        return kvs
    key = _SORT_KEYS.get(r.sort_target)
    if key is None:
        raise errors.EtcdError(errors.Code.INVALID_ARGUMENT, "etcdserver: unknown sort target")
    # Stable, by key first: ties keep key order, as etcd's sort.Stable.
    return sorted(kvs, key=key, reverse=order == RangeReq.DESCEND)


def range_response(r: pb.RangeRequest, res: RangeResult) -> pb.RangeResponse:
    """etcd's answer from the store's: filters, sort, then ``limit``."""
    kvs: Sequence[KeyValue] = _sort(r, _filter(r, res.kvs))
    more = res.more
    if r.limit > 0 and len(kvs) > r.limit:
        kvs, more = kvs[: r.limit], True
    out = pb.RangeResponse(more=more, count=res.count)
    out.kvs.extend(key_value(kv, r.keys_only) for kv in kvs)
    return out


def range_op(r: pb.RangeRequest) -> Range | None:
    """The store's read for ``r``; None when the range holds no key.

    As etcd 3.4's ``applierV3.Range``: a negative limit or revision means
    none (the current revision); a sort order or a revision filter reads the
    whole range; otherwise it reads ``limit + 1`` keys, for ``more``, and a
    sort target other than the key (with no order: ascending) sorts those,
    so the answer is the first ``limit`` of them (etcd's quirk, kept: a
    client sees what etcd would show it)."""
    key = check_key(r.key)
    end = range_end(key, r.range_end)
    if is_empty_range(key, end):
        return None
    limit = 0 if _needs_all(r) or r.limit <= 0 else r.limit + 1
    # etcd drops the values after sorting: a sort by value needs them.
    keys_only = r.keys_only and r.sort_target != RangeReq.VALUE
    return Range(key, end, max(r.revision, 0), limit, keys_only, r.count_only)


async def range_(ctx: EtcdContext, r: pb.RangeRequest) -> pb.RangeResponse:
    """Linearizable by default, as in etcd; ``serializable``: this node's
    applied store, with no read barrier."""
    op = range_op(r)
    svc = ctx.service
    if not r.serializable:
        check_load(svc.node)
    await svc.barrier("stale" if r.serializable else "linearizable")

    def read() -> tuple[pb.RangeResponse, int]:
        with svc.machine.read() as view:
            if op is None:
                # Nothing to read, but etcd still refuses the revision.
                check_read_revision(max(r.revision, 0), view.revision, view.compact_revision)
                res = RangeResult(view.revision)
            else:
                res = view.range(op)
        # Sorting and building the answer too: a range of 20,000 keys held
        # the event loop (every client, the node's heartbeats) for 300 ms.
        return range_response(r, res), res.revision

    # A range walks its span to count it: off the event loop.
    out, revision = await asyncio.to_thread(read)
    out.header.CopyFrom(ctx.header(revision))
    return out


# -- writes -----------------------------------------------------------------------------


def put_op(ctx: EtcdContext, r: pb.PutRequest) -> Put:
    """The store's put (etcd's ``checkPutRequest`` first).  ``ignore_value``
    and ``ignore_lease`` go into the entry: the store takes the key's value
    and lease as they are when it applies (KEY_NOT_FOUND if it is absent)."""
    key = check_key(r.key)
    if r.ignore_value and r.value:
        raise errors.VALUE_PROVIDED
    if r.ignore_lease and r.lease:
        raise errors.LEASE_PROVIDED
    if len(r.value) > ctx.service.max_value:
        raise errors.REQUEST_TOO_LARGE
    return Put(key, r.value, r.lease, prev_kv=r.prev_kv, ignore_value=r.ignore_value,
               ignore_lease=r.ignore_lease)  # fmt: skip


async def put(ctx: EtcdContext, r: pb.PutRequest) -> pb.PutResponse:
    op = put_op(ctx, r)
    check_load(ctx.service.node)
    res: PutResult = await ctx.service.propose(Write(op))
    out = pb.PutResponse(header=ctx.header(res.revision))
    if r.prev_kv and res.prev_kv is not None:
        out.prev_kv.CopyFrom(key_value(res.prev_kv))
    return out


def delete_op(r: pb.DeleteRangeRequest) -> DeleteRange | None:
    key = check_key(r.key)
    end = range_end(key, r.range_end)
    if is_empty_range(key, end):
        return None
    return DeleteRange(key, end, prev_kv=r.prev_kv)


async def delete_range(ctx: EtcdContext, r: pb.DeleteRangeRequest) -> pb.DeleteRangeResponse:
    op = delete_op(r)
    if op is None:
        return pb.DeleteRangeResponse(header=ctx.header())
    check_load(ctx.service.node)
    res: DeleteResult = await ctx.service.propose(Write(op))
    out = pb.DeleteRangeResponse(header=ctx.header(res.revision), deleted=res.deleted)
    if r.prev_kv:
        out.prev_kvs.extend(key_value(kv) for kv in res.prev_kvs)
    return out


async def compact(ctx: EtcdContext, r: pb.CompactionRequest) -> pb.CompactionResponse:
    """Moves the compact revision at once on every replica; the physical
    removal follows a few keys per applied entry (docs/kv.md), so
    ``physical`` changes nothing a client can observe and is accepted."""
    check_load(ctx.service.node)
    res: CompactResult = await ctx.service.propose(Compact(r.revision))
    return pb.CompactionResponse(header=ctx.header(res.revision))


CALLS = [
    Call("KV", "Range", pb.RangeRequest, pb.RangeResponse, range_, ("/v3/kv/range",)),
    Call("KV", "Put", pb.PutRequest, pb.PutResponse, put, ("/v3/kv/put",)),
    Call(
        "KV",
        "DeleteRange",
        pb.DeleteRangeRequest,
        pb.DeleteRangeResponse,
        delete_range,
        ("/v3/kv/deleterange",),
    ),  # fmt: skip
    Call(
        "KV",
        "Compact",
        pb.CompactionRequest,
        pb.CompactionResponse,
        compact,
        ("/v3/kv/compaction",),
    ),  # fmt: skip
]
