"""GET /v1/kv as a range (docs/kv.md, "HTTP API" and "Revisions"): prefix,
start/end, historical reads, keys_only, count_only, paging at one
read_revision while writes go on, and the errors of a compacted or future
revision.  One 3-node cluster for the module; each test uses its own keys."""

from __future__ import annotations

from typing import Any

import pytest

from tests.kv.coord import module_api, put
from tests.kv.test_api import Api

pytestmark = pytest.mark.asyncio(loop_scope="module")
api = module_api()


def keys(body: dict[str, Any]) -> list[str]:
    return [i["key"] for i in body["items"]]


async def test_prefix_and_start_end_select_exactly_their_keys(api: Api) -> None:
    f = await api.follower_id()
    for k in ("r1/a", "r1/b", "r1/c", "r1a", "r0"):
        await put(api, f, k, k.upper())
    st, body, _ = await api.call(f, "GET", "/v1/kv?prefix=r1/")
    assert st == 200 and keys(body) == ["r1/a", "r1/b", "r1/c"] and body["count"] == 3
    assert "next" not in body
    st, body, _ = await api.call(f, "GET", "/v1/kv?start=r1/b&end=r1a")
    assert st == 200 and keys(body) == ["r1/b", "r1/c"]  # end excluded
    st, body, _ = await api.call(f, "GET", "/v1/kv?start=r1/c")  # no end: to the last key
    assert keys(body)[:2] == ["r1/c", "r1a"]
    item = next(i for i in body["items"] if i["key"] == "r1a")
    assert set(item) == {"key", "value", "revision", "create_revision", "version"}


async def test_a_revision_reads_the_past_after_later_writes(api: Api) -> None:
    ld = await api.leader_id()
    r1 = await put(api, ld, "hist/k", "one")
    r2 = await put(api, ld, "hist/k", "two")
    await put(api, ld, "hist/new", "later")
    st, _, _ = await api.call(ld, "DELETE", "/v1/kv/hist/k")
    assert st == 200
    st, body, _ = await api.call(ld, "GET", f"/v1/kv?prefix=hist/&revision={r1}")
    assert st == 200 and [(i["key"], i["value"], i["version"]) for i in body["items"]] == [
        ("hist/k", "one", 1)
    ]
    assert body["read_revision"] == r1 and body["revision"] > r2  # the store's, now
    st, body, _ = await api.call(ld, "GET", f"/v1/kv?prefix=hist/&revision={r2}")
    assert [(i["value"], i["revision"], i["create_revision"]) for i in body["items"]] == [
        ("two", r2, r1)
    ]
    st, body, _ = await api.call(ld, "GET", "/v1/kv?prefix=hist/")
    assert keys(body) == ["hist/new"]
    st, one, _ = await api.call(ld, "GET", f"/v1/kv/hist/k?revision={r1}")
    assert st == 200 and one["value"] == "one"


async def test_keys_only_and_count_only(api: Api) -> None:
    ld = await api.leader_id()
    for i in range(3):
        await put(api, ld, f"ko/{i}", "value")
    st, body, _ = await api.call(ld, "GET", "/v1/kv?prefix=ko/&keys_only=true")
    assert st == 200 and keys(body) == ["ko/0", "ko/1", "ko/2"]
    assert all(i["value"] == "" for i in body["items"]) and body["count"] == 3
    st, body, _ = await api.call(ld, "GET", "/v1/kv?prefix=ko/&count_only=true")
    assert st == 200 and body["items"] == [] and body["count"] == 3


async def test_paging_at_one_read_revision_stays_consistent_while_writes_happen(
    api: Api,
) -> None:
    ld = await api.leader_id()
    for i in range(7):
        await put(api, ld, f"pg/{i}", f"v{i}")
    st, body, _ = await api.call(ld, "GET", "/v1/kv?prefix=pg/&limit=3")
    assert st == 200 and keys(body) == ["pg/0", "pg/1", "pg/2"] and body["count"] == 7
    at, got = body["read_revision"], keys(body)
    # Between pages: a key changes, one is deleted, one is added.
    await put(api, ld, "pg/4", "changed")
    await api.call(ld, "DELETE", "/v1/kv/pg/5")
    await put(api, ld, "pg/45", "new")
    values = {i["key"]: i["value"] for i in body["items"]}
    while "next" in body:
        q = f"/v1/kv?prefix=pg/&limit=3&start={body['next']}&revision={at}"
        st, body, _ = await api.call(ld, "GET", q)
        assert st == 200 and body["read_revision"] == at
        got += keys(body)
        values |= {i["key"]: i["value"] for i in body["items"]}
    assert got == [f"pg/{i}" for i in range(7)]  # the listing as of `at`
    assert values["pg/4"] == "v4"
    st, body, _ = await api.call(ld, "GET", "/v1/kv?prefix=pg/")
    assert keys(body) == ["pg/0", "pg/1", "pg/2", "pg/3", "pg/4", "pg/45", "pg/6"]


async def test_a_compacted_revision_is_an_error_naming_the_compact_revision(api: Api) -> None:
    ld = await api.leader_id()
    old = await put(api, ld, "cmp/k", "old")
    now = await put(api, ld, "cmp/k", "new")
    st, body, _ = await api.call(ld, "POST", "/v1/compact", {"revision": now})
    assert st == 200 and body["compact_revision"] == now
    for nid in api.c.ids:  # every replica compacted at the same revision
        st, body, _ = await api.call(nid, "GET", f"/v1/kv?prefix=cmp/&revision={old}")
        assert st == 400 and body["error"] == "compacted", body
        assert body["compact_revision"] == now
    st, body, _ = await api.call(ld, "GET", f"/v1/kv/cmp/k?revision={old}")
    assert st == 400 and body["error"] == "compacted" and body["compact_revision"] == now
    st, body, _ = await api.call(ld, "GET", f"/v1/kv?prefix=cmp/&revision={now}")
    assert st == 200 and [i["value"] for i in body["items"]] == ["new"]
    st, body, _ = await api.call(ld, "POST", "/v1/compact", {"revision": old})
    assert st == 400 and body["error"] == "compacted"


async def test_a_future_revision_is_400(api: Api) -> None:
    ld = await api.leader_id()
    st, body, _ = await api.call(ld, "GET", "/v1/kv?prefix=x&revision=999999999")
    assert st == 400 and body["error"] == "future_revision" and body["current"] > 0
    st, body, _ = await api.call(ld, "GET", "/v1/kv/x?revision=999999999")
    assert st == 400 and body["error"] == "future_revision"
    for q in ("revision=-1", "revision=x", "limit=10001", "prefix=a&end=b", "start=b&end=a"):
        st, body, _ = await api.call(ld, "GET", f"/v1/kv?{q}")
        assert st == 400 and body["error"] == "bad_request", q
