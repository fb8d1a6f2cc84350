"""What a stranger's malformed request costs the node: a 4xx answer and no
line in the error log.  A client port is open to anyone who can reach it
(docs/architecture.md, "Trust model"), and a stranger who can write an
ERROR line with a traceback per connection can fill the node's log (and
its disk) at the rate it can connect.

Found by the adversarial review of the HTTP client port: aiohttp logs every
request it cannot parse (a bad request line, an over-long header, both
Content-Length and Transfer-Encoding, a bad chunk size) at ERROR with a
traceback, and an ``Authorization`` header that is not UTF-8 made the token
check raise (500, and a traceback), with a token file configured."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.kv.one_node import OneNode

TOKEN = "s3cret"


@pytest.fixture
async def one(tmp_path: Path) -> AsyncIterator[OneNode]:
    n = OneNode(tmp_path, token=TOKEN)
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


MALFORMED = {
    "not a request line": b"GARBAGE\r\n\r\n",
    "an over-long header": b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 9000 + b"\r\n\r\n",
    "Content-Length and chunked": (
        b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ),
    "a bad chunk size": (
        b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    ),
    # Decompressed as it arrives, whether or not the route reads a body:
    # aiohttp's lingering read of it then raised ("Unhandled exception").
    "a bogus gzip body on an open route": (
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 5\r\n\r\nxxxxx"
    ),
    "a second request that is not HTTP": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n"
    ),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_request_aiohttp_cannot_parse_is_a_4xx_and_no_error_log(
    one: OneNode, caplog: pytest.LogCaptureFixture, data: bytes
) -> None:
    caplog.set_level(logging.INFO)
    answer = await one.raw(data)
    assert re.match(rb"HTTP/1\.[01] 4\d\d ", answer), answer[:200]
    assert _errors(caplog) == []


@pytest.mark.parametrize("path", ["/v1/kv/a", "/v1/status"])  # the hot path and the routed one
async def test_an_authorization_header_not_utf8_is_a_401_not_a_500(
    one: OneNode, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.INFO)
    answer = await one.raw(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert _errors(caplog) == []


async def test_a_stranger_asking_to_continue_gets_its_401_not_an_invitation(one: OneNode) -> None:
    """Found by the adversarial review: ``Expect: 100-continue`` is answered
    by aiohttp's router (the route's expect handler) before the token check
    runs, so a caller without the token is told "100 Continue", sends its
    body (up to the size cap), and only then hears 401; the node reads and
    drops that body for aiohttp's 10 s of lingering.  The final status must
    come instead of the 100 (RFC 9110, 10.1.1), so no body is invited."""
    reader, writer = await asyncio.open_connection("127.0.0.1", one.port)
    try:
        writer.write(
            b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 1000000\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            first = await reader.readuntil(b"\r\n")
        # ... and it is the connection's last answer: the node does not wait
        # (aiohttp's 10 s of lingering) for the body it never invited.
        async with asyncio.timeout(3):
            await reader.read()  # to the end of the stream
    finally:
        writer.close()
    assert first.startswith(b"HTTP/1.1 401 "), first


async def test_a_stranger_asking_to_continue_is_in_the_access_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the adversarial review: the 401 that HotPath now gives a
    request with ``Expect`` before the router is answered outside the
    middlewares, so ``--access-log`` never records it.  The same 401
    without ``Expect`` is logged: a token-guesser who adds the header
    becomes invisible in the access log."""
    n = OneNode(tmp_path, token=TOKEN, access_log=True)
    await n.start()
    try:
        caplog.set_level(logging.INFO, logger="liferaft.access")
        reader, writer = await asyncio.open_connection("127.0.0.1", n.port)
        try:
            writer.write(
                b"PUT /v1/kv/a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                b"Content-Length: 5\r\n\r\n"
            )
            await writer.drain()
            async with asyncio.timeout(5):
                answer = await reader.readuntil(b"}")  # the JSON error body
        finally:
            writer.close()
    finally:
        await n.stop()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    lines = [r.getMessage() for r in caplog.records if r.name == "liferaft.access"]
    assert any("PUT /v1/kv/a 401" in line for line in lines), lines
