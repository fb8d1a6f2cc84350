"""One stranger's connection to etcd's gRPC port must not grow the node's
memory without bound: a real ``liferaft serve``, one plain-text HTTP/2
connection (built by hand: RFC 9113 frames, HPACK literals) that opens
stream after stream and never finishes one.

Found by the adversarial review after the connection cap (commit 689d7d1):
the cap bounds connections, but grpc-core advertises no
SETTINGS_MAX_CONCURRENT_STREAMS and grpcio's server has no
``maximum_concurrent_rpcs``, so each connection may hold any number of
calls.  A Watch stream that never sends a request costs the node ~20 KiB
(a handler, its reader task and the call), a unary call whose message never
comes ~12 KiB (grpcio waits for the message before any handler, so
``--token-file`` does not help): 20,000 of them on one connection took the
node from ~65 MB to ~500 MB, and it keeps growing with every stream.
Now the port holds at most one call per connection of its cap, on any mix
of connections (liferaft/etcd/grpc_server.py); Authenticate, the one call
open without the token, waits for its message within a deadline and 64 at
most; and a connection with no call open goes after the header timeout, as
an idle one on the client port does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import Counter
from pathlib import Path

import aetcd
import grpc
import pytest

from liferaft.etcd.auth import derived_token
from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.etcd.proto import rpc_pb2_grpc
from tests.kv.procs import http, proc_cluster, rss_mib

STREAMS = 20_000
#: What a flood may add to the node's resident memory: the port's call
#: budget (1,024 calls of at most ~50 KiB) and the allocator's churn from
#: taking and refusing calls by the thousand (resident memory does not
#: shrink).  Measured: +65-75 MB at 20,000 calls and the same at 40,000
#: (it levels off); +500 MB at 20,000 and climbing without the budget.
MAX_GROWTH_MB = 128

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
    return head + struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:
    """HPACK literal header field without indexing, new name (lengths < 127)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def _headers(stream: int, path: str) -> bytes:
    """HEADERS (END_HEADERS, not END_STREAM): a call opened, no message."""
    block = b"".join(
        _literal(k, v)
        for k, v in [(":method", "POST"), (":scheme", "http"), (":path", path),
                     (":authority", "x"), ("content-type", "application/grpc"),
                     ("te", "trailers")]
    )  # fmt: skip
    return _frame(1, 0x4, stream, block)


def _drain(s: socket.socket) -> int:
    got = 0
    s.setblocking(False)
    try:
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            got += len(d)
    except (BlockingIOError, OSError):
        pass
    s.setblocking(True)
    return got


def _hello(s: socket.socket) -> socket.socket:
    """Start HTTP/2 on ``s``: the preface, empty SETTINGS, and the ACK of the node's."""
    s.sendall(PREFACE + _frame(4, 0, 0) + _frame(4, 1, 0))
    return s


def _connect(addr: str) -> socket.socket:
    """An HTTP/2 connection to ``addr`` (HOST:PORT), started."""
    host, _, port = addr.rpartition(":")
    return _hello(socket.create_connection((host, int(port)), timeout=10))


def _flood(addr: str, conns: int, calls: int, path: str, socks: list[socket.socket]) -> None:
    """``conns`` connections to ``addr``, each opening ``calls`` calls of
    ``path`` that never send a message; the node's answers are read."""
    for _ in range(conns):
        s = _connect(addr)
        socks.append(s)
        s.sendall(b"".join(_headers(1 + 2 * i, path) for i in range(calls)))
        time.sleep(0.1)
        for x in socks:
            _drain(x)


