"""etcd's KV rules without processes: the Txn checks the etcd front makes
before proposing (etcd 3.4's texts), the store's nested txns, range
compares and ignore_value/ignore_lease at apply, the entry encoding of the
new fields, and the "too many requests" apply-gap check."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from liferaft.etcd import errors, load, txn
from liferaft.etcd.kv import put_op, range_op, range_response
from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.kv.mvcc.codec import Write, decode_command, encode_command
from liferaft.kv.mvcc.ops import (
    Compare,
    DeleteRange,
    KeyNotFoundError,
    KeyValue,
    MVCCEntry,
    Put,
    Range,
    RangeResult,
    Txn,
    TxnResult,
)
from liferaft.kv.mvcc.store import MVCCStore

C = pb.Compare


def put(key: bytes, value: bytes = b"", **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))


def get(key: bytes, **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key, **kw))


def dele(key: bytes, **kw: Any) -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key, **kw))


def nested(compare: Any = (), success: Any = (), failure: Any = ()) -> pb.RequestOp:
    return pb.RequestOp(request_txn=tx(compare, success, failure))


def tx(compare: Any = (), success: Any = (), failure: Any = ()) -> pb.TxnRequest:
    return pb.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))


CTX: Any = SimpleNamespace(service=SimpleNamespace(max_value=1 << 20))


def refused(r: pb.TxnRequest) -> str:
    with pytest.raises(errors.EtcdError) as ei:
        txn.txn_op(CTX, r)
    assert ei.value.code == errors.Code.INVALID_ARGUMENT
    return ei.value.message


# -- etcd's checks before proposing ------------------------------------------------------


def test_txn_op_budget_is_etcds_128_shared_with_nested_txns() -> None:
    many = "etcdserver: too many operations in txn request"
    assert refused(tx(success=[get(b"k")] * 129)) == many
    assert refused(tx([C(key=b"k")] * 129)) == many
    txn.txn_op(CTX, tx(success=[get(b"k")] * 128))
    # A nested txn gets what its parent's widest list left: 128 - 101 = 27.
    txn.txn_op(CTX, tx(success=[get(b"k")] * 100 + [nested(success=[get(b"k")] * 27)]))
    assert refused(tx(success=[get(b"k")] * 100 + [nested(success=[get(b"k")] * 28)])) == many


def test_txn_empty_keys_and_empty_ops_get_etcds_errors() -> None:
    assert refused(tx([C(key=b"")])) == "etcdserver: key is not provided"
    assert refused(tx(success=[put(b"")])) == "etcdserver: key is not provided"
    assert refused(tx(failure=[dele(b"")])) == "etcdserver: key is not provided"
    assert refused(tx(success=[nested(success=[get(b"")])])) == "etcdserver: key is not provided"
    assert refused(tx(success=[pb.RequestOp()])) == "etcdserver: key not found"
    assert refused(tx(success=[put(b"k", b"v", ignore_value=True)])) == (
        "etcdserver: value is provided"
    )
    assert refused(tx(success=[put(b"k", lease=5, ignore_lease=True)])) == (
        "etcdserver: lease is provided"
    )


@pytest.mark.parametrize(
    "branch",
    [
        [put(b"a"), put(b"a")],
        [dele(b"a", range_end=b"b"), put(b"a1")],
        [dele(b"a"), put(b"a")],
        [dele(b"a", range_end=b"\x00"), put(b"zz")],
        [put(b"a"), nested(success=[put(b"a")])],
        [dele(b"a", range_end=b"c"), nested(failure=[put(b"b")])],
        [nested(success=[put(b"q")]), nested(failure=[put(b"q")])],
        [nested(success=[dele(b"z")]), nested(success=[put(b"z")])],
        [nested(success=[nested(success=[put(b"x")])]), put(b"x")],
    ],
)
def test_duplicate_keys_in_a_branch_nested_ones_included(branch: list[pb.RequestOp]) -> None:
    assert refused(tx(success=branch)) == "etcdserver: duplicate key given in txn request"
    assert refused(tx(failure=branch)) == "etcdserver: duplicate key given in txn request"


@pytest.mark.parametrize(
    "branch",
    [
        [put(b"a"), dele(b"b"), dele(b"b", range_end=b"c")],  # deletes may overlap
        [nested(success=[put(b"q", b"t")], failure=[put(b"q", b"e")])],  # one branch runs
        [nested(success=[put(b"z2")]), nested(success=[dele(b"z2")])],  # etcd's order
        [put(b"a")],
    ],
)
def test_what_etcd_accepts_is_accepted(branch: list[pb.RequestOp]) -> None:
    txn.txn_op(CTX, tx(success=branch, failure=[put(b"a")]))


def test_compare_maps_every_target_and_result() -> None:
    got = txn.compare(C(key=b"k", target=C.MOD, result=C.GREATER, mod_revision=7))
    assert got == Compare(b"k", "mod_revision", ">", 7)
    got = txn.compare(C(key=b"k", target=C.VALUE, result=C.NOT_EQUAL, value=b"v",
                        range_end=b"\x00"))  # fmt: skip
    assert got == Compare(b"k", "value", "!=", b"v", b"\x00")
    assert txn.compare(C(key=b"k", target=C.LEASE, result=C.LESS, lease=3)).op == "<"
    assert txn.compare(C(key=b"k", target=C.CREATE, create_revision=2)).target == (
        "create_revision"
    )
    # etcd reads the target's own field only: another one set compares with zero.
    assert txn.compare(C(key=b"k", target=C.VERSION, value=b"1")).operand == 0


def test_txns_nest_at_most_seven_deep() -> None:
    deep = tx(success=[put(b"x")])
    for _ in range(6):
        deep = tx(success=[pb.RequestOp(request_txn=deep)])
    txn.txn_op(CTX, deep)  # 7 deep
    assert "7 deep" in refused(tx(success=[pb.RequestOp(request_txn=deep)]))


# -- the store ------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s: Any = MVCCStore(tmp_path / "db")
    index = iter(range(1, 10**6))
    s.do = lambda op: s.apply_batch([MVCCEntry(next(index), op)])[0]
    yield s
    s.close()


def read(store: Any, key: bytes) -> KeyValue | None:
    with store.read() as view:
        kv: KeyValue | None = view.get(key)
        return kv


def test_nested_compares_see_the_store_before_the_txn(store: Any) -> None:
    store.do(Put(b"a", b"1"))
    inner = Txn((Compare(b"a", "value", "=", b"1"),), (Put(b"b", b"then"),), (Put(b"b", b"else"),))
    res = store.do(Txn((), (Put(b"a", b"2"), inner, Range(b"a"))))
    assert isinstance(res, TxnResult) and res.succeeded
    # The nested compare saw a=1 (before the txn), not the txn's own put.
    assert read(store, b"b").value == b"then"  # type: ignore[union-attr]
    inner_res = res.results[1]
    assert isinstance(inner_res, TxnResult) and inner_res.succeeded
    # One revision for all of it, and the txn's range sees its earlier put.
    assert res.revision == 3 and inner_res.results[0].revision == 3
    rng = res.results[2]
    assert isinstance(rng, RangeResult) and rng.kvs[0].value == b"2"


def test_a_refused_nested_put_leaves_the_whole_txn_unapplied(store: Any) -> None:
    store.do(Put(b"a", b"1"))
    inner = Txn((), (Put(b"gone", b"", ignore_value=True),))
    res = store.do(Txn((), (Put(b"c", b"x"), inner)))
    assert isinstance(res, KeyNotFoundError)
    assert read(store, b"c") is None and store.revision() == 2
    assert errors.etcd_error(res) is errors.KEY_NOT_FOUND


def test_compare_over_a_range_holds_for_every_key_or_none(store: Any) -> None:
    for k, v in ((b"r/a", b"1"), (b"r/b", b"2")):
        store.do(Put(k, v))

    def holds(c: Compare) -> bool:
        res = store.do(Txn((c,), (Range(b"r/a"),)))
        assert isinstance(res, TxnResult)
        return res.succeeded

    assert holds(Compare(b"r/", "version", "=", 1, b"r0"))
    assert not holds(Compare(b"r/", "value", "=", b"1", b"r0"))  # r/b fails it
    assert holds(Compare(b"r/", "value", "<", b"3", b"r0"))
    assert holds(Compare(b"r/b", "create_revision", ">", 2, b"\x00"))  # from r/b on
    assert not holds(Compare(b"r/a", "create_revision", ">", 2, b"\x00"))
    # An empty range is a missing key: a value compare fails, others see zeros.
    assert not holds(Compare(b"x/", "value", "!=", b"z", b"x0"))
    assert holds(Compare(b"x/", "mod_revision", "=", 0, b"x0"))
    store.do(DeleteRange(b"r/b"))
    assert holds(Compare(b"r/", "value", "=", b"1", b"r0"))  # deleted keys do not count


def test_ignore_value_and_lease_take_the_keys_own_at_apply(store: Any) -> None:
    assert isinstance(store.do(Put(b"k", b"", ignore_value=True)), KeyNotFoundError)
    assert isinstance(store.do(Put(b"k", b"v", ignore_lease=True)), KeyNotFoundError)
    assert store.revision() == 1  # nothing written (a new store is at revision 1)
    store.do(Put(b"k", b"v1"))
    store.do(Put(b"k", b"", ignore_value=True))
    kv = read(store, b"k")
    assert kv is not None and (kv.value, kv.version) == (b"v1", 2)
    store.do(Put(b"k", b"v2", ignore_lease=True))
    kv = read(store, b"k")
    assert kv is not None and (kv.value, kv.lease, kv.version) == (b"v2", 0, 3)


def test_new_fields_keep_old_entries_decoding_alike() -> None:
    # An entry without the new fields is byte for byte what the first build wrote.
    old = encode_command(Write(Txn((Compare(b"k", "version", "=", 0),), (Put(b"k", b"v"),))))
    assert b"ignore_value" not in old and b"range_end" not in old
    assert decode_command(old) == Write(
        Txn((Compare(b"k", "version", "=", 0, None),), (Put(b"k", b"v", 0, False, False, False),))
    )
    new = Write(Txn((), (Put(b"k", b"", ignore_value=True), Txn((), (Range(b"k"),)))))
    assert decode_command(encode_command(new)) == new
    # A txn as deep as allowed fits the codec's nesting bound.
    deep: Txn = Txn((Compare(b"k", "version", "=", 0),), (Put(b"k", b"v"),))
    for _ in range(6):
        deep = Txn((Compare(b"k", "version", "=", 0),), (deep,))
    assert decode_command(encode_command(Write(deep))) == Write(deep)
    assert msgspec.msgpack.encode(Put(b"k", b"v")) == msgspec.msgpack.encode(
        Put(b"k", b"v", ignore_value=False)
    )


# -- Range as etcd 3.4 answers -------------------------------------------------------------


def test_range_sort_target_without_order_sorts_limit_plus_one_keys() -> None:
    r = pb.RangeRequest(key=b"s/", range_end=b"s0", limit=2, sort_target=pb.RangeRequest.MOD)
    op = range_op(r)
    assert op is not None and op.limit == 3  # etcd reads one more, for `more`
    kvs = tuple(KeyValue(k, 1, m, 1, b"") for k, m in ((b"s/a", 20), (b"s/b", 19), (b"s/c", 17)))
    out = range_response(r, RangeResult(21, kvs, 4, True))
    assert [kv.key for kv in out.kvs] == [b"s/c", b"s/b"] and out.more and out.count == 4
    ordered = pb.RangeRequest(key=b"s/", range_end=b"s0", limit=2, sort_order=1)  # ASCEND
    assert range_op(ordered).limit == 0  # type: ignore[union-attr]
    neg = range_op(pb.RangeRequest(key=b"s/", limit=-1, revision=-5))
    assert neg is not None and (neg.limit, neg.revision) == (0, 0)


def test_put_flags_reach_the_store_op() -> None:
    op = put_op(CTX, pb.PutRequest(key=b"k", ignore_value=True, ignore_lease=True))
    assert op == Put(b"k", b"", 0, False, True, True)
    with pytest.raises(errors.EtcdError) as ei:
        put_op(CTX, pb.PutRequest(key=b"k", value=b"v", ignore_value=True))
    assert ei.value is errors.VALUE_PROVIDED
    with pytest.raises(errors.EtcdError) as ei:
        put_op(CTX, pb.PutRequest(key=b"k", lease=9, ignore_lease=True))
    assert ei.value is errors.LEASE_PROVIDED


# -- too many requests ---------------------------------------------------------------------


def fake_node(committed: int, applied: int) -> Any:
    log = SimpleNamespace(committed=committed)
    return SimpleNamespace(rn=SimpleNamespace(raft=SimpleNamespace(log=log)), applied=applied)


def test_too_many_requests_past_etcds_apply_gap() -> None:
    load.check_load(fake_node(5000 + 10, 10))  # at the bound: served
    with pytest.raises(errors.EtcdError) as ei:
        load.check_load(fake_node(5000 + 11, 10))
    e = ei.value
    assert (e.code, e.message, e.http_status) == (
        errors.Code.RESOURCE_EXHAUSTED, "etcdserver: too many requests", 429
    )  # fmt: skip
    load.check_load(SimpleNamespace(rn=None, applied=0))  # type: ignore[arg-type]


def test_an_overloaded_node_refuses_writes_before_proposing() -> None:
    proposed: list[Any] = []

    async def propose(cmd: Any) -> Any:
        proposed.append(cmd)
        raise AssertionError("proposed")

    svc = SimpleNamespace(node=fake_node(9000, 100), max_value=1 << 20, propose=propose)
    ctx: Any = SimpleNamespace(service=svc)
    from liferaft.etcd import kv

    calls = [
        kv.put(ctx, pb.PutRequest(key=b"k", value=b"v")),
        kv.delete_range(ctx, pb.DeleteRangeRequest(key=b"k")),
        txn.txn(ctx, tx(success=[put(b"k")])),
        kv.compact(ctx, pb.CompactionRequest(revision=1)),
        kv.range_(ctx, pb.RangeRequest(key=b"k")),
    ]
    for coro in calls:
        with pytest.raises(errors.EtcdError) as ei:
            asyncio.run(coro)
        assert ei.value is errors.TOO_MANY_REQUESTS
    assert proposed == []
