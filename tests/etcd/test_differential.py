"""liferaft-kv against a real etcd 3.4, side by side (issue 16): the same
requests through the same gRPC stubs to both, answers compared field by
field (tests/etcd/differential.py says what is normalised and why).  Skips
without /usr/bin/etcd (Debian etcd-server; scripts/install-etcd.sh), as the
etcdctl tests do without etcdctl.

Each named case below is a divergence this comparison found once; the
seeded random sequence looks for new ones (run more seeds by hand with
``DIFF_SEEDS=0-50``)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from google.protobuf.message import Message

from liferaft.etcd.proto import rpc_pb2 as pb
from tests.etcd.differential import Gen, RealEtcd, Stubs, call, find_etcd, run
from tests.kv.procs import proc_cluster


@dataclass
class Pair:
    """A real etcd and liferaft-kv's leader: gRPC stubs and gateway addresses."""

    etcd: Stubs
    lr: Stubs
    etcd_http: str
    lr_http: str


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Both systems, empty at revision 1."""
    binary = find_etcd()
    root: Path = tmp_path_factory.mktemp("diff")
    with RealEtcd(binary, root) as etcd, proc_cluster(root / "lr", grpc=True) as c:
        c.start_cluster(3)
        leader = c.wait_leader()
        etcd.wait_ready()
        p = Pair(Stubs(etcd.addr), Stubs(c.nodes[leader].grpc), etcd.addr, c.nodes[leader].client)
        try:
            yield p
        finally:
            p.etcd.close()
            p.lr.close()


@pytest.fixture(scope="module")
def pair(both: Pair) -> tuple[Stubs, Stubs]:
    return both.etcd, both.lr


def _both(pair: tuple[Stubs, Stubs], stub: str, method: str, req: Message) -> tuple[Any, Any]:
    e, lr = pair
    return call(e, stub, method, req), call(lr, stub, method, req)


def _put(key: bytes, value: bytes = b"v", **kw: object) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, **kw))  # type: ignore[arg-type]


#: The revision the cases compact at (the random sequence goes on from it).
COMPACTED_AT = 3

# The cases run in this order on both systems; each names what differed.
CASES: list[tuple[str, str, str, Message]] = [
    ("seed keys", "kv", "Txn", pb.TxnRequest(success=[
        _put(b"n/a", b"3"), _put(b"n/b", b"1"), _put(b"n/c", b"2")])),
    # A lone put with ignore_value of an absent key and an unknown lease:
    # etcd looks the lease up first (a txn's put: the key first).
    ("put: lease before key", "kv", "Put",
     pb.PutRequest(key=b"n/none", lease=4242, ignore_value=True)),
    ("txn put: key before lease", "kv", "Txn", pb.TxnRequest(success=[
        _put(b"n/none", b"", lease=4242, ignore_value=True)])),
    # etcd checks a txn's range revisions on the branch it takes only.
    ("txn: future range on the branch not taken", "kv", "Txn", pb.TxnRequest(
        compare=[pb.Compare(key=b"n/a", target=pb.Compare.VALUE, value=b"3")],
        success=[_put(b"n/d")],
        failure=[pb.RequestOp(request_range=pb.RangeRequest(key=b"n/a", revision=10**6))])),
    ("txn: future range on the branch taken", "kv", "Txn", pb.TxnRequest(
        success=[pb.RequestOp(request_range=pb.RangeRequest(key=b"n/a", revision=10**6))])),
    # Each op's header: the revision before the txn until an op changed
    # something, nested txns included.
    ("txn: each op's revision", "kv", "Txn", pb.TxnRequest(success=[
        pb.RequestOp(request_range=pb.RangeRequest(key=b"n/a")),
        pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=b"n/zz")),
        pb.RequestOp(request_txn=pb.TxnRequest(success=[
            pb.RequestOp(request_range=pb.RangeRequest(key=b"n/b")),
            _put(b"n/e")])),
        pb.RequestOp(request_range=pb.RangeRequest(key=b"n/c"))])),
    ("read-only txn keeps the revision", "kv", "Txn", pb.TxnRequest(success=[
        pb.RequestOp(request_range=pb.RangeRequest(key=b"n/", range_end=b"n0"))])),
    # An empty range still has its revision checked.
    ("empty range at a future revision", "kv", "Range",
     pb.RangeRequest(key=b"n/b", range_end=b"n/a", revision=10**6)),
    ("delete of nothing keeps the revision", "kv", "DeleteRange",
     pb.DeleteRangeRequest(key=b"n/zz", prev_kv=True)),
    # keys_only drops the values after sorting by them.
    ("keys_only sorted by value", "kv", "Range", pb.RangeRequest(
        key=b"n/", range_end=b"n0", keys_only=True, sort_target=pb.RangeRequest.VALUE,
        sort_order=pb.RangeRequest.DESCEND)),
    ("compact", "kv", "Compact", pb.CompactionRequest(revision=COMPACTED_AT)),
    ("empty range at a compacted revision", "kv", "Range",
     pb.RangeRequest(key=b"n/b", range_end=b"n/a", revision=2)),
    ("range at the compaction itself", "kv", "Range", pb.RangeRequest(key=b"n/a", revision=3)),
    ("compact again below", "kv", "Compact", pb.CompactionRequest(revision=2)),
    ("compact in the future", "kv", "Compact", pb.CompactionRequest(revision=10**6)),
]  # fmt: skip


def test_named_divergences_answer_as_etcd(pair: tuple[Stubs, Stubs]) -> None:
    diffs = []
    for name, stub, method, req in CASES:
        a, b = _both(pair, stub, method, req)
        if a != b:
            diffs.append(f"{name}:\n  etcd:     {a}\n  liferaft: {b}")
    assert not diffs, "\n".join(diffs)


def _seeds() -> range:
    lo, _, hi = os.environ.get("DIFF_SEEDS", "1-4").partition("-")
    return range(int(lo), int(hi or lo) + 1)


def test_random_sequence_answers_as_etcd(pair: tuple[Stubs, Stubs]) -> None:
    """Seeded random Put/Range/DeleteRange/Txn/Compact/lease calls and
    watches (from past revisions, with filters and prev_kv) on both, in one
    sequence: every answer equal.  Runs after the named cases, from the
    store they left (both alike: their keys, under n/, are in some of its
    ranges)."""
    e, lr = pair
    rev = int(call(e, "kv", "Range", pb.RangeRequest(key=b"a"))[1]["header"]["revision"])
    g = Gen(0)
    g.rev, g.compact = rev, COMPACTED_AT
    diffs: list[str] = []
    steps = 0
    for seed in _seeds():
        g.r.seed(seed)
        for i, req, a, b in run(seed, 60, e, lr, g):
            steps += 1
            if a != b:
                text = text_format.MessageToString(req, as_one_line=True)
                diffs.append(f"seed {seed} step {i} {type(req).__name__} {text}\n"
                             f"  etcd:     {a}\n  liferaft: {b}")  # fmt: skip
        assert len(diffs) < 5, "\n".join(diffs)  # the first few say enough
    assert not diffs, "\n".join(diffs)
    assert steps > 100 and g.rev > rev + 20  # it did write, and compared


def _post(addr: str, path: str, body: object) -> tuple[int, object]:
    req = urllib.request.Request(
        f"http://{addr}{path}", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, text = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read()
    got = json.loads(text)
    if isinstance(got, dict):
        got.pop("header", None)  # the random sequence may have desynced them
    return status, got


# What a careless gateway client sends: each answered as etcd's gateway does.
GATEWAY_CASES: list[tuple[str, str, object]] = [
    ("a key not base64", "/v3/kv/put", {"key": "gw-raw", "value": "djE="}),
    ("base64 cut short", "/v3/kv/put", {"key": "Z3c=", "value": "YmF"}),
    ("url-safe base64", "/v3/kv/put", {"key": "Z3c=", "value": "Y-_h"}),
    ("a space in base64", "/v3/kv/range", {"key": "Z3 c="}),
    ("a newline in base64 is fine", "/v3/kv/put", {"key": "Z3c=", "value": "YmFy\n"}),
    ("an unknown enum name", "/v3/kv/range", {"key": "Z3c=", "sort_order": "SIDEWAYS"}),
    ("an unknown field is skipped", "/v3/kv/range", {"key": "Z3c=", "bogus": 1}),
    ("a nested bad compare target", "/v3/kv/txn",
     {"compare": [{"key": "Z3c=", "target": "VALU"}]}),
    ("lease granted", "/v3/lease/grant", {"ID": 7001, "TTL": 600}),
    ("FAILED_PRECONDITION is 412", "/v3/lease/grant", {"ID": 7001, "TTL": 600}),
    ("revoke", "/v3/lease/revoke", {"ID": 7001}),
]  # fmt: skip


def test_gateway_refuses_what_etcds_refuses(both: Pair) -> None:
    diffs = []
    for name, path, body in GATEWAY_CASES:
        a, b = _post(both.etcd_http, path, body), _post(both.lr_http, path, body)
        if a != b:
            diffs.append(f"{name}: {path} {body}\n  etcd:     {a}\n  liferaft: {b}")
    assert not diffs, "\n".join(diffs)
