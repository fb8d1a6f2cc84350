"""The client port bounds what a stranger can hold (docs/architecture.md, "Trust
model"): a request head must arrive within the header timeout, a body within
the body timeout, connections past the cap are closed at once and counted,
and the cap leaves file descriptors for storage.  One node behind the real
client listener; every wait is bounded."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from liferaft.kv.listener import FD_RESERVE, ClientLimits, connection_cap
from tests.kv.one_node import OneNode

PARTIAL_HEAD = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n"  # never finished


async def _connect(
    port: int, data: bytes = PARTIAL_HEAD
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """True if the server closes the connection within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass  # reset: closed too
    return True


# How soon after its 408 a connection must end: the answer comes after the
# body timeout, the end of the stream right after it (aiohttp alone would
# keep reading the body for 10 s: "lingering"), the slot within CLOSE_GRACE.
AFTER_408 = 3.0


async def _answer_to_a_short_body(one: OneNode, request: bytes) -> bytes:
    """Send ``request`` (whose body is shorter than announced) and read all
    the server says until it closes the connection, which it must do soon
    after its answer."""
    reader, writer = await _connect(one.port, request)
    try:
        async with asyncio.timeout(one.server_kw["body_timeout"] + 10):
            answer = await reader.readuntil(b"}")  # the JSON error body's end
        try:
            async with asyncio.timeout(AFTER_408):
                return answer + await reader.read()  # to EOF: the server closes
        except TimeoutError:
            raise AssertionError(f"the connection was open {AFTER_408} s after its 408") from None
    finally:
        writer.close()


async def _slots_back(one: OneNode, within: float) -> bool:
    """True once every connection's slot is given back, within ``within`` s."""
    assert one.listener is not None
    for _ in range(int(within / 0.05)):  # bounded
        if one.listener.gate.open == 0:
            return True
        await asyncio.sleep(0.05)
    return one.listener.gate.open == 0


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


