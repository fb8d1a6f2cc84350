"""etcd's KV service through two etcd client libraries nobody on this team
wrote, against a 3-node liferaft-kv: etcd3gw (the JSON gateway on the
client port) and aetcd (asyncio gRPC); and the gateway's error bodies and
HTTP statuses, which etcd3gw and curl users see."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from typing import Any

import aetcd
import pytest
from aetcd import exceptions as aetcd_errors
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from tests.kv.procs import ProcCluster


def b64(s: bytes) -> str:
    return base64.b64encode(s).decode()


def gw_client(c: ProcCluster, node: str = "n2") -> Etcd3Client:
    host, port = c.nodes[node].client.rsplit(":", 1)
    return Etcd3Client(host=host, port=int(port), timeout=10)


def post(addr: str, path: str, body: dict[str, Any] | str) -> tuple[int, Any]:
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# -- etcd3gw --------------------------------------------------------------------------------


def test_etcd3gw_get_put_delete_prefix(etcd_cluster: ProcCluster) -> None:
    gw = gw_client(etcd_cluster)
    assert gw.put("gw/a", "1") is True
    assert gw.put("gw/b", "2") is True
    assert gw.get("gw/a") == [b"1"]
    got = gw.get_prefix("gw/")
    assert [(v, m["key"]) for v, m in got] == [(b"1", b"gw/a"), (b"2", b"gw/b")]
    assert [m["version"] for _, m in got] == ["1", "1"]  # the gateway's int64 as string
    assert gw.delete("gw/a") is True
    assert gw.delete("gw/a") is False  # nothing left to delete
    assert gw.get("gw/a") == []


def test_etcd3gw_create_and_replace_are_txns(etcd_cluster: ProcCluster) -> None:
    gw = gw_client(etcd_cluster, "n3")
    assert gw.create("gwt/k", "v1") is True
    assert gw.create("gwt/k", "other") is False  # create_revision is no longer 0
    assert gw.replace("gwt/k", "v1", "v2") is True
    assert gw.replace("gwt/k", "v1", "v3") is False  # the value is v2 now
    assert gw.get("gwt/k") == [b"v2"]
    # A raw txn with a nested one, through etcd3gw's own transaction().
    res = gw.transaction({
        "compare": [{"key": b64(b"gwt/k"), "result": "EQUAL", "target": "VALUE",
                     "value": b64(b"v2")}],
        "success": [{"request_txn": {"success": [{"request_range": {"key": b64(b"gwt/k")}}]}}],
    })  # fmt: skip
    inner = res["responses"][0]["response_txn"]
    assert res["succeeded"] is True and inner["succeeded"] is True
    assert inner["responses"][0]["response_range"]["kvs"][0]["value"] == b64(b"v2")


def test_etcd3gw_sees_etcds_error(etcd_cluster: ProcCluster) -> None:
    gw = gw_client(etcd_cluster)
    dup = {"success": [{"request_put": {"key": b64(b"gwe/x")}},
                       {"request_put": {"key": b64(b"gwe/x")}}]}  # fmt: skip
    with pytest.raises(Etcd3Exception) as ei:
        gw.transaction(dup)
    body = json.loads(ei.value.detail_text)
    assert body["error"] == "etcdserver: duplicate key given in txn request"
    assert body["code"] == 3  # INVALID_ARGUMENT


# -- the JSON gateway's errors ------------------------------------------------------------


def test_gateway_compacted_read_and_bad_requests(etcd_cluster: ProcCluster) -> None:
    addr = etcd_cluster.nodes["n1"].client
    first = post(addr, "/v3/kv/put", {"key": b64(b"gwc/k"), "value": b64(b"1")})[1]
    rev = int(first["header"]["revision"])
    now = int(post(addr, "/v3/kv/put", {"key": b64(b"gwc/k"), "value": b64(b"2")})[1]
              ["header"]["revision"])  # fmt: skip
    assert post(addr, "/v3/kv/compaction", {"revision": str(now)})[0] == 200
    status, body = post(addr, "/v3/kv/range", {"key": b64(b"gwc/k"), "revision": str(rev)})
    msg = "etcdserver: mvcc: required revision has been compacted"
    assert (status, body) == (400, {"error": msg, "message": msg, "code": 11})
    status, body = post(addr, "/v3/kv/put", {"key": ""})
    msg = "etcdserver: key is not provided"
    assert (status, body) == (400, {"error": msg, "message": msg, "code": 3})
    status, body = post(addr, "/v3/kv/put", {"key": b64(b"k"), "value": b64(b"v"),
                                             "ignore_value": True})  # fmt: skip
    assert (status, body["error"]) == (400, "etcdserver: value is provided")
    status, body = post(addr, "/v3/kv/range", '{"key": "')
    assert status == 400 and body["code"] == 3
    # A field this server does not know is skipped, as etcd's gateway does.
    status, body = post(addr, "/v3/kv/range", {"key": b64(b"gwc/k"), "fresh_field": 1})
    assert status == 200 and body["kvs"][0]["value"] == b64(b"2")


# -- aetcd ----------------------------------------------------------------------------------


def test_aetcd_kv_and_txn(etcd_cluster: ProcCluster) -> None:
    host, port = etcd_cluster.nodes["n3"].grpc.rsplit(":", 1)

    async def run() -> None:
        async with aetcd.Client(host=host, port=int(port), timeout=10) as c:
            first = await c.put(b"ae/a", b"1")
            again = await c.put(b"ae/a", b"2", prev_kv=True)
            assert again.header.revision == first.header.revision + 1
            assert again.prev_kv is not None and again.prev_kv.value == b"1"
            got = await c.get(b"ae/a")
            assert got is not None and (got.value, got.version) == (b"2", 2)
            assert await c.get(b"ae/none") is None
            await c.put(b"ae/b", b"3")
            prefix = await c.get_prefix(b"ae/")
            assert [(kv.key, kv.value) for kv in prefix] == [(b"ae/a", b"2"), (b"ae/b", b"3")]
            rng = await c.get_range(b"ae/a", b"ae/b")
            assert [kv.key for kv in rng] == [b"ae/a"]

            t = c.transactions
            ok, res = await c.transaction(
                compare=[t.value(b"ae/a") == b"2", t.version(b"ae/b") > 0,
                         t.create(b"ae/none") == 0, t.mod(b"ae/a") < 10**9],
                success=[t.put(b"ae/c", b"4"), t.get(b"ae/a")],
                failure=[t.put(b"ae/c", b"never")],
            )  # fmt: skip
            assert ok is True
            assert res[1][0][0] == b"2"  # the range's (value, metadata)
            ok, _ = await c.transaction(
                compare=[t.value(b"ae/a") != b"2"], success=[], failure=[t.delete(b"ae/b")]
            )
            assert ok is False and await c.get(b"ae/b") is None

            deleted = await c.delete(b"ae/c", prev_kv=True)
            assert deleted is not None and deleted.deleted == 1
            assert deleted.prev_kv is not None and deleted.prev_kv.value == b"4"
            with pytest.raises(aetcd_errors.InvalidArgumentError, match="duplicate key"):
                dup = [t.put(b"ae/x", b"1"), t.put(b"ae/x", b"2")]
                await c.transaction(compare=[], success=dup, failure=[])

    asyncio.run(run())
