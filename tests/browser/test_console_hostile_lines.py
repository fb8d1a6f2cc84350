"""The console page against stream lines no honest member sends, in a real
Chromium: a fake node (the console's own static files and CSP, a scripted
``/v1/console/stream``, no cluster) stands in for a buggy or hostile one,
and small recording servers stand at the client addresses its lines name.
Cheap: no ``liferaft serve`` process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from liferaft.console.cors import origins_of
from liferaft.console.static import StaticFiles
from liferaft.harness.ports import HOST
from tests.browser.conftest import Browser
from tests.browser.test_console_attack import recorder

__all__ = ["recorder"]  # a fixture, used by name

Lines = Callable[[int], dict[str, Any]]


class FakeNode:
    """A console node in a thread: its page (with a policy for
    ``policy_addrs``) and a stream of ``lines(n)``, n counting every line it
    ever sent, one each 0.3 s; ``loads`` counts the page's loads."""

    def __init__(self, lines: Lines, policy_addrs: Callable[[], list[str]]) -> None:
        self.lines = lines
        self.policy_addrs = policy_addrs
        self.sent = 0
        self.loads = 0
        self.addr = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        res = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await res.prepare(request)
        try:
            for _ in range(200):  # bounded: 60 s
                await res.write(json.dumps(self.lines(self.sent)).encode() + b"\n")
                self.sent += 1
                await asyncio.sleep(0.3)
        except ConnectionResetError:
            pass  # the page left (a reload)
        return res

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/ui/":
            self.loads += 1
        resp: web.StreamResponse = await handler(request)
        return resp

    async def _start(self) -> None:
        app = web.Application(middlewares=[self._count])
        StaticFiles(lambda: origins_of(self.policy_addrs())).add_routes(app)
        app.router.add_get("/v1/console/stream", self._stream)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.addr = f"{HOST}:{port}"

    def __enter__(self) -> FakeNode:
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


@pytest.fixture
def trap() -> Iterator[tuple[str, list[str]]]:
    """A second recording server (the first is ``recorder``)."""
    yield from recorder.__wrapped__()  # type: ignore[attr-defined]


def member(mid: str, addr: str, reachable: bool) -> dict[str, Any]:
    return {"id": mid, "voter": True, "client_addr": addr, "reachable": reachable}


def test_a_node_naming_a_new_member_each_line_does_not_reload_the_page_each_time(
    browser: Browser,
) -> None:
    """Every line names a member the page's policy lacks, a new one each
    time (a buggy node, or learners added in a loop): "once per set" alone
    reloaded the page on each line, forever.  The first reload still
    happens at once (a member that joined after the page loaded); the next
    ones wait, longer each time, until a line finds the policy current."""
    node: FakeNode

    def lines(n: int) -> dict[str, Any]:
        return {"via": "n1", "leader": "n1", "term": 2,
                "members": [member("n1", node.addr, True),
                            member(f"x{n}", f"{HOST}:{20000 + n}", True)]}  # fmt: skip

    with FakeNode(lines, lambda: [node.addr]) as node:
        browser.driver.get(f"http://{node.addr}/ui/")
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"{node.loads} page loads in 6 s, {node.sent} lines")
        assert node.loads == 2, f"{node.loads} page loads in 6 s"


def test_a_line_from_a_removed_node_cannot_point_a_member_at_another_address(
    browser: Browser, recorder: tuple[str, list[str]], trap: tuple[str, list[str]]
) -> None:
    """n1 serves the page; n2 answers; learner n4 (a client address nobody
    vouched for: it never answered) is in the policy as a member.  Then n1's
    lines say it is no member any more, and name n4's address as n2's.  A
    line from a node that is no member is not trusted: the page must carry
    on through n2's address as members' lines gave it, never n4's."""
    good, good_seen = recorder
    bad, bad_seen = trap
    node: FakeNode

    def lines(n: int) -> dict[str, Any]:
        if n < 4:
            ms = [member("n1", node.addr, True), member("n2", good, True),
                  member("n4", bad, False)]  # fmt: skip
        else:
            ms = [member("n2", bad, True), member("n4", bad, True)]
        return {"via": "n1", "leader": "n2", "term": 2, "members": ms}

    with FakeNode(lines, lambda: [node.addr, good, bad]) as node:
        browser.driver.get(f"http://{node.addr}/ui/")
        browser.wait("the page to leave n1", lambda: good_seen or bad_seen, timeout=15)
        assert bad_seen == [], "the page went to the address a removed node named"
