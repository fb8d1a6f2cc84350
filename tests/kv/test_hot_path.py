"""The hot path (liferaft/kv/hot_path.py) answers exactly as the routed
application does.  One node; the same KVServer served twice: behind the
real client listener (the hot path answers the key routes) and by a plain
aiohttp runner (router and middlewares, as before).  The same requests,
good and bad, go to both, byte for byte, and the answers must agree in
status, the headers that matter and the body."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from liferaft.kv.hot_path import HotPath
from liferaft.kv.listener import ClientLimits
from tests.kv.one_node import OneNode

TOKEN = "s3cret"
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
MAX_VALUE = 1000  # the body cap is then 2 * 1000 + 64 KiB
HEADERS = ("content-type", "retry-after", "connection")


class Twin:
    """One node served twice: ``hot`` (the listener) and ``routed``."""

    def __init__(self, one: OneNode, runner: web.AppRunner, routed_port: int) -> None:
        self.one = one
        self.runner = runner
        self.ports = {"hot": one.port, "routed": routed_port}
        self.routed_calls = 0


@pytest.fixture
async def twin(tmp_path: Path) -> AsyncIterator[Twin]:
    one = OneNode(
        tmp_path,
        limits=ClientLimits(header_timeout=5),
        token=TOKEN,
        body_timeout=0.3,
        max_value=MAX_VALUE,
        access_log=True,
    )
    await one.start()
    assert one.server is not None and one.listener is not None
    runner = web.AppRunner(one.server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    t = Twin(one, runner, port)
    # Count what the hot path hands to the application.
    server = one.listener.runner.server
    assert server is not None
    hot = server.request_handler
    assert isinstance(hot, HotPath)
    routed = hot._routed

    async def counted(request: web.BaseRequest) -> web.StreamResponse:
        t.routed_calls += 1
        return await routed(request)

    hot._routed = counted
    try:
        yield t
    finally:
        await runner.cleanup()
        await one.stop()


Answer = tuple[int, dict[str, str], bytes]


async def _exchange(port: int, data: bytes, answers: int = 1) -> list[Answer]:
    """Send ``data`` on a new connection; read ``answers`` responses."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out = []
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            for _ in range(answers):
                head = await reader.readuntil(b"\r\n\r\n")
                while head.startswith(b"HTTP/1.1 100 "):  # Expect's interim answer
                    head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                status = int(lines[0].split()[1])
                hdrs = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        hdrs[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(hdrs.get("content-length", "0")))
                out.append((status, hdrs, body))
    finally:
        writer.close()
    return out


def _normal(status: int, hdrs: dict[str, str], body: bytes, key: str) -> tuple[Any, ...]:
    """What must agree: status, the headers that matter, and the body with
    this path's key name and the revisions (which differ by order) blanked."""
    text = body.decode().replace(key, "KEY")
    data = json.loads(text) if text else None
    text = re.sub(r'"(\w*revision)": \d+', r'"\1": 0', json.dumps(data, sort_keys=True))
    return status, {h: hdrs.get(h) for h in HEADERS}, text


