"""The console's parts alone: the timeline buffer, the rates, the CORS rule,
the static file names, and a stream's limits against a fake gatherer."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from liferaft.console.cors import Cors, origins_of
from liferaft.console.rates import Rates, percentile
from liferaft.console.static import CONNECT_META, StaticFiles, with_connect_meta
from liferaft.console.stream import Streams
from liferaft.console.timeline import Timeline

# -- timeline --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_timeline_numbers_entries_and_sends_only_newer_ones() -> None:
    tl = Timeline("n2", Clock())
    a = tl.add("leader", "n1", 3, "n1 became leader in term 3")
    b = tl.add("down", "n3", None, "n3 does not answer")
    assert (a["seq"], b["seq"]) == (1, 2) and a["seen_by"] == "n2"
    assert tl.since(0) == [a, b] and tl.since(1) == [b] and tl.since(2) == []
    with pytest.raises(ValueError, match="unknown timeline kind"):
        tl.add("gossip", "n1", None, "")


def test_the_timeline_keeps_an_hour_and_a_bounded_count() -> None:
    clock = Clock()
    tl = Timeline("n1", clock, window=3600, max_entries=5)
    tl.add("up", "n2", 1, "old")
    clock.t += 3601
    assert tl.since(0) == []  # older than the hour: gone
    for i in range(12):
        tl.add("up", "n2", 1, str(i))
    kept = tl.since(0)
    assert [e["text"] for e in kept] == ["7", "8", "9", "10", "11"]
    assert kept[-1]["seq"] == 13 == tl.last_seq  # numbers never restart


# -- rates ----------------------------------------------------------------------------


def test_rates_come_from_counter_differences() -> None:
    r = Rates(keep=3)
    first = r.sample(100.0, 50, {"n1": 10, "n2": 5}, [], 0)
    assert first["writes_per_s"] == 0 and first["reads_per_s"] == 0  # nothing to compare
    assert first["commit_p50_ms"] is None and first["commit_p99_ms"] is None
    s = r.sample(102.0, 70, {"n1": 30, "n2": 9, "n3": 100}, [1.0, 2.0, 3.0, 40.0], 4)
    assert s["writes_per_s"] == 10.0  # 20 revisions in 2 s
    assert s["reads_per_s"] == 12.0  # (20 + 4) / 2; n3 was not seen before
    assert s["commit_p50_ms"] == 2.0 and s["commit_p99_ms"] == 40.0
    assert s["apply_lag"] == 4
    # A member that restarted (its count went down) adds nothing that once.
    s = r.sample(103.0, 70, {"n1": 0, "n2": 10, "n3": 100}, [], 0)
    assert s["reads_per_s"] == 1.0 and s["writes_per_s"] == 0
    r.sample(104.0, None, {}, [], 0)
    assert len(r.history) == 3 and r.history[0]["t"] == 102.0  # bounded


def test_percentile_is_nearest_rank() -> None:
    vals = [float(i) for i in range(1, 101)]
    assert percentile(vals, 50) == 50.0 and percentile(vals, 99) == 99.0
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


# -- CORS ------------------------------------------------------------------------------


def test_origins_are_the_members_client_addresses() -> None:
    got = origins_of(["127.0.0.1:8001", "Node-B:80", ""])
    assert "http://127.0.0.1:8001" in got and "https://127.0.0.1:8001" in got
    assert "http://node-b" in got and "http://node-b:80" in got
    assert not any("8002" in o for o in got)


async def _client(app: web.Application) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


def _app_with_token(cors: Cors) -> web.Application:
    """The order of kv/server.py: errors, then the token check; CORS first."""

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != "Bearer t":
            return web.json_response({"error": "unauthorized"}, status=401)
        resp: web.StreamResponse = await handler(request)
        return resp

    app = web.Application(middlewares=[auth])

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app.router.add_get("/v1/status", status)
    cors.install(app)
    return app


async def test_cors_answers_members_only_and_never_skips_the_token() -> None:
    member = "http://127.0.0.1:8001"
    client = await _client(_app_with_token(Cors(lambda: origins_of(["127.0.0.1:8001"]))))
    try:
        pre = {"Origin": member, "Access-Control-Request-Method": "GET",
               "Access-Control-Request-Headers": "authorization"}  # fmt: skip
        r = await client.options("/v1/status", headers=pre)
        assert r.status == 204
        assert r.headers["Access-Control-Allow-Origin"] == member
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        assert "DELETE" in r.headers["Access-Control-Allow-Methods"]
        # Another origin: no CORS headers, and its preflight meets the token check.
        r = await client.options("/v1/status", headers={**pre, "Origin": "http://evil.example"})
        assert r.status == 401 and "Access-Control-Allow-Origin" not in r.headers
        # A GET without the token stays a 401, readable by the member's page.
        r = await client.get("/v1/status", headers={"Origin": member})
        assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == member
        r = await client.get("/v1/status", headers={"Origin": member, "Authorization": "Bearer t"})
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == member
        r = await client.get("/v1/status", headers={"Origin": "null", "Authorization": "Bearer t"})
        assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
    finally:
        await client.close()


# -- static files ----------------------------------------------------------------------


async def test_the_page_names_the_origins_its_policy_allows() -> None:
    """index.html's meta tag lists exactly the CSP's connect origins of the
    same answer (the page compares them with the members to see its policy
    is stale), read once per answer, and escaped: an address is data."""
    readings = iter([{"http://a:1", "https://a:1"}, {"http://b:2", "http://x_y.z:3"}])
    app = web.Application()
    StaticFiles(lambda: next(readings)).add_routes(app)
    client = await _client(app)
    try:
        for want in ("http://a:1 https://a:1", "http://b:2 http://x_y.z:3"):
            r = await client.get("/ui/")
            page = await r.text()
            assert f'<meta name="liferaft-connect-src" content="{want}">' in page
            connect = r.headers["Content-Security-Policy"].split("connect-src 'self' ")[1]
            assert connect.split(";")[0] == html.unescape(want)
        # The tag is escaped anyway: what reaches it is data.
        filled = with_connect_meta(CONNECT_META, {'http://x"><i>:3'})
        assert filled == b'<meta name="liferaft-connect-src" content="http://x&quot;&gt;&lt;i&gt;:3">'
        r = await client.get("/ui/console.css")  # only the page itself is filled in
        assert "liferaft-connect-src" not in await r.text()
    finally:
        await client.close()


async def test_a_bad_committed_client_address_never_reaches_the_policy_or_the_page() -> None:
    """A client address that is no "host:port" can still sit in the address
    book (a member's forwarded raw change is proposed unchecked; the book
    keeps whatever JSON was committed).  Written into the header as it was,
    ``;`` added directives (``report-uri`` to a stranger), a space added a
    source (``*``), and a newline made every /ui/ answer a 500; with a path,
    userinfo or a ``javascript:`` it named an origin no member has.  Only
    well-formed origins enter the policy and the meta tag, the same set in
    both; the good ones stay."""
    good = {"http://10.0.0.1:8001", "https://[::1]:8001", "http://n1.example"}
    bad = {
        "http://x; report-uri http://203.0.113.9:1",
        "http://x *",
        "http://x:1\r\nX-Evil: 1",
        'http://x" onload="alert(1):1',
        "http://10.0.0.1:8001/path",
        "http://user@10.0.0.1:8001",
        "javascript:alert(1)",
        "http://b\u00fccher.example:8001",
        "http://" + "a" * 5000 + ":1",
        'http://{"a":1}',
    }
    app = web.Application()
    StaticFiles(lambda: good | bad).add_routes(app)
    client = await _client(app)
    try:
        r = await client.get("/ui/")
        assert r.status == 200
        page = await r.text()
        meta = re.search(r'<meta name="liferaft-connect-src" content="([^"]*)">', page)
        assert meta is not None
        policy = r.headers["Content-Security-Policy"]
        connect = policy.split("connect-src 'self' ")[1].split(";")[0]
        assert set(connect.split(" ")) == set(meta.group(1).split(" ")) == good
        assert policy.count(";") == 7 and "report-uri" not in policy and "X-Evil" not in policy
    finally:
        await client.close()


async def test_static_serves_plain_names_in_the_directory_only() -> None:
    app = web.Application()
    StaticFiles(lambda: {"http://127.0.0.1:8002"}).add_routes(app)
    client = await _client(app)
    try:
        r = await client.get("/ui/")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
        assert r.headers["Cache-Control"] == "no-cache"
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert "connect-src 'self' http://127.0.0.1:8002" in csp
        r = await client.get("/ui", allow_redirects=False)
        assert r.status == 308 and r.headers["Location"] == "/ui/"
        for bad in ("/ui/..", "/ui/.index.html", "/ui/front.py", "/ui/__init__.py",
                    "/ui/nope.html", "/ui/index.html~"):  # fmt: skip
            r = await client.get(bad)
            assert r.status == 404, bad
    finally:
        await client.close()


# -- the stream's limits ---------------------------------------------------------------


class FakeGatherer:
    """Views on demand; counts who holds it."""

    def __init__(self) -> None:
        self.users = 0
        self.gen = 0
        self.closed = False
        self.tick = asyncio.Event()

    def acquire(self) -> None:
        self.users += 1

    def release(self) -> None:
        self.users -= 1

    async def fresh(self) -> tuple[dict[str, Any], int] | None:
        return {"via": "n1", "members": []}, self.gen

    async def after(self, gen: int) -> tuple[dict[str, Any], int] | None:
        await self.tick.wait()
        self.tick.clear()
        if self.closed:
            return None
        self.gen += 1
        return {"via": "n1", "members": [], "n": self.gen}, self.gen


async def test_streams_are_capped_and_a_client_that_leaves_ends_its_handler() -> None:
    g = FakeGatherer()
    tl = Timeline("n1")
    tl.add("leader", "n1", 2, "n1 became leader in term 2")
    streams = Streams(g, tl, Rates(), max_streams=1)  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_get("/v1/console/stream", streams.handle)
    client = await _client(app)
    try:
        r = await client.get("/v1/console/stream")
        first = await asyncio.wait_for(r.content.readline(), 5)
        assert b'"history":[]' in first and b"became leader" in first
        assert g.users == 1 and streams.open == 1
        busy = await client.get("/v1/console/stream")
        assert busy.status == 503 and (await busy.json())["error"] == "too_many_streams"
        tl.add("down", "n3", None, "n3 does not answer")
        g.tick.set()
        second = await asyncio.wait_for(r.content.readline(), 5)
        assert b"history" not in second and b'"seq":2' in second and b'"seq":1' not in second
        r.close()  # the client goes away
        g.tick.set()  # the next line finds it gone
        for _ in range(100):
            if streams.open == 0:
                break
            g.tick.set()
            await asyncio.sleep(0.05)
        assert streams.open == 0 and g.users == 0
    finally:
        await client.close()


# -- wiring ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "env", "on"), [
    ([], {}, True),
    (["--no-console"], {}, False),
    ([], {"LIFERAFT_SERVE_CONSOLE": "false"}, False),
])  # fmt: skip
def test_serve_adds_the_console_unless_told_not_to(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], on: bool
) -> None:
    from click.testing import CliRunner

    from liferaft.cli import main
    from liferaft.cli import serve as serve_mod
    from liferaft.console.front import ConsoleFrontEnd

    got: list[Any] = []

    async def fake_serve(o: Any, ctx: Any = None, front_ends: Any = ()) -> None:
        got.append(list(front_ends))

    monkeypatch.setattr(serve_mod, "serve", fake_serve)
    r = CliRunner().invoke(
        main,
        ["serve", "--id", "n1", "--data-dir", str(tmp_path), "--peer-addr", "127.0.0.1:7001",
         "--client-addr", "127.0.0.1:8001", "--initial-cluster", "n1=127.0.0.1:7001", *args],
        env=env, auto_envvar_prefix="LIFERAFT",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (ConsoleFrontEnd in got[0]) is on
