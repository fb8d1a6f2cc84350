"""An https endpoint is TLS or an error, never plain HTTP (issue 12, defect
9): the bearer token must not leave over a scheme the user did not ask for.
Certificates from trustme; the server side is the node's own client
listener with the TLS context `serve --client-cert/--client-key` builds."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from click.testing import CliRunner

from liferaft.cli import main
from liferaft.client import AsyncClient, ClientError, TLSError
from tests.kv.one_node import OneNode

TOKEN = "s3cret-token-for-tls-tests"


class PlainRecorder:
    """A plain-TCP listener that records every byte and answers as an HTTP
    server does to bytes it cannot parse."""

    def __init__(self) -> None:
        self.got = bytearray()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                data = await asyncio.wait_for(r.read(65536), 10)
                self.got += data
                w.write(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                await w.drain()
            finally:
                w.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def tls_node(tmp_path: Path, ca: trustme.CA) -> AsyncIterator[OneNode]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    n = OneNode(tmp_path, ssl_context=ctx, token=TOKEN)
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


async def test_an_https_endpoint_on_plain_http_fails_and_never_sends_the_token(
    tmp_path: Path,
) -> None:
    rec = PlainRecorder()
    port = await rec.start()
    try:
        async with AsyncClient(f"https://127.0.0.1:{port}", token=TOKEN, timeout=5) as c:
            with pytest.raises(ClientError) as e:
                await c.put("k", "v")
        assert rec.got, "the client never connected"
        assert TOKEN.encode() not in rec.got and b"Authorization" not in rec.got
        assert isinstance(e.value, TLSError) and "TLS" in str(e.value)
    finally:
        await rec.stop()
    # The same against a real plain-HTTP node.
    plain = OneNode(tmp_path / "plain", token=TOKEN)
    await plain.start()
    try:
        async with AsyncClient(f"https://127.0.0.1:{plain.port}", token=TOKEN, timeout=5) as c:
            with pytest.raises(TLSError):
                await c.get("k")
    finally:
        await plain.stop()


async def test_https_works_with_the_ca_and_is_refused_without_it(
    tls_node: OneNode, ca: trustme.CA
) -> None:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ep = f"https://127.0.0.1:{tls_node.port}"
    async with AsyncClient(ep, token=TOKEN, ssl=ctx, timeout=5) as c:
        await c.put("k", "v")
        item = await c.get("k")
        assert item is not None and item.value == "v"
    # A bare host:port with a context is https too.
    async with AsyncClient(f"127.0.0.1:{tls_node.port}", token=TOKEN, ssl=ctx) as c:
        assert (await c.get("k")) is not None
    # Without the CA (the system's CAs only) the certificate is not trusted.
    async with AsyncClient(ep, token=TOKEN, timeout=5) as c:
        with pytest.raises(TLSError, match="certificate"):
            await c.get("k")


def test_an_ssl_context_with_http_endpoints_or_mixed_schemes_is_refused() -> None:
    with pytest.raises(ValueError, match="mix"):
        AsyncClient("http://127.0.0.1:1,https://127.0.0.1:2")
    with pytest.raises(ValueError, match="http://"):
        AsyncClient("http://127.0.0.1:1", ssl=ssl.create_default_context())
    with pytest.raises(ValueError, match="scheme"):
        AsyncClient("ftp://127.0.0.1:1")


async def test_the_cli_takes_cacert_for_https_endpoints(
    tls_node: OneNode, ca: trustme.CA, tmp_path: Path
) -> None:
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    common = ["--endpoints", f"https://127.0.0.1:{tls_node.port}", "--token-file", str(token)]

    def cli(*args: str) -> tuple[int, str]:
        r = CliRunner().invoke(main, list(args), catch_exceptions=False)
        return r.exit_code, r.output

    # The CLI runs its own event loop, so it goes to a thread; the node
    # keeps serving on this one.
    code, out = await asyncio.to_thread(
        cli, "kv", "put", "k", "v", *common, "--cacert", str(ca_pem)
    )
    assert code == 0, out
    code, out = await asyncio.to_thread(cli, "kv", "get", "k", *common, "--cacert", str(ca_pem))
    assert (code, out.strip()) == (0, "v")
    code, out = await asyncio.to_thread(cli, "kv", "get", "k", *common, "--timeout", "3")
    assert code == 1 and "TLS" in out and "Traceback" not in out
