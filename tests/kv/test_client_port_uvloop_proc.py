"""The client port's limits on a real ``liferaft serve`` process, which runs on
uvloop (tests/kv/test_http_limits.py checks the same listener in-process, on
asyncio's own loop).  uvloop's transports are not ``asyncio.Transport``
subclasses: the listener once tested for the class, so in production a
client that stopped reading was never dropped and a 408's connection
lingered 10 s, while every in-process test passed.

One node per module (it serves the etcd gateway too), a 0.5 s body timeout;
raw sockets, every wait bounded.  Tests share the node: each closes its
sockets, and the open-connection gauge must come back to the one connection
that reads it."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kv.procs import ProcCluster, proc_cluster, wait_for

BODY_TIMEOUT = 0.5
AFTER_408 = 3.0  # the 408's connection ends within CLOSE_GRACE (1 s); aiohttp alone: 10 s


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProcCluster, str]]:
    root: Path = tmp_path_factory.mktemp("limits")
    extra = ["--client-body-timeout", str(BODY_TIMEOUT)]
    with proc_cluster(root, grpc=True, extra=extra) as c:
        c.start_cluster(1)
        yield c, c.addr("n1")


def _open_connections(addr: str) -> float:
    """The node's open client connections, this request's own included."""
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=5).read().decode()
    m = re.search(r"^liferaft_http_connections_open (\S+)$", text, re.M)
    assert m is not None
    return float(m.group(1))


def _only_the_gauges_reader(addr: str, within: float) -> None:
    wait_for(lambda: _open_connections(addr) == 1, within, "every other connection's slot back")


def _connect(addr: str) -> socket.socket:
    host, port = addr.split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_until_closed(sock: socket.socket, within: float) -> bytes:
    """All the server sends until it closes (AssertionError if it does not
    within ``within`` seconds)."""
    sock.settimeout(within)
    got = b""
    deadline = time.monotonic() + within
    try:
        while chunk := sock.recv(65536):
            got += chunk
            sock.settimeout(max(0.01, deadline - time.monotonic()))
    except TimeoutError:
        raise AssertionError(f"still open {within} s later; got {got[:80]!r}") from None
    except ConnectionResetError:
        pass  # closed too
    return got


@pytest.mark.parametrize(
    "target",
    [b"PUT /v1/kv/k", b"POST /v1/sessions", b"POST /v3/kv/range"],
    ids=["hot-path", "routed", "etcd-gateway"],
)
def test_a_trickler_that_goes_on_after_its_408_loses_its_connection_at_once(
    node: tuple[ProcCluster, str], target: bytes
) -> None:
    """A stranger trickles a body, gets its 408 and keeps sending for ever
    without closing: the server's end of the stream follows the 408 (not
    aiohttp's 10 s of lingering) and the slot is back within the grace."""
    _, addr = node
    sock = _connect(addr)
    stop = threading.Event()

    def trickle() -> None:
        for _ in range(200):  # bounded: 10 s
            if stop.wait(0.05):
                return
            try:
                sock.send(b" " * 10)
            except OSError:
                return  # the server is gone: what it should do

    sender = threading.Thread(target=trickle, daemon=True)
    try:
        sock.sendall(target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
        sender.start()
        got = _read_until_closed(sock, BODY_TIMEOUT + AFTER_408)
        assert got.startswith(b"HTTP/1.1 408"), got[:100]
        _only_the_gauges_reader(addr, AFTER_408)
    finally:
        stop.set()
        if sender.ident is not None:
            sender.join(5)
        sock.close()


def test_nothing_pipelined_behind_a_408_is_served(node: tuple[ProcCluster, str]) -> None:
    """The rest of a late body, and a whole request behind it, sent after
    the 408: the request is never run (its key stays absent)."""
    c, addr = node
    sock = _connect(addr)
    try:
        body = b'{"value": "v"}  '  # its first byte on time, the rest after the 408
        sock.sendall(b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        sock.sendall(body[:1])
        sock.settimeout(BODY_TIMEOUT + 5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 408")
        smuggled = b"PUT /v1/kv/smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 14\r\n\r\n"
        with contextlib.suppress(OSError):  # the server already closed: nothing can be run
            sock.sendall(body[1:] + smuggled + b'{"value": "v"}')
        assert _read_until_closed(sock, AFTER_408) == b""
    finally:
        sock.close()
    assert c.get("n1", "smuggled")[0] == 404
    assert c.get("n1", "k")[0] == 404


def test_a_client_that_stops_reading_is_dropped(node: tuple[ProcCluster, str]) -> None:
    """A slow reader asks for a large value again and again and reads
    nothing: once the server's sends stall for the body timeout, the
    connection goes (under uvloop it was kept for ever)."""
    c, addr = node
    assert c.put("n1", "big", "v" * (1 << 20))[0] == 200
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        host, port = addr.split(":")
        sock.connect((host, int(port)))
        sock.sendall(b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n" * 16)
        _only_the_gauges_reader(addr, 10)  # 20 body timeouts
    finally:
        sock.close()
