"""The lease routes (docs/kv.md, "Leases"): grant (a TTL below the minimum
is raised, and the answer says so), keys put with a lease, keep-alives and
lookups through a follower, revoke and expiry deleting the keys at one
revision with watch events, keep-alives holding a lease well past its TTL, a
leader change restarting the TTL, and lease_not_found as a 404."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.kv.coord import module_api, put, watch
from tests.kv.test_api import Api

pytestmark = pytest.mark.asyncio(loop_scope="module")
api = module_api()


async def grant(api: Api, nid: str, ttl: int) -> dict[str, Any]:
    st, body, _ = await api.call(nid, "POST", "/v1/lease", {"ttl": ttl})
    assert st == 200, body
    got: dict[str, Any] = body
    return got


async def exists(api: Api, nid: str, key: str) -> bool:
    st, body, _ = await api.call(nid, "GET", f"/v1/kv/{key}")
    assert st in (200, 404), body
    return st == 200


async def test_grant_raises_a_short_ttl_to_the_minimum_and_says_so(api: Api) -> None:
    f = await api.follower_id()
    leases = api.services[f].leases
    saved, leases.min_ttl = leases.min_ttl, 5
    try:
        got = await grant(api, f, 1)
    finally:
        leases.min_ttl = saved
    assert set(got) == {"id", "ttl"} and got["ttl"] == 5 and got["id"] > 0
    assert (await grant(api, f, 60))["ttl"] == 60
    for bad in ({"ttl": 0}, {"ttl": -1}, {"ttl": "5"}, {"ttl": 5, "x": 1}, {}):
        st, body, _ = await api.call(f, "POST", "/v1/lease", bad)
        assert st == 400 and body["error"] == "bad_request", bad


async def _settled(api: Api, nid: str, method: str, path: str) -> tuple[int, Any]:
    """``path`` until it is not a 503: after a leadership change (an earlier
    test transfers it) the new leader's lease clock takes over on its next
    tick, and a client retries a retry-safe 503 as this does."""
    for _ in range(100):
        st, body, _ = await api.call(nid, method, path)
        if st != 503:
            break
        await asyncio.sleep(0.05)
    return st, body


async def test_put_keepalive_and_info_through_any_node(api: Api) -> None:
    ld = await api.leader_id()
    f = await api.follower_id()
    lease = (await grant(api, f, 30))["id"]
    await put(api, f, "ls/a", "1", lease=lease)
    await put(api, ld, "ls/b", "2", lease=lease)
    st, item, _ = await api.call(f, "GET", "/v1/kv/ls/a")
    assert item["lease"] == lease
    st, body = await _settled(api, f, "POST", f"/v1/lease/{lease}/keepalive")
    assert st == 200 and body == {"id": lease, "ttl": 30}  # forwarded to the leader
    for nid in api.c.ids:
        st, info = await _settled(api, nid, "GET", f"/v1/lease/{lease}?keys=true")
        assert st == 200 and info["id"] == lease and info["ttl"] == 30
        assert 25 < info["remaining"] <= 30 and sorted(info["keys"]) == ["ls/a", "ls/b"]
    st, info = await _settled(api, f, "GET", f"/v1/lease/{lease}")
    assert st == 200 and info.get("keys") is None
    st, body, _ = await api.call(f, "GET", "/v1/lease")
    assert {"id": lease, "ttl": 30} in body["leases"]


async def test_revoke_deletes_every_key_at_one_revision_with_watch_events(api: Api) -> None:
    ld = await api.leader_id()
    f = await api.follower_id()
    lease = (await grant(api, ld, 30))["id"]
    last = 0
    for k in ("rv/a", "rv/b", "rv/c"):
        last = await put(api, ld, k, "v", lease=lease)
    await put(api, ld, "rv/free", "v")
    s = await watch(api, f, f"prefix=rv/&start_revision={last + 2}")
    try:
        st, body, _ = await api.call(f, "DELETE", f"/v1/lease/{lease}")
        assert st == 200 and body["revision"] == last + 2
        (line,) = await s.events_until(last + 2)
        assert line["revision"] == last + 2
        assert [(e["type"], e["kv"]["key"]) for e in line["events"]] == [
            ("delete", "rv/a"), ("delete", "rv/b"), ("delete", "rv/c")
        ]
    finally:
        s.close()
    assert [await exists(api, f, k) for k in ("rv/a", "rv/free")] == [False, True]


async def test_an_unkept_lease_expires_and_its_keys_go(api: Api) -> None:
    ld = await api.leader_id()
    lease = await grant(api, ld, 1)
    rev = await put(api, ld, "ex/k", "v", lease=lease["id"])
    s = await watch(api, ld, f"key=ex/k&start_revision={rev + 1}")
    try:
        (line,) = await s.events_until(rev + 1, timeout=10)  # TTL 1 s, bounded wait
        assert line["events"][0]["type"] == "delete"
    finally:
        s.close()
    for nid in api.c.ids:
        st, body, _ = await api.call(nid, "GET", f"/v1/lease/{lease['id']}")
        assert st == 404 and body["error"] == "lease_not_found"


async def test_keepalives_hold_a_lease_well_past_its_ttl(api: Api) -> None:
    f = await api.follower_id()
    lease = await grant(api, f, 1)
    await put(api, f, "ka/k", "v", lease=lease["id"])
    loop = asyncio.get_running_loop()
    end = loop.time() + 3  # three TTLs
    while loop.time() < end:
        st, body, _ = await api.call(f, "POST", f"/v1/lease/{lease['id']}/keepalive")
        assert st == 200, body
        await asyncio.sleep(0.2)
    assert await exists(api, f, "ka/k")
    await api.call(f, "DELETE", f"/v1/lease/{lease['id']}")


async def test_a_leader_change_restarts_the_ttl(api: Api) -> None:
    old = await api.leader_id()
    lease = await grant(api, old, 3)
    await put(api, old, "lc/k", "v", lease=lease["id"])
    await asyncio.sleep(1.5)  # half the TTL gone on the old leader's clock
    st, info, _ = await api.call(old, "GET", f"/v1/lease/{lease['id']}")
    assert info["remaining"] < 2
    to = next(n for n in api.c.ids if n != old)
    st, body, _ = await api.call(old, "POST", "/v1/leader/transfer", {"to": to})
    assert st == 200, body
    for _ in range(100):  # the new leader's clock starts once it led a moment
        st, info, _ = await api.call(to, "GET", f"/v1/lease/{lease['id']}")
        if st == 200:
            break
        await asyncio.sleep(0.05)
    assert st == 200 and info["remaining"] > 2, info  # restarted at the full TTL
    await asyncio.sleep(2)  # past the old leader's deadline: not expired early
    assert await exists(api, to, "lc/k")
    await api.call(to, "DELETE", f"/v1/lease/{lease['id']}")


async def test_unknown_leases_are_404_lease_not_found(api: Api) -> None:
    ld = await api.leader_id()
    f = await api.follower_id()
    unknown = 987654321
    for nid in (ld, f):
        for method, path in (("POST", f"/v1/lease/{unknown}/keepalive"),
                             ("DELETE", f"/v1/lease/{unknown}"),
                             ("GET", f"/v1/lease/{unknown}")):  # fmt: skip
            st, body, _ = await api.call(nid, method, path)
            assert st == 404 and body["error"] == "lease_not_found", (nid, method, body)
        st, body, _ = await api.call(nid, "PUT", "/v1/kv/nl/k", {"value": "v", "lease": unknown})
        assert st == 404 and body["error"] == "lease_not_found", body
        st, body, _ = await api.call(nid, "POST", "/v1/txn", {
            "success": [{"put": {"key": "nl/k", "value": "v", "lease": unknown}}]})
        assert st == 404 and body["error"] == "lease_not_found", body
    assert not await exists(api, ld, "nl/k")
    st, body, _ = await api.call(f, "POST", "/v1/lease/abc/keepalive")
    assert st == 400 and body["error"] == "bad_request"
