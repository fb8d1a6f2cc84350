"""Strangers' bytes on the gRPC port and the JSON gateway: what cannot be
decoded gets a clear error, and the node logs no traceback for it (a
stranger must not be able to fill the error log).

Found by the adversarial review: an undecodable protobuf was grpcio's
UNKNOWN "Unexpected DecodeError" with a traceback logged at ERROR; a
gateway body that is not UTF-8, or over the client port's size limit, was
UNKNOWN (HTTP 500) with a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web

from liferaft.etcd import auth, gateway, grpc_server
from liferaft.etcd import kv as etcd_kv
from liferaft.etcd import watch as etcd_watch
from liferaft.etcd.context import EtcdContext
from liferaft.kv.listener import ClientLimits, start_client_listener

CALLS = [*etcd_kv.CALLS, *etcd_watch.CALLS]


def fake_ctx() -> EtcdContext:
    # Nothing under it: every request here fails before a handler runs.
    svc: Any = SimpleNamespace(
        node=SimpleNamespace(id="n1", rn=None, members=["n1"]), hub=SimpleNamespace(revision=0)
    )
    return EtcdContext(svc, "test")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(grpc_server.generic_handlers(fake_ctx(), CALLS))
    p = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield p
    finally:
        await server.stop(0)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_undecodable_protobuf_is_etcds_internal_without_a_traceback(
    port: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ident = lambda b: b  # noqa: E731 - raw bytes both ways
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        rng = ch.unary_unary("/etcdserverpb.KV/Range", request_serializer=ident,
                             response_deserializer=ident)  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rng(b"\xff\xff\xff")
        assert err.value.code() == grpc.StatusCode.INTERNAL
        assert (err.value.details() or "").startswith("grpc: error unmarshalling request")
        # A stream's request too: the stream ends with the same status.
        watch = ch.stream_stream("/etcdserverpb.Watch/Watch", request_serializer=ident,
                                 response_deserializer=ident)  # fmt: skip
        call = watch(iter([b"\x0a\xff\xff\xff\xff\x0f"]))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.INTERNAL
    assert _errors(caplog) == []


async def test_gateway_bodies_not_utf8_or_too_large_are_client_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    app = web.Application(client_max_size=1024)
    gateway.Gateway(fake_ctx(), CALLS).add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/v3/kv/range"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=b'\xff\xfe{"key": "YQ=="}') as r:
                body = await r.json()
                assert (r.status, body["code"]) == (400, 3)
                assert "not UTF-8" in body["message"]
            async with http.post(url, data=b'{"key": "' + b"A" * 4096 + b'"}') as r:
                body = await r.json()
                assert (r.status, body["message"]) == (400, "etcdserver: request is too large")
    finally:
        await runner.cleanup()
    assert _errors(caplog) == []


async def test_a_gateway_body_that_never_arrives_is_a_408_and_the_connection_ends() -> None:
    """A stranger trickling a unary call's body held its connection for as
    long as it liked: the gateway read it with no deadline.  Behind the
    real client listener it is now the client port's 408, and the
    connection ends right after it."""
    app = web.Application()
    gateway.Gateway(fake_ctx(), CALLS, body_timeout=0.5).add_routes(app)
    listener = await start_client_listener(app, "127.0.0.1", 0, ClientLimits())
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        async with asyncio.timeout(10):
            answer = await reader.readuntil(b"}")
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        body = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert body["code"] == 1 and "did not arrive within 0.5 s" in body["message"]
        async with asyncio.timeout(3):  # not aiohttp's 10 s of lingering
            assert await reader.read() == b""
    finally:
        writer.close()
        await listener.close()


async def test_deeply_nested_gateway_json_is_a_client_error_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by the adversarial review (HTTP client port): a gateway body
    nested deeper than Python's recursion limit (``[[[[...``, a few kB) made
    json's decoder raise RecursionError, which ``parse`` and the stream
    reader do not catch (only ValueError): etcd's UNKNOWN, HTTP 500, and a
    full traceback at ERROR per request.  With a token file a stranger still
    reaches it through Authenticate, which needs no token, so anyone who can
    reach the client port could fill the node's error log (and make it spend
    a traceback's work per request).  It must be INVALID_ARGUMENT (400, or
    the stream's error line with code 3), with nothing logged at ERROR."""
    caplog.set_level(logging.INFO)
    app = web.Application()
    svc: Any = SimpleNamespace(
        node=SimpleNamespace(id="n1", rn=None, members=["n1"]), hub=SimpleNamespace(revision=0)
    )
    ctx = EtcdContext(svc, "test", token="s3cret")  # auth on: the stranger has no token
    gateway.Gateway(ctx, [*auth.CALLS, *CALLS]).add_routes(app)
    listener = await start_client_listener(app, "127.0.0.1", 0, ClientLimits())
    base = f"http://127.0.0.1:{listener.port}"
    deep = b"[" * 5000
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/v3/auth/authenticate", data=deep) as r:
                body = await r.json()
                assert (r.status, body["code"]) == (400, 3), body
            async with http.post(base + "/v3/auth/authenticate",
                                 data=b'{"name": ' + deep + b"]" * 5000 + b"}") as r:  # fmt: skip
                body = await r.json()
                assert (r.status, body["code"]) == (400, 3), body
    finally:
        await listener.close()
    assert _errors(caplog) == []