@pytest.mark.parametrize(
    ("path", "token"),
    [("/etcdserverpb.Watch/Watch", None), ("/etcdserverpb.KV/Range", "s3cret-token")],
    ids=["watch-streams", "unary-calls-with-token-file"],
)
def test_one_grpc_connection_cannot_grow_the_nodes_memory_without_bound(
    tmp_path: Path, path: str, token: str | None
) -> None:
    with proc_cluster(tmp_path, grpc=True, token=token) as c:
        leader = c.start_cluster(1)
        assert leader is not None
        node = c.nodes[leader]
        host, _, port = node.grpc.rpartition(":")
        time.sleep(1)
        before = rss_mib(node.pid)
        s = socket.create_connection((host, int(port)), timeout=10)
        peak = before
        try:
            _hello(s)
            stream = 1
            # In rounds, so grpc-core's queue of calls not yet taken by the
            # server (1,000) never overflows: each call reaches the node.
            for _ in range(STREAMS // 1000):
                s.sendall(b"".join(_headers(stream + 2 * i, path) for i in range(1000)))
                stream += 2000
                time.sleep(0.3)
                _drain(s)
                peak = max(peak, rss_mib(node.pid))
            time.sleep(1)
            _drain(s)
            peak = max(peak, rss_mib(node.pid))
            assert node.running(), node.log_tail()
            code, got = http(c.addr(leader), "GET", "/v1/status", token=token)
            assert code == 200 and got["storage_ok"] is True, got
        finally:
            s.close()
        assert peak - before <= MAX_GROWTH_MB, (
            f"{STREAMS} calls held open on one connection ({path}) took the node's "
            f"memory from {before:.0f} MiB to {peak:.0f} MiB"
        )


def test_many_connections_full_of_calls_stay_within_the_ports_call_budget(
    tmp_path: Path,
) -> None:
    """The port's call budget holds across connections: at
    --max-client-connections 64 the port takes 64 calls in all (one more is
    RESOURCE_EXHAUSTED): 40 connections offering 256 calls each (10,240,
    +293 MB held with only a per-connection bound) must not grow the node by
    more than MAX_GROWTH_MB."""
    extra = ["--max-client-connections", "64"]
    with proc_cluster(tmp_path, grpc=True, extra=extra) as c:
        leader = c.start_cluster(1)
        assert leader is not None
        node = c.nodes[leader]
        time.sleep(1)
        before = rss_mib(node.pid)
        peak = before
        socks: list[socket.socket] = []
        try:
            for _ in range(40):
                _flood(node.grpc, 1, 256, "/etcdserverpb.Watch/Watch", socks)
                peak = max(peak, rss_mib(node.pid))
            time.sleep(1)
            peak = max(peak, rss_mib(node.pid))
            assert node.running(), node.log_tail()
            code, got = http(c.addr(leader), "GET", "/v1/status")
            assert code == 200 and got["storage_ok"] is True, got
        finally:
            for s in socks:
                s.close()
        assert peak - before <= MAX_GROWTH_MB, (
            f"40 connections of 256 calls took the node's memory from {before:.0f} MiB "
            f"to {peak:.0f} MiB"
        )


def _closed_within(s: socket.socket, seconds: float) -> bool:
    """True once the node closed ``s`` (EOF), within ``seconds``."""
    deadline = time.monotonic() + seconds
    s.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            if s.recv(1 << 16) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_an_idle_grpc_connection_goes_after_the_header_timeout_but_one_with_a_call_stays(
    tmp_path: Path,
) -> None:
    """As the client port drops an idle kept-alive connection, the gRPC port
    drops one with no call open after --client-header-timeout (a graceful
    GOAWAY); a connection with a call open (a watch waiting for events) is
    not idle and stays."""
    extra = ["--client-header-timeout", "2"]
    with proc_cluster(tmp_path, grpc=True, extra=extra) as c:
        leader = c.start_cluster(1)
        assert leader is not None
        host, _, port = c.nodes[leader].grpc.rpartition(":")
        idle = socket.create_connection((host, int(port)), timeout=10)
        busy = socket.create_connection((host, int(port)), timeout=10)
        try:
            for s in (idle, busy):
                _hello(s)
            busy.sendall(_headers(1, "/etcdserverpb.Watch/Watch"))
            assert _closed_within(idle, 10), "an idle connection outlived the header timeout"
            assert not _closed_within(busy, 3), "a connection with a call open was dropped"
        finally:
            idle.close()
            busy.close()


def _ended_streams(data: bytes) -> set[int]:
    """Stream ids of the frames in ``data`` that end their stream (a
    trailers-only answer: HEADERS with END_STREAM)."""
    ended, at = set(), 0
    while at + 9 <= len(data):
        length = int.from_bytes(data[at : at + 3], "big")
        kind, flags = data[at + 3], data[at + 4]
        stream = int.from_bytes(data[at + 5 : at + 9], "big") & 0x7FFFFFFF
        if kind == 1 and flags & 0x1:
            ended.add(stream)
        at += 9 + length
    return ended


def test_a_call_without_the_token_is_refused_before_its_message(tmp_path: Path) -> None:
    """With --token-file, a call without the token is answered at its
    HEADERS (UNAUTHENTICATED-class etcd error, trailers only), not held
    until a message that a stranger never sends: grpcio reads a unary
    call's message before its handler, where the token was checked, so each
    such call held a slot of the port's call budget for as long as the
    stranger liked."""
    with proc_cluster(tmp_path, grpc=True, token="s3cret-token") as c:
        leader = c.start_cluster(1)
        assert leader is not None
        s = _connect(c.nodes[leader].grpc)
        try:
            paths = ["/etcdserverpb.KV/Range", "/etcdserverpb.KV/Put",
                     "/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive",
                     "/etcdserverpb.Maintenance/Snapshot"]  # fmt: skip
            ids = [1 + 2 * i for i in range(len(paths))]
            s.sendall(b"".join(_headers(i, p) for i, p in zip(ids, paths, strict=True)))
            got, deadline = b"", time.monotonic() + 5
            s.settimeout(0.2)
            while not set(ids) <= _ended_streams(got) and time.monotonic() < deadline:
                try:
                    got += s.recv(1 << 16)
                except TimeoutError:
                    continue
            assert set(ids) <= _ended_streams(got), sorted(_ended_streams(got))
        finally:
            s.close()


def test_a_client_idle_past_the_header_timeout_carries_on(tmp_path: Path) -> None:
    """The idle deadline's GOAWAY is graceful: an etcd client library
    (aetcd, asyncio gRPC) that waits longer than it between calls, and one
    that holds a watch meanwhile, sees every call succeed and every event."""


    with proc_cluster(tmp_path, grpc=True, extra=["--client-header-timeout", "1"]) as c:
        leader = c.start_cluster(1)
        assert leader is not None
        host, _, port = c.nodes[leader].grpc.rpartition(":")

        async def run() -> None:
            async with aetcd.Client(host=host, port=int(port), timeout=10) as idle, \
                    aetcd.Client(host=host, port=int(port), timeout=10) as watcher:  # fmt: skip
                events = await watcher.watch_prefix(b"idle/")
                for i in range(3):
                    await idle.put(f"idle/{i}".encode(), b"v")
                    got = await idle.get(f"idle/{i}".encode())
                    assert got is not None and got.value == b"v"
                    await asyncio.sleep(2.5)  # past the idle deadline
                seen = []
                async for ev in events:
                    seen.append(ev.kv.key)
                    if len(seen) == 3:
                        break
                assert seen == [b"idle/0", b"idle/1", b"idle/2"]

        asyncio.run(asyncio.wait_for(run(), 60))


def test_a_stranger_holding_authenticate_calls_does_not_lock_token_holders_out(
    tmp_path: Path,
) -> None:
    """With --token-file, every call but Authenticate is refused at its
    HEADERS; Authenticate is open, and grpcio still waits for its message
    before any handler.  So a stranger without the token who opens
    Authenticate calls and never sends their message holds them for as
    long as his connections live (a call open: the idle deadline does not
    apply), and once they fill the port's call budget (then 4,096 by
    default, 16 connections of 256 calls) every call of a client *with* the
    token is RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!".  Here 17
    connections of 256 against the default cap.  Now Authenticate reads its
    own message: at most 64 wait, each for the header timeout at most."""



    token = "s3cret-token"
    with proc_cluster(tmp_path, grpc=True, token=token) as c:
        leader = c.start_cluster(1)
        assert leader is not None
        node = c.nodes[leader]

        async def range_with_token() -> str:
            async with grpc.aio.insecure_channel(node.grpc) as ch:
                # The token is derived (auth.derived_token), so the failing
                # call below is the Range, not an Authenticate.
                md = (("token", derived_token(token)),)
                try:
                    await rpc_pb2_grpc.KVStub(ch).Range(
                        pb.RangeRequest(key=b"k"), metadata=md, timeout=10
                    )
                except grpc.aio.AioRpcError as e:
                    return f"{e.code().name}: {e.details()}"
                return "ok"

        assert asyncio.run(range_with_token()) == "ok"
        socks: list[socket.socket] = []
        try:
            _flood(node.grpc, 17, 256, "/etcdserverpb.Auth/Authenticate", socks)
            time.sleep(1)
            for x in socks:
                _drain(x)
            got = asyncio.run(range_with_token())
        finally:
            for s in socks:
                s.close()
        assert got == "ok", (
            f"a token holder's call, while a stranger holds Authenticate calls: {got}"
        )


def test_a_client_with_more_calls_than_the_stream_limit_queues_them(tmp_path: Path) -> None:
    """A per-connection limit (grpc.max_concurrent_streams, 256 for a while)
    did not make a client queue its calls: grpc-core's server refuses
    streams past its count with RST_STREAM REFUSED_STREAM, which a grpc-core
    client (grpcio, so aetcd and python-etcd3) surfaces as UNAVAILABLE
    "Stream removed" and does not retry, even on a connection long past its
    SETTINGS.  15-35% of 1,000 concurrent calls of one channel failed; the
    port's budget (1,024 by default) holds them all."""



    with proc_cluster(tmp_path, grpc=True) as c:
        leader = c.start_cluster(1)
        assert leader is not None
        node = c.nodes[leader]

        async def burst(n: int) -> Counter[str]:
            async with grpc.aio.insecure_channel(node.grpc) as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                await kv.Range(pb.RangeRequest(key=b"k"), timeout=20)  # connected, SETTINGS seen
                await asyncio.sleep(0.5)

                async def one() -> str:
                    try:
                        await kv.Range(pb.RangeRequest(key=b"k"), timeout=30)
                    except grpc.aio.AioRpcError as e:
                        return f"{e.code().name}: {e.details()}"
                    return "ok"

                return Counter(await asyncio.gather(*(one() for _ in range(n))))

        got = asyncio.run(burst(1000))
        assert got == Counter({"ok": 1000}), got


def test_an_authenticate_call_whose_message_never_comes_ends_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    """Authenticate is open to all, so it bounds its own wait: its message
    must come within --client-header-timeout, and 64 wait at most (the rest
    are refused at once)."""
    extra = ["--client-header-timeout", "1"]
    with proc_cluster(tmp_path, grpc=True, token="s3cret-token", extra=extra) as c:
        leader = c.start_cluster(1)
        assert leader is not None
        s = _connect(c.nodes[leader].grpc)
        try:
            ids = [1 + 2 * i for i in range(70)]
            s.sendall(b"".join(_headers(i, "/etcdserverpb.Auth/Authenticate") for i in ids))
            got = b""
            s.settimeout(0.1)
            t0 = time.monotonic()
            early: set[int] = set()
            while not set(ids) <= _ended_streams(got) and time.monotonic() - t0 < 8:
                with contextlib.suppress(TimeoutError):
                    got += s.recv(1 << 16)
                if time.monotonic() - t0 < 0.5:
                    early = _ended_streams(got)
            assert len(early) >= 6, early  # past 64 waiting: refused at once
            assert set(ids) <= _ended_streams(got), len(_ended_streams(got))  # the rest: 1 s
        finally:
            s.close()
