"""etcd's KV Txn: compares, success/failure ops and nested txns, as one
store :class:`~liferaft.kv.mvcc.ops.Txn` proposed through the log.

What etcd checks before proposing is checked here, with its messages
(``checkTxnRequest``, ``checkRequestOp``, ``checkIntervals``): at most 128
compares and 128 ops a branch, a nested txn sharing what its parent left
of that budget; no empty key; no empty op; no key put twice or put inside a
delete range in one branch, nested txns included.  What depends on the data
(a compare, a lease, ``ignore_value`` of an absent key, a compacted
revision) is decided by the store when the entry applies, atomically: every
compare on the path taken, nested ones too, against the store as it was
before the txn (etcd's rule), then the ops, at one revision.

Differences from etcd (docs/etcd.md, "KV"): a read-only txn goes through the
log too (etcd answers it from the member's store after a read barrier:
stronger here, and slower); the ranges of one txn return at most 10,000
keys and 64 MiB of values together, in op order, and a range's ``count``
is what it returned (reader.ReadBudget: they run in apply on every
replica); range compares spanning more than 20,000 keys together refuse
the txn; txns nest at most 7 deep and hold at most 4096 ops in all.
"""

from __future__ import annotations

from typing import Any

from liferaft.kv.errors import KVBadRequestError
from liferaft.kv.mvcc import ops as mvcc
from liferaft.kv.mvcc.codec import Write
from liferaft.kv.mvcc.ops import MAX_TXN_DEPTH, Compare, CompareOp, CompareTarget, Txn, TxnResult
from liferaft.kv.mvcc.writer import MAX_TXN_TOTAL_OPS, check_no_duplicate_keys

from . import errors, kv
from .calls import Call
from .context import EtcdContext
from .load import check_load
from .proto import rpc_pb2 as pb

#: etcd's default --max-txn-ops.
MAX_TXN_OPS = 128

_TARGETS: dict[int, tuple[CompareTarget, str]] = {
    pb.Compare.VERSION: ("version", "version"),
    pb.Compare.CREATE: ("create_revision", "create_revision"),
    pb.Compare.MOD: ("mod_revision", "mod_revision"),
    pb.Compare.VALUE: ("value", "value"),
    pb.Compare.LEASE: ("lease", "lease"),
}
_RESULTS: dict[int, CompareOp] = {
    pb.Compare.EQUAL: "=",
    pb.Compare.GREATER: ">",
    pb.Compare.LESS: "<",
    pb.Compare.NOT_EQUAL: "!=",
}


def _bad(message: str) -> errors.EtcdError:
    return errors.EtcdError(errors.Code.INVALID_ARGUMENT, message)


# -- etcd's checks, before anything is proposed -----------------------------------------


def check_txn(r: pb.TxnRequest, max_ops: int = MAX_TXN_OPS, depth: int = 1) -> int:
    """etcd's ``checkTxnRequest`` (and liferaft's depth bound); the number
    of ops in ``r`` and its nested txns."""
    if depth > MAX_TXN_DEPTH:
        raise _bad(f"etcdserver: liferaft-kv nests txns at most {MAX_TXN_DEPTH} deep")
    opc = max(len(r.compare), len(r.success), len(r.failure))
    if opc > max_ops:
        raise errors.TOO_MANY_OPS
    for c in r.compare:
        if not c.key:
            raise errors.EMPTY_KEY
    total = len(r.success) + len(r.failure)
    for op in (*r.success, *r.failure):
        total += _check_op(op, max_ops - opc, depth)
    return total


def _check_op(op: pb.RequestOp, max_ops: int, depth: int) -> int:
    """etcd's ``checkRequestOp``: the ops a nested txn holds (0 otherwise)."""
    which = op.WhichOneof("request")
    if which is None:
        raise errors.KEY_NOT_FOUND  # etcd's answer to an empty op
    if which == "request_txn":
        return check_txn(op.request_txn, max_ops, depth + 1)
    if which == "request_put":
        _check_put(op.request_put)
    elif not getattr(op, which).key:
        raise errors.EMPTY_KEY
    return 0


def _check_put(r: pb.PutRequest) -> None:
    """etcd's ``checkPutRequest``, in its order."""
    if not r.key:
        raise errors.EMPTY_KEY
    if r.ignore_value and r.value:
        raise errors.VALUE_PROVIDED
    if r.ignore_lease and r.lease:
        raise errors.LEASE_PROVIDED


# -- the store's txn --------------------------------------------------------------------


def compare(c: pb.Compare) -> Compare:
    """etcd's Compare as the store's.  The operand is the one of the
    target's own field (etcd reads only that one: another set, or none,
    compares against zero)."""
    if c.target not in _TARGETS or c.result not in _RESULTS:
        raise _bad("etcdserver: unknown compare target or result")
    target, field = _TARGETS[c.target]
    operand: bytes | int = getattr(c, field) if c.WhichOneof("target_union") == field else (
        b"" if target == "value" else 0
    )  # fmt: skip
    key = kv.check_key(c.key)
    return Compare(key, target, _RESULTS[c.result], operand, kv.range_end(key, c.range_end))