async def test_deeply_nested_gateway_stream_json_is_a_client_error_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same for a streamed call's body (Watch, open to anyone without a
    token file): the stream ends with INVALID_ARGUMENT, not a logged UNKNOWN."""
    caplog.set_level(logging.INFO)
    app = web.Application()
    gateway.Gateway(fake_ctx(), CALLS).add_routes(app)
    listener = await start_client_listener(app, "127.0.0.1", 0, ClientLimits())
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{listener.port}/v3/watch", data=b"[" * 5000) as r,
        ):
            line = json.loads((await r.text()).splitlines()[-1])
            assert line["error"]["grpc_code"] == 3, line
    finally:
        await listener.close()
    assert _errors(caplog) == []


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Type: application/json; charset=nonesuch\r\n",  # LookupError
        b"Content-Encoding: gzip\r\n",  # a body that is not gzip
        b"Content-Encoding: deflate\r\n",
        b"Authorization: \xff\xfe\r\n",  # not UTF-8: the token compare raised
    ],
    ids=["unknown charset", "not gzip", "not deflate", "authorization not utf-8"],
)
async def test_a_strangers_authenticate_with_odd_headers_is_a_client_error_without_a_traceback(
    caplog: pytest.LogCaptureFixture, head: bytes
) -> None:
    """Found by the adversarial review (HTTP client port): Authenticate is
    open with a token file, and a body in a charset Python does not know,
    or sent as gzip or deflate but not compressed, was UNKNOWN (500) with
    tracebacks at ERROR (the gateway's, and for the encodings aiohttp's
    "Unhandled exception" too); an Authorization header that is not UTF-8
    made the token compare raise.  Each must be a client error, unlogged."""
    caplog.set_level(logging.INFO)
    app = web.Application()
    svc: Any = SimpleNamespace(
        node=SimpleNamespace(id="n1", rn=None, members=["n1"]), hub=SimpleNamespace(revision=0)
    )
    ctx = EtcdContext(svc, "test", token="s3cret")
    gateway.Gateway(ctx, [*auth.CALLS, *CALLS]).add_routes(app)
    listener = await start_client_listener(app, "127.0.0.1", 0, ClientLimits())
    body = b'{"name": "root", "password": "x"}'
    path = b"/v3/kv/range" if head.startswith(b"Authorization") else b"/v3/auth/authenticate"
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + head
                     + b"Content-Length: %d\r\n\r\n" % len(body) + body)  # fmt: skip
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
        await listener.close()
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500, answer[:300]
    assert _errors(caplog) == []