async def _metrics(one: OneNode) -> str:
    reader, writer = await _connect(
        one.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    try:
        async with asyncio.timeout(10):
            resp = await reader.read()
    finally:
        writer.close()
    assert resp.startswith(b"HTTP/1.1 200"), resp[:100]
    return resp.partition(b"\r\n\r\n")[2].decode()


async def test_partial_request_heads_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    one = OneNode(tmp_path, limits=ClientLimits(header_timeout=0.5, max_connections=100))
    await one.start()
    held = []
    try:
        held = [await _connect(one.port) for _ in range(20)]
        # A normal request is served beside them.
        st, body = await one.call("GET", "/v1/status")
        assert st == 200 and body["id"] == "n1"
        for reader, _ in held:
            assert await _closed_by_server(reader, within=20), "a partial head was held open"
        st, _ = await one.call("GET", "/v1/status")
        assert st == 200
    finally:
        for _, w in held:
            w.close()
        await one.stop()


async def test_connections_past_the_cap_are_closed_at_once_and_counted(tmp_path: Path) -> None:
    # A header timeout far longer than the test: only the cap closes anything.
    one = OneNode(tmp_path, limits=ClientLimits(header_timeout=120, max_connections=6))
    await one.start()
    held = []
    try:
        held = [await _connect(one.port) for _ in range(6)]
        extra_reader, extra_writer = await _connect(one.port)
        held.append((extra_reader, extra_writer))
        assert await _closed_by_server(extra_reader, within=10), "the 7th connection was kept"
        for reader, _ in held[:6]:
            assert not await _closed_by_server(reader, within=0.01)
        # Once the holders go, their slots are free again.
        for _, w in held:
            w.close()
        assert one.listener is not None
        for _ in range(200):  # bounded: the server sees the closes within a moment
            if one.listener.gate.open == 0:
                break
            await asyncio.sleep(0.05)
        text = await _metrics(one)
        assert _metric(text, "liferaft_http_connections_refused_total") == 1
        assert _metric(text, "liferaft_http_connections_max") == 6
        st, _ = await one.call("GET", "/v1/status")
        assert st == 200
    finally:
        for _, w in held:
            w.close()
        await one.stop()


async def test_a_body_that_never_arrives_is_a_408_and_the_connection_closes(
    tmp_path: Path,
) -> None:
    one = OneNode(tmp_path, body_timeout=0.5)
    await one.start()
    try:
        head = b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        resp = await _answer_to_a_short_body(one, head + b'{"value":')
        status, _, rest = resp.partition(b"\r\n")
        assert status.startswith(b"HTTP/1.1 408")
        body = json.loads(rest.partition(b"\r\n\r\n")[2])
        assert body["error"] == "request_timeout" and "nothing applied" in body["message"]
        st, _ = await one.call("GET", "/v1/kv/k")
        assert st == 404
    finally:
        await one.stop()


async def test_a_tls_handshake_that_never_starts_holds_a_slot_only_until_the_timeout(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    one = OneNode(
        tmp_path,
        ssl_context=server_ctx,
        limits=ClientLimits(header_timeout=0.5, max_connections=3),
    )
    await one.start()
    held = []
    try:
        held = [await _connect(one.port, b"") for _ in range(3)]  # TCP only, no ClientHello
        for reader, _ in held:
            assert await _closed_by_server(reader, within=20), "a silent TLS client was kept"
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        reader, writer = await asyncio.open_connection("127.0.0.1", one.port, ssl=client_ctx)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(10):
            resp = await reader.read()
        writer.close()
        assert resp.startswith(b"HTTP/1.1 200")
    finally:
        for _, w in held:
            w.close()
        await one.stop()


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
async def test_a_client_still_sending_after_its_408_gets_the_answer_and_loses_its_slot(
    tmp_path: Path, tls: bool
) -> None:
    """A stranger trickles a body and goes on after its 408 without closing:
    it reads the whole 408 and the end of the stream, and its slot comes back
    within CLOSE_GRACE (with aiohttp's lingering: 10 s; on the hot path, a
    PUT of a key, and the routed app, a session)."""
    kw: dict[str, Any] = {}
    client_ctx = None
    if tls:
        ca = trustme.CA()
        kw["ssl_context"] = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(kw["ssl_context"])
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
    one = OneNode(tmp_path, body_timeout=0.5, **kw)
    await one.start()
    try:
        for target in (b"PUT /v1/kv/k", b"POST /v1/sessions"):
            reader, writer = await asyncio.open_connection("127.0.0.1", one.port, ssl=client_ctx)
            writer.write(target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 9000\r\n\r\n{")

            async def trickle(w: asyncio.StreamWriter = writer) -> None:
                for _ in range(200):  # bounded: 10 s
                    w.write(b" ")
                    await w.drain()
                    await asyncio.sleep(0.05)

            sending = asyncio.ensure_future(trickle())
            try:
                async with asyncio.timeout(10):
                    answer = await reader.readuntil(b"}")
                assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
                assert b"request_timeout" in answer
                async with asyncio.timeout(AFTER_408):
                    assert await reader.read() == b"", "more than the 408 on a closing connection"
                assert await _slots_back(one, within=AFTER_408), "the slot was held after the 408"
            finally:
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
                writer.close()
    finally:
        await one.stop()


def test_the_cap_keeps_descriptors_for_storage() -> None:
    assert connection_cap(1024, nofile=1024) == 1024 - FD_RESERVE
    assert connection_cap(100, nofile=1024) == 100
    assert connection_cap(10**6, nofile=65536) == 65536 - FD_RESERVE
    with pytest.raises(ValueError, match="ulimit -n"):
        connection_cap(1024, nofile=FD_RESERVE)
    # Two client ports (HTTP and etcd's gRPC) share the room: both full
    # still leave the reserve.
    assert connection_cap(1024, nofile=1024, ports=2) == (1024 - FD_RESERVE) // 2
    assert connection_cap(100, nofile=1024, ports=2) == 100
    with pytest.raises(ValueError, match="ulimit -n"):
        connection_cap(1024, nofile=FD_RESERVE + 1, ports=2)


async def test_opening_a_session_with_a_body_that_never_arrives_is_a_408(tmp_path: Path) -> None:
    # Every route that reads a body is bounded by the body timeout, not only
    # the key routes: POST /v1/sessions held a trickled body forever.
    one = OneNode(tmp_path, body_timeout=0.5)
    await one.start()
    try:
        head = b"POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n"
        resp = await _answer_to_a_short_body(one, head + b"{")
        assert resp.startswith(b"HTTP/1.1 408"), resp[:100]
    finally:
        await one.stop()


async def test_a_client_that_stops_reading_its_responses_is_dropped(tmp_path: Path) -> None:
    """A slow reader: it asks for large values and never reads the answers.
    Its connection (and the buffered responses) must go once sending has
    stalled for the body timeout, not stay for as long as the client likes.
    The listener's body timeout is the one that bounds a stalled send (the
    server's bounds reads); left at its 30 s default, the bounded wait below
    would end about when the default does and prove nothing."""
    one = OneNode(
        tmp_path, body_timeout=0.5, limits=ClientLimits(header_timeout=0.5, body_timeout=0.5)
    )
    await one.start()
    sock = socket.socket()
    try:
        st, _ = await one.call("PUT", "/v1/kv/big", {"value": "v" * (1 << 20)})
        assert st == 200
        # A small receive window, and more pipelined answers than the kernel
        # buffers hold, so the server's writes do stall.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", one.port))
        await asyncio.get_running_loop().sock_sendall(
            sock, b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n" * 16
        )
        assert one.listener is not None
        for _ in range(100):  # bounded: 10 s at most, 20 times the body timeout
            if one.listener.gate.open == 0:
                break
            await asyncio.sleep(0.1)
        assert one.listener.gate.open == 0, "a client that reads nothing was kept"
    finally:
        sock.close()
        await one.stop()


async def test_accepted_client_connections_send_without_nagle_delays(tmp_path: Path) -> None:
    """The listener accepts sockets itself (to count them from accept), so it
    must turn Nagle's algorithm off as asyncio's servers do: else a response
    written while the previous one is unacknowledged waits some 40 ms for
    the client's delayed ACK (asyncio's own loop; uvloop sets it anyway)."""
    loop = asyncio.get_running_loop()
    real = loop.connect_accepted_socket
    seen: list[bool] = []

    async def spy(factory: Any, sock: socket.socket, **kw: Any) -> Any:
        seen.append(bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        return await real(factory, sock, **kw)

    loop.connect_accepted_socket = spy  # type: ignore[method-assign]
    one = OneNode(tmp_path)
    try:
        await one.start()
        st, _ = await one.call("GET", "/v1/status")
        assert st == 200 and seen and all(seen)
    finally:
        del loop.connect_accepted_socket
        await one.stop()


async def test_client_connections_read_under_the_mmap_threshold(tmp_path: Path) -> None:
    """Like peer links (docs/transport.md, "Reads"): asyncio's 256 KiB read
    buffer per recv can cost an mmap and page faults per request."""
    loop = asyncio.get_running_loop()
    real = loop.connect_accepted_socket
    transports: list[Any] = []

    async def spy(factory: Any, sock: socket.socket, **kw: Any) -> Any:
        transport, protocol = await real(factory, sock, **kw)
        transports.append(transport)
        return transport, protocol

    loop.connect_accepted_socket = spy  # type: ignore[method-assign]
    one = OneNode(tmp_path)
    try:
        await one.start()
        st, _ = await one.call("GET", "/v1/status")
        assert st == 200 and transports
        assert all(t.max_size <= 64 * 1024 for t in transports)
    finally:
        del loop.connect_accepted_socket
        await one.stop()


@pytest.mark.parametrize("field", ["header_timeout", "body_timeout"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0])
def test_client_limits_refuse_a_timeout_that_bounds_nothing(field: str, bad: float) -> None:
    # NaN passes a "<= 0" check; as a timer's delay uvloop raises on it.
    kw: dict[str, Any] = {field: bad}
    with pytest.raises(ValueError, match=field):
        ClientLimits(**kw)