def store_op(ctx: EtcdContext, op: pb.RequestOp) -> mvcc.TxnOp:
    which = op.WhichOneof("request")
    if which == "request_put":
        return kv.put_op(ctx, op.request_put)
    if which == "request_delete_range":
        d = op.request_delete_range
        key = kv.check_key(d.key)
        return mvcc.DeleteRange(key, kv.range_end(key, d.range_end), prev_kv=d.prev_kv)
    if which == "request_range":
        return range_in_txn(op.request_range)
    assert which == "request_txn"
    return store_txn(ctx, op.request_txn)


def range_in_txn(r: pb.RangeRequest) -> mvcc.Range:
    """A txn's range, even an empty one (its answer keeps its place)."""
    op = kv.range_op(r)
    if op is not None:
        return op
    key = kv.check_key(r.key)
    return mvcc.Range(key, kv.range_end(key, r.range_end), r.revision, count_only=True)


def store_txn(ctx: EtcdContext, r: pb.TxnRequest) -> Txn:
    return Txn(
        tuple(compare(c) for c in r.compare),
        tuple(store_op(ctx, o) for o in r.success),
        tuple(store_op(ctx, o) for o in r.failure),
    )


def txn_op(ctx: EtcdContext, r: pb.TxnRequest) -> Txn:
    """The store's Txn for ``r``, after every check etcd makes first."""
    if check_txn(r) > MAX_TXN_TOTAL_OPS:
        raise _bad(f"etcdserver: liferaft-kv takes at most {MAX_TXN_TOTAL_OPS} ops in one txn")
    txn = store_txn(ctx, r)
    try:
        check_no_duplicate_keys(txn.success)
        check_no_duplicate_keys(txn.failure)
    except KVBadRequestError:
        raise errors.DUPLICATE_KEY from None
    return txn


# -- the answer -------------------------------------------------------------------------


def _changes(res: TxnResult) -> bool:
    """The ops the txn ran changed the store (a put, or a delete that
    deleted), nested txns included."""
    for got in res.results:
        if isinstance(got, mvcc.PutResult):
            return True
        if isinstance(got, mvcc.DeleteResult) and got.deleted:
            return True
        if isinstance(got, TxnResult) and _changes(got):
            return True
    return False


class _Revisions:
    """Each op's header revision, as etcd's write txn gives it: the revision
    before the txn until an op has changed something, the txn's own after
    (a put: always the txn's).  Walked in the order the ops ran."""

    def __init__(self, res: TxnResult) -> None:
        self.base = res.revision - 1 if _changes(res) else res.revision
        self.changed = False

    def after(self, got: Any) -> int:
        if isinstance(got, mvcc.PutResult) or (isinstance(got, mvcc.DeleteResult) and got.deleted):
            self.changed = True
        return self.base + 1 if self.changed else self.base


def txn_response(
    ctx: EtcdContext | None, r: pb.TxnRequest, res: TxnResult, revs: _Revisions | None = None
) -> pb.TxnResponse:
    """etcd's TxnResponse for the store's result: a ResponseOp per op of the
    branch taken.  The full header (``ctx``) goes on the outer answer only; a
    nested txn's is empty and its ops' carry the revision each saw
    (:class:`_Revisions`), as etcd's."""
    header = ctx.header(res.revision) if ctx is not None else pb.ResponseHeader()
    revs = revs or _Revisions(res)
    out = pb.TxnResponse(header=header, succeeded=res.succeeded)
    branch = r.success if res.succeeded else r.failure
    for op, got in zip(branch, res.results, strict=True):
        out.responses.append(_response_op(op, got, revs))
    return out


def _response_op(op: pb.RequestOp, got: Any, revs: _Revisions) -> pb.ResponseOp:
    which = op.WhichOneof("request")
    if which == "request_txn":
        assert isinstance(got, TxnResult)
        return pb.ResponseOp(response_txn=txn_response(None, op.request_txn, got, revs))
    head = pb.ResponseHeader(revision=revs.after(got))
    if which == "request_put":
        assert isinstance(got, mvcc.PutResult)
        put = pb.PutResponse(header=head)
        if got.prev_kv is not None:
            put.prev_kv.CopyFrom(kv.key_value(got.prev_kv))
        return pb.ResponseOp(response_put=put)
    if which == "request_delete_range":
        assert isinstance(got, mvcc.DeleteResult)
        d = pb.DeleteRangeResponse(header=head, deleted=got.deleted)
        d.prev_kvs.extend(kv.key_value(x) for x in got.prev_kvs)
        return pb.ResponseOp(response_delete_range=d)
    assert isinstance(got, mvcc.RangeResult)
    rr = op.request_range
    rng = kv.range_response(rr, got) if kv.range_op(rr) is not None else pb.RangeResponse()
    rng.header.CopyFrom(head)
    return pb.ResponseOp(response_range=rng)


async def txn(ctx: EtcdContext, r: pb.TxnRequest) -> pb.TxnResponse:
    op = txn_op(ctx, r)
    check_load(ctx.service.node)
    res: TxnResult = await ctx.service.propose(Write(op))
    return txn_response(ctx, r, res)


CALLS = [Call("KV", "Txn", pb.TxnRequest, pb.TxnResponse, txn, ("/v3/kv/txn",))]
