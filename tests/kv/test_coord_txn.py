"""POST /v1/txn (docs/kv.md, "Transactions"): compares on every target with
every operator, both branches, range operations inside, a result per
operation, one revision for the whole transaction, the refusals, and a
session that makes a retried transaction apply once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.kv.coord import module_api, put
from tests.kv.test_api import Api

pytestmark = pytest.mark.asyncio(loop_scope="module")
api = module_api()


def cmp(key: str, target: str, op: str, value: Any) -> dict[str, Any]:
    return {"key": key, "target": target, "op": op, "value": value}


async def txn(api: Api, nid: str, body: dict[str, Any]) -> tuple[int, Any]:
    st, data, _ = await api.call(nid, "POST", "/v1/txn", body)
    return st, data


async def succeeds(api: Api, nid: str, compare: dict[str, Any]) -> bool:
    st, data = await txn(api, nid, {"compare": [compare]})
    assert st == 200, data
    ok: bool = data["succeeded"]
    return ok


async def test_every_compare_target_and_operator(api: Api) -> None:
    ld = await api.leader_id()
    st, lease, _ = await api.call(ld, "POST", "/v1/lease", {"ttl": 60})
    assert st == 200
    r1 = await put(api, ld, "t/k", "b")
    r2 = await put(api, ld, "t/k", "b", lease=lease["id"])  # version 2
    facts = {"value": "b", "version": 2, "create_revision": r1, "mod_revision": r2,
             "lease": lease["id"]}  # fmt: skip
    for target, v in facts.items():
        lo, hi = ("a", "c") if target == "value" else (v - 1, v + 1)
        table = [("=", v, True), ("=", lo, False), ("!=", lo, True), ("!=", v, False),
                 ("<", hi, True), ("<", v, False), (">", lo, True), (">", v, False)]  # fmt: skip
        for op, operand, want in table:
            got = await succeeds(api, ld, cmp("t/k", target, op, operand))
            assert got is want, (target, op, operand)
    # A missing key has version, revisions and lease 0 (etcd's rule).
    assert await succeeds(api, ld, cmp("t/absent", "version", "=", 0))
    assert await succeeds(api, ld, cmp("t/absent", "create_revision", "=", 0))
    assert not await succeeds(api, ld, cmp("t/absent", "version", ">", 0))
    await api.call(ld, "DELETE", f"/v1/lease/{lease['id']}")


async def test_branches_results_per_op_and_one_revision(api: Api) -> None:
    f = await api.follower_id()
    await put(api, f, "tb/a", "1")
    await put(api, f, "tb/b", "2")
    ops = [
        {"put": {"key": "tb/c", "value": "3"}},
        {"put": {"key": "tb/a", "value": "10", "prev_kv": True}},
        {"delete": {"key": "tb/b", "prev_kv": True}},
        {"range": {"prefix": "tb/"}},
    ]
    st, data = await txn(api, f, {"compare": [cmp("tb/a", "value", "=", "1")], "success": ops,
                                  "failure": [{"range": {"key": "tb/a"}}]})  # fmt: skip
    assert st == 200 and data["succeeded"] is True
    rev = data["revision"]
    put_c, put_a, dele, rng = data["results"]
    assert put_c == {"put": {"revision": rev, "prev": None}}
    assert put_a["put"]["revision"] == rev and put_a["put"]["prev"]["value"] == "1"
    assert dele["delete"]["revision"] == rev and dele["delete"]["deleted"] == 1
    assert [p["value"] for p in dele["delete"]["prev"]] == ["2"]
    # The range sees the transaction's own writes, all at its one revision.
    items = rng["range"]["items"]
    assert [(i["key"], i["value"], i["revision"]) for i in items] == [
        ("tb/a", "10", rev), ("tb/c", "3", rev)
    ]
    st, page, _ = await api.call(f, "GET", "/v1/kv?prefix=tb/")
    assert {i["revision"] for i in page["items"]} == {rev}
    # The same compare fails now: the failure branch runs, and changes nothing.
    st, data = await txn(api, f, {"compare": [cmp("tb/a", "value", "=", "1")], "success": ops,
                                  "failure": [{"range": {"key": "tb/a"}}]})  # fmt: skip
    assert st == 200 and data["succeeded"] is False and data["revision"] == rev
    assert [i["value"] for i in data["results"][0]["range"]["items"]] == ["10"]


async def test_delete_range_in_a_txn(api: Api) -> None:
    ld = await api.leader_id()
    for k in ("dr/a", "dr/b", "dr/c"):
        await put(api, ld, k, "x")
    st, data = await txn(api, ld, {"success": [{"delete": {"start": "dr/a", "end": "dr/c"}}]})
    assert st == 200 and data["results"][0]["delete"]["deleted"] == 2
    st, page, _ = await api.call(ld, "GET", "/v1/kv?prefix=dr/")
    assert [i["key"] for i in page["items"]] == ["dr/c"]


@pytest.mark.parametrize(
    "body",
    [
        {"success": [{"put": {"key": "dup", "value": "1"}}, {"put": {"key": "dup", "value": "2"}}]},
        {"success": [{"put": {"key": "dup", "value": "1"}}, {"delete": {"key": "dup"}}]},
        {"success": [{"put": {"key": f"m/{i}", "value": "v"}} for i in range(129)]},
        {"compare": [cmp("k", "version", "=", 0)] * 129},
        {"compare": [cmp("k", "value", "=", 1)]},
        {"compare": [cmp("k", "version", "=", "1")]},
        {"compare": [cmp("k", "size", "=", 1)]},
        {"compare": [cmp("k", "version", ">=", 1)]},
        {"success": [{}]},
        {"success": [{"put": {"key": "a", "value": "1"}, "delete": {"key": "a"}}]},
        {"success": [{"put": {"key": "", "value": "1"}}]},
        {"succes": []},
    ],
)
async def test_bad_transactions_are_refused_and_change_nothing(
    api: Api, body: dict[str, Any]
) -> None:
    ld = await api.leader_id()
    before = api.c.nodes[ld].status().last_log_index
    st, data = await txn(api, ld, body)
    assert st == 400 and data["error"] == "bad_request" and data["message"], data
    assert api.c.nodes[ld].status().last_log_index == before


async def test_128_operations_are_accepted(api: Api) -> None:
    ld = await api.leader_id()
    ops = [{"put": {"key": f"many/{i:03}", "value": "v"}} for i in range(128)]
    st, data = await txn(api, ld, {"success": ops})
    assert st == 200 and len(data["results"]) == 128


async def test_a_retried_session_txn_applies_once(api: Api) -> None:
    f = await api.follower_id()
    st, s, _ = await api.call(f, "POST", "/v1/sessions")
    assert st == 200
    body = {
        "compare": [cmp("once/n", "version", "=", 0)],
        "success": [{"put": {"key": "once/n", "value": "1"}}],
        "failure": [{"put": {"key": "once/n", "value": "again"}}],
        "session": s["session"], "seq": 1, "lowest_pending": 1,
    }
    first, second = await asyncio.gather(txn(api, f, body), txn(api, f, body))
    again = await txn(api, await api.leader_id(), body)
    assert first == second == again and first[0] == 200 and first[1]["succeeded"] is True
    st, item, _ = await api.call(f, "GET", "/v1/kv/once/n")
    assert item["value"] == "1" and item["version"] == 1
    # A different txn under the same seq is a conflict, not a silent replay.
    other = dict(body, success=[{"put": {"key": "once/m", "value": "x"}}])
    st, data = await txn(api, f, other)
    assert st == 409 and data["error"] == "seq_reused"