def _put(key: str, body: bytes, auth: str = AUTH, extra: str = "") -> bytes:
    return (
        f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: x\r\n{auth}{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _req(method: str, target: str, auth: str = AUTH, body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {target} HTTP/1.1\r\nHost: x\r\n{auth}{length}\r\n".encode() + body


X = b'{"value":"x"}'
WRONG = "Authorization: Bearer no\r\n"
NOPE = b'{"if_value":"nope"}'
EVIL = "Origin: http://evil.example\r\n"
DEAD = b'{"value":"x","session":99999,"seq":1,"lowest_pending":1}'

# (name, request for key K, routed to the application even on the hot port)
CASES: list[tuple[str, Any, bool]] = [
    ("put", lambda k: _put(k, b'{"value":"v1"}'), False),
    ("put again", lambda k: _put(k, b'{"value":"v2"}'), False),
    ("get", lambda k: _req("GET", f"/v1/kv/{k}"), False),
    ("get stale", lambda k: _req("GET", f"/v1/kv/{k}?consistency=stale"), False),
    ("get bad consistency", lambda k: _req("GET", f"/v1/kv/{k}?consistency=nope"), False),
    ("get bad revision", lambda k: _req("GET", f"/v1/kv/{k}?revision=x"), False),
    ("get future revision", lambda k: _req("GET", f"/v1/kv/{k}?revision=99999"), False),
    ("get missing", lambda k: _req("GET", f"/v1/kv/{k}-none"), False),
    ("no token", lambda k: _put(k, X, auth=""), False),
    ("wrong token", lambda k: _put(k, X, auth=WRONG), False),
    ("get no token", lambda k: _req("GET", f"/v1/kv/{k}", auth=""), False),
    ("foreign origin", lambda k: _put(k, X, extra=EVIL), True),
    ("bad escape", lambda k: _put(k + "%zz", X), False),
    ("trailing percent", lambda k: _req("GET", f"/v1/kv/{k}%"), False),
    ("not utf-8", lambda k: _put(k + "%ff", X), False),
    ("malformed json", lambda k: _put(k, b'{"value":'), False),
    ("unknown field", lambda k: _put(k, b'{"value":"x","colour":1}'), False),
    ("null condition", lambda k: _put(k, b'{"value":"x","if_value":null}'), False),
    ("request_id", lambda k: _put(k, b'{"value":"x","request_id":"r1"}'), False),
    ("half a session", lambda k: _put(k, b'{"value":"x","session":5}'), False),
    ("dead session", lambda k: _put(k, DEAD), False),
    ("condition fails", lambda k: _put(k, b'{"value":"x","if_value":"nope"}'), False),
    ("create only fails", lambda k: _put(k, b'{"value":"x","if_revision":0}'), False),
    ("value too large", lambda k: _put(k, b'{"value":"%s"}' % (b"v" * (MAX_VALUE + 1))), False),
    ("body too large", lambda k: _put(k, b'{"value":"' + b"v" * 70_000 + b'"}'), False),
    ("lease not found", lambda k: _put(k, b'{"value":"x","lease":12345}'), False),
    ("delete bad body", lambda k: _req("DELETE", f"/v1/kv/{k}", body=b"{nope"), False),
    ("delete if fails", lambda k: _req("DELETE", f"/v1/kv/{k}", body=NOPE), False),
    ("delete", lambda k: _req("DELETE", f"/v1/kv/{k}"), False),
    ("delete missing", lambda k: _req("DELETE", f"/v1/kv/{k}"), False),
    ("empty key", lambda k: _req("GET", "/v1/kv/"), True),
    # The router matches the decoded path: no key before a "#", and its
    # pattern (.+) takes no newline; the hot path must not answer either.
    ("fragment, no key", lambda k: _req("PUT", f"/v1/kv/#{k}", body=X), True),
    ("newline in key", lambda k: _put(f"a%0A{k}", X), True),
    ("expect", lambda k: _put(k, X, extra="Expect: 100-continue\r\n"), True),
]


async def test_the_hot_path_answers_as_the_routed_application(
    twin: Twin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liferaft.access")
    for name, make, delegated in CASES:
        got = {}
        for path, port in twin.ports.items():
            key = f"{path}-k"
            before = twin.routed_calls
            caplog.clear()
            [(status, hdrs, body)] = await _exchange(port, make(key))
            got[path] = _normal(status, hdrs, body, key)
            # One access-log line per request on either path, same fields.
            [rec] = [r for r in caplog.records if r.name == "liferaft.access"]
            assert rec.status == status, name
            if path == "hot":
                assert (twin.routed_calls > before) == delegated, f"{name}: wrong path"
        assert got["hot"] == got["routed"], name


async def test_a_slow_body_on_the_hot_path_is_a_408_and_the_connection_closes(twin: Twin) -> None:
    for port in twin.ports.values():
        partial = _put("slow", b'{"value":"x"}')[:-5]  # the body never completes
        [(status, hdrs, body)] = await _exchange(port, partial)
        assert status == 408 and json.loads(body)["error"] == "request_timeout"
        # aiohttp closes it once the rest of the body stops (its lingering time).
        assert hdrs.get("connection", "").lower() == "close"


async def test_pipelined_hot_requests_are_answered_in_order_on_one_connection(twin: Twin) -> None:
    data = (
        _put("p", b'{"value":"1"}') + _req("GET", "/v1/kv/p") + _put("p", b'{"value":"2"}')
        + _req("GET", "/v1/status") + _req("GET", "/v1/kv/p")
    )  # fmt: skip
    before = twin.routed_calls
    answers = await _exchange(twin.ports["hot"], data, answers=5)
    assert [a[0] for a in answers] == [200] * 5
    bodies = [json.loads(a[2]) for a in answers]
    assert bodies[0]["prev"] is None and bodies[1]["value"] == "1"
    assert bodies[2]["prev"]["value"] == "1" and bodies[3]["id"] == "n1"
    assert bodies[4]["value"] == "2"
    assert twin.routed_calls == before + 1  # only /v1/status went to the application
    # Kept alive: the connection took all five (no close asked).
    assert all(a[1].get("connection", "").lower() != "close" for a in answers)
