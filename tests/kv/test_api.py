"""The liferaft-kv HTTP API in one process: three real nodes over TCP on
127.0.0.1, each with its KVServer on its own port.  Status codes and JSON
shapes follow the table in docs/kv.md; bad input gets a clear 4xx and changes
nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from liferaft.chaos.cluster import free_ports
from liferaft.core import ChangeType, ConfChange, ConfChangeSingle
from liferaft.kv.hot_path import ClientRunner
from liferaft.kv.machine import KVMachine
from liferaft.kv.mvcc import Range
from liferaft.kv.server import KVServer
from liferaft.kv.service import KVService
from tests.runtime.cluster import TcpCluster


def free_port() -> int:
    return free_ports(1)[0]


class Api:
    """A 3-node cluster with an HTTP server per node."""

    def __init__(self, tmp: Path, **server_kw: Any) -> None:
        self.c = TcpCluster(tmp, 3, sm_at=KVMachine)
        self.kw = server_kw
        self.urls: dict[str, str] = {}
        self.servers: dict[str, KVServer] = {}
        self.services: dict[str, KVService] = {}
        self.runners: list[web.AppRunner] = []
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        await self.c.start()
        for nid, node in self.c.nodes.items():
            port = free_port()
            svc_kw = {k: v for k, v in self.kw.items() if k != "token"}
            svc = KVService(node, self.c.sms[nid], client_addr=f"127.0.0.1:{port}", **svc_kw)
            srv = KVServer(svc, token=self.kw.get("token"))
            runner = ClientRunner(srv.app())  # with the hot path, as serve runs it
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.runners.append(runner)
            self.servers[nid] = srv
            self.services[nid] = svc
            await svc.start()
            self.urls[nid] = f"http://127.0.0.1:{port}"
        self.http = aiohttp.ClientSession()
        await self.c.leader()
        # Each node puts its client address in the address book; let that
        # settle so the tests below see a quiet log.
        loop = asyncio.get_running_loop()
        end = loop.time() + 10
        while not all(
            all(m.get("client_addr") for m in n.members.values()) and len(n.members) == 3
            for n in self.c.nodes.values()
        ):
            assert loop.time() < end, "client addresses not announced"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        for r in self.runners:
            await r.cleanup()
        for svc in self.services.values():
            await svc.close()
        await self.c.stop()

    async def call(
        self, nid: str, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        assert self.http is not None
        kw: dict[str, Any] = {"headers": headers or {}}
        if raw is not None:
            kw["data"] = raw
        elif body is not None:
            kw["json"] = body
        async with self.http.request(method, self.urls[nid] + path, **kw) as r:
            data = await r.json(content_type=None)
            return r.status, data, r.headers

    async def leader_id(self) -> str:
        return (await self.c.leader()).id

    async def follower_id(self) -> str:
        ld = await self.leader_id()
        return next(n for n in self.c.ids if n != ld)


async def test_put_get_list_delete_with_the_contracted_shapes(api: Api) -> None:
    f = await api.follower_id()  # a follower forwards writes
    st, body, _ = await api.call(f, "PUT", "/v1/kv/dir/a%2Fb", {"value": "1"})
    assert st == 200 and set(body) == {"revision", "prev"} and body["prev"] is None
    rev = body["revision"]
    st, body, _ = await api.call(f, "PUT", "/v1/kv/dir/a%2Fb", {"value": "2"})
    assert st == 200 and body["prev"] == {
        "key": "dir/a/b", "value": "1", "revision": rev, "create_revision": rev, "version": 1
    }
    assert body["revision"] == rev + 1  # the store revision: one per change
    st, body, _ = await api.call(f, "GET", "/v1/kv/dir/a%2Fb")
    assert (st, body["key"], body["value"], body["version"]) == (200, "dir/a/b", "2", 2)
    await api.call(f, "PUT", "/v1/kv/dir/c", {"value": "3"})
    await api.call(f, "PUT", "/v1/kv/other", {"value": "4"})
    st, body, _ = await api.call(f, "GET", "/v1/kv?prefix=dir/&limit=10")
    assert st == 200 and [i["key"] for i in body["items"]] == ["dir/a/b", "dir/c"]
    assert body["revision"] >= body["items"][-1]["revision"]
    st, body, _ = await api.call(f, "DELETE", "/v1/kv/dir/c")
    assert st == 200 and body["prev"]["value"] == "3"
    st, body, _ = await api.call(f, "GET", "/v1/kv/dir/c")
    assert st == 404 and body["error"] == "not_found" and "message" in body
    st, body, _ = await api.call(f, "DELETE", "/v1/kv/dir/c")
    assert st == 404 and body["error"] == "not_found"


async def test_conditional_writes_answer_412_with_the_current_value(api: Api) -> None:
    ld = await api.leader_id()
    st, body, _ = await api.call(ld, "PUT", "/v1/kv/k", {"value": "v", "if_revision": 0})
    assert st == 200
    rev = body["revision"]
    st, body, _ = await api.call(ld, "PUT", "/v1/kv/k", {"value": "w", "if_revision": 0})
    assert st == 412 and body["error"] == "precondition_failed"
    assert body["current"] == {"value": "v", "revision": rev}
    st, body, _ = await api.call(ld, "PUT", "/v1/kv/k", {"value": "w", "if_value": "v"})
    assert st == 200
    st, body, _ = await api.call(ld, "DELETE", "/v1/kv/k", {"if_revision": rev})
    assert st == 412 and body["current"]["value"] == "w"
    st, body, _ = await api.call(ld, "PUT", "/v1/kv/nokey", {"value": "x", "if_value": "y"})
    assert st == 412 and body["current"] is None


@pytest.mark.parametrize(
    "path,body,raw",
    [
        ("/v1/kv/k", None, b"{not json"),
        ("/v1/kv/k", {"value": 5}, None),
        ("/v1/kv/k", {"value": "v", "extra": 1}, None),
        ("/v1/kv/k", {}, None),
        ("/v1/kv/k", {"value": "v", "if_revision": -1}, None),
        ("/v1/kv/k", {"value": "v", "if_revision": "3"}, None),
        ("/v1/kv/k", {"value": "v", "request_id": "c:1"}, None),  # retired: sessions
        ("/v1/kv/k", {"value": "v", "session": 1}, None),
        ("/v1/kv/" + "k" * 4097, {"value": "v"}, None),
        ("/v1/kv/%FF", {"value": "v"}, None),
    ],
)
async def test_bad_writes_are_400_and_change_nothing(
    api: Api, path: str, body: Any, raw: bytes | None
) -> None:
    ld = await api.leader_id()
    before = api.c.nodes[ld].status().last_log_index
    st, data, _ = await api.call(ld, "PUT", path, body, raw=raw)
    assert st == 400 and data["error"] == "bad_request" and data["message"]
    await asyncio.sleep(0.1)
    assert api.c.nodes[ld].status().last_log_index == before


async def test_bad_reads_are_400(api: Api) -> None:
    ld = await api.leader_id()
    for path in ("/v1/kv/k?consistency=eventual", "/v1/kv?limit=0", "/v1/kv?limit=x"):
        st, data, _ = await api.call(ld, "GET", path)
        assert st == 400 and data["error"] == "bad_request", path
    st, data, _ = await api.call(ld, "GET", "/v1/nothing")
    assert st == 404 and data["error"] == "not_found"


async def test_every_consistency_mode_reads_the_value(api: Api) -> None:
    ld = await api.leader_id()
    await api.call(ld, "PUT", "/v1/kv/c", {"value": "x"})
    for nid in api.c.ids:
        for mode in ("linearizable", "lease"):
            st, data, _ = await api.call(nid, "GET", f"/v1/kv/c?consistency={mode}")
            assert st == 200 and data["value"] == "x", (nid, mode)
    # A stale read is served from whatever the node has applied: eventually x.
    for nid in api.c.ids:
        for _ in range(100):
            st, data, _ = await api.call(nid, "GET", "/v1/kv/c?consistency=stale")
            if st == 200:
                break
            await asyncio.sleep(0.02)
        assert st == 200 and data["value"] == "x"


async def test_status_members_snapshot_and_transfer_through_a_follower(api: Api) -> None:
    f = await api.follower_id()
    st, s, _ = await api.call(f, "GET", "/v1/status")
    want = {"id", "role", "term", "leader", "commit_index", "applied_index", "last_log_index",
            "snapshot_index", "members"}
    assert st == 200 and want <= set(s) and s["role"] == "follower"
    st, m, _ = await api.call(f, "GET", "/v1/members")
    assert st == 200 and {x["id"] for x in m["members"]} == set(api.c.ids)
    assert all(x["voter"] and x["peer_addr"] for x in m["members"])
    # Every node records its client address in the address book.
    for _ in range(100):
        _, m, _ = await api.call(f, "GET", "/v1/members")
        if all(x["client_addr"] for x in m["members"]):
            break
        await asyncio.sleep(0.05)
    assert {x["id"]: "http://" + x["client_addr"] for x in m["members"]} == api.urls
    _, s, _ = await api.call(f, "GET", "/v1/status")
    assert "http://" + s["leader_client_addr"] == api.urls[s["leader"]]
    st, snap, _ = await api.call(f, "POST", "/v1/snapshot")
    assert st == 200 and snap["index"] >= 1
    # Asked of a follower: it asks the leader over the peer RPC.
    st, t, _ = await api.call(f, "POST", "/v1/leader/transfer", {"to": f})
    assert st == 200 and t["leader"] == f
    assert (await api.c.leader()).id == f


async def test_membership_errors_are_clear(api: Api) -> None:
    ld = await api.leader_id()
    st, data, _ = await api.call(ld, "DELETE", "/v1/members/n9")
    assert st == 404 and data["error"] == "not_found"
    st, data, _ = await api.call(ld, "POST", "/v1/members", {"id": "n4"})
    assert st == 400 and data["error"] == "bad_request"


async def test_a_bad_member_address_is_400_and_nothing_is_proposed(api: Api) -> None:
    ld = await api.leader_id()
    f = await api.follower_id()
    before = api.c.nodes[ld].status().last_log_index
    for body in ({"id": "n4", "peer_addr": "127.0.0.1", "voter": False},
                 {"id": "n4", "peer_addr": "127.0.0.1:70000"},
                 {"id": "n 4", "peer_addr": "127.0.0.1:7004"},
                 {"id": "n4", "peer_addr": "127.0.0.1:7004", "client_addr": "localhost"}):
        for nid in (ld, f):
            st, data, _ = await api.call(nid, "POST", "/v1/members", body)
            assert st == 400 and data["error"] == "bad_request", (body, st, data)
    assert api.c.nodes[ld].status().last_log_index == before


async def test_a_committed_bad_address_shows_in_status_and_metrics(api: Api) -> None:
    ld = await api.leader_id()
    cc = ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, "n4"),),
                    context=b'{"n4": {"addr": "127.0.0.1"}}')
    await api.c.nodes[ld].change_membership(cc, check=False)
    st, data, _ = await api.call(ld, "GET", "/v1/status")
    assert st == 200 and "n4" in data["bad_peer_addresses"]
    assert api.http is not None
    async with api.http.get(api.urls[ld] + "/metrics") as r:
        text = await r.text()
    assert 'liferaft_peer_address_invalid{peer="n4"} 1.0' in text
    assert 'liferaft_peer_reachable{peer="n4"} 0.0' in text
    st, data, _ = await api.call(ld, "PUT", "/v1/kv/still", {"value": "serving"})
    assert st == 200


async def test_junk_committed_member_fields_are_listed_as_strings(api: Api) -> None:
    """/v1/members promises strings; a committed member's address can be any
    JSON value (a raw change), and `serve --join` and the CLI read these."""
    ld = await api.leader_id()
    ctx = b'{"n4": {"addr": ["junk", 1], "client_addr": {"x": 1}}, "n5": {"addr": null}}'
    cc = ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, "n4"),
                     ConfChangeSingle(ChangeType.ADD_LEARNER, "n5")), context=ctx)
    try:
        await api.c.nodes[ld].change_membership(cc, check=False)
    except Exception:  # two learners at once may be refused; one suffices
        cc = ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, "n4"),), context=ctx)
        await api.c.nodes[ld].change_membership(cc, check=False)
    st, data, _ = await api.call(ld, "GET", "/v1/members")
    assert st == 200
    n4 = next(m for m in data["members"] if m["id"] == "n4")
    assert n4["peer_addr"] == '["junk",1]' and n4["client_addr"] == '{"x":1}', n4
    for m in data["members"]:
        assert isinstance(m["peer_addr"], str) and isinstance(m["client_addr"], str), m


async def test_no_leader_is_503_with_retry_after(api: Api) -> None:
    ld = await api.leader_id()
    f = await api.follower_id()
    other = next(n for n in api.c.ids if n not in (ld, f))
    await api.c.nodes[ld].stop()
    await api.c.nodes[other].stop()
    st, data, headers = await api.call(f, "PUT", "/v1/kv/k", {"value": "v"})
    assert st == 503 and data["error"] == "no_leader" and headers["Retry-After"]
    st, data, _ = await api.call(f, "GET", "/v1/kv/k")
    assert st in (503, 504) and data["error"] in ("no_leader", "timeout")
    st, data, _ = await api.call(f, "GET", "/readyz")
    assert st == 503 and "no leader" in data["message"]
    st, data, _ = await api.call(f, "GET", "/healthz")
    assert st == 200


async def test_metrics_are_prometheus_text(api: Api) -> None:
    ld = await api.leader_id()
    await api.call(ld, "PUT", "/v1/kv/m", {"value": "x"})
    assert api.http is not None
    async with api.http.get(api.urls[ld] + "/metrics") as r:
        text = await r.text()
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    for name in ("liferaft_commit_latency_seconds_bucket", "liferaft_apply_lag", "liferaft_term",
                 "liferaft_leader_changes_total", "liferaft_proposals_failed",
                 "liferaft_log_entries", "liferaft_snapshot_bytes",
                 "liferaft_snapshot_age_seconds", "liferaft_peer_reachable"):
        assert name in text, name
    assert 'liferaft_is_leader 1.0' in text


async def test_auth_and_size_limits(tmp_path: Path) -> None:
    a = Api(tmp_path, token="s3cret", max_value=1000)
    await a.start()
    try:
        ld = await a.leader_id()
        good = {"Authorization": "Bearer s3cret"}
        st, data, _ = await a.call(ld, "PUT", "/v1/kv/k", {"value": "v"})
        assert st == 401 and data["error"] == "unauthorized"
        bad = {"Authorization": "Bearer nope"}
        st, data, _ = await a.call(ld, "GET", "/v1/status", headers=bad)
        assert st == 401
        st, _, _ = await a.call(ld, "GET", "/healthz")
        assert st == 200
        st, _, _ = await a.call(ld, "PUT", "/v1/kv/k", {"value": "v"}, headers=good)
        assert st == 200
        st, data, _ = await a.call(ld, "PUT", "/v1/kv/k", {"value": "x" * 1001}, headers=good)
        assert st == 413 and data["error"] == "too_large"
        st, data, _ = await a.call(
            ld, "PUT", "/v1/kv/k", raw=b'{"value": "' + b"x" * 200_000 + b'"}', headers=good
        )
        assert st == 413 and data["error"] == "too_large"
        st, data, _ = await a.call(ld, "GET", "/v1/kv/k", headers=good)
        assert data["value"] == "v"  # nothing of the refused writes applied
    finally:
        await a.stop()


async def test_a_member_added_through_the_api_becomes_a_voter(api: Api) -> None:
    """etcd's order: `POST /v1/members` first (through a follower: routed to
    the leader), then the new node starts and joins; a promotion is refused
    with 409 while it lags and succeeds once it has caught up."""
    ld = await api.leader_id()
    for i in range(20):
        await api.call(ld, "PUT", f"/v1/kv/pre{i}", {"value": str(i)})
    api.c.ids.append("n4")
    api.c.addrs["n4"] = f"127.0.0.1:{free_port()}"
    body = {"id": "n4", "peer_addr": api.c.addrs["n4"], "client_addr": "127.0.0.1:1",
            "voter": False}
    f = await api.follower_id()
    st, data, _ = await api.call(f, "POST", "/v1/members", body)
    assert st == 200, data
    m = {x["id"]: x for x in data["members"]}
    assert not m["n4"]["voter"] and m["n4"]["peer_addr"] == api.c.addrs["n4"]
    st, data, _ = await api.call(f, "POST", "/v1/members/n4/promote")
    assert st == 409 and data["error"] == "conflict" and "caught up" in data["message"]
    n4 = await api.c.make("n4", initial=False)
    await n4.start()
    await n4.join(api.c.addrs[f], api.c.addrs["n4"], voter=False)
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while api.c.sms["n4"].range(Range(b"pre19")).count == 0:
        assert loop.time() < end, "n4 did not catch up"
        await asyncio.sleep(0.02)
    while True:
        st, data, _ = await api.call(f, "POST", "/v1/members/n4/promote")
        if st == 200 or loop.time() > end:
            break
        await asyncio.sleep(0.05)
    assert st == 200 and {x["id"]: x["voter"] for x in data["members"]}["n4"]
    st, data, _ = await api.call(ld, "DELETE", "/v1/members/n4")
    assert st == 200 and "n4" not in {x["id"] for x in data["members"]}


async def test_a_deeply_nested_committed_member_field_never_breaks_status(api: Api) -> None:
    """A raw change can commit any JSON in a member's entry.  One nested just
    shallowly enough for apply to read it used to be kept, and then every
    /v1/status and /v1/members (read from a deeper stack) failed with a 500
    on every node, and `serve --join` with them, until it was removed."""
    ld = api.c.nodes[await api.leader_id()]
    for depth in range(1000, 900, -4):  # down to the deepest apply still reads
        ctx = '{"x":{"addr":"127.0.0.1:1","client_addr":' + "[" * depth + "]" * depth + "}}"
        cc = ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, "x"),), context=ctx.encode())
        await ld.change_membership(cc, check=False)
        for nid in api.c.ids:
            for path in ("/v1/status", "/v1/members"):
                st, _, _ = await api.call(nid, "GET", path)
                assert st == 200, (depth, nid, path)
        if "client_addr" in ld.members["x"]:
            break
        await ld.remove("x")
    assert not any(n.crashed.is_set() for n in api.c.nodes.values())
