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
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from tests.kv.procs import http, proc_cluster

STREAMS = 20_000
#: What one connection may add to the node's resident memory.
MAX_GROWTH_MB = 64

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


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


def _rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS")


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
        before = _rss_mb(node.pid)
        s = socket.create_connection((host, int(port)), timeout=10)
        peak = before
        try:
            s.sendall(PREFACE + _frame(4, 0, 0) + _frame(4, 1, 0))  # SETTINGS, ACK
            stream = 1
            # In rounds, so grpc-core's queue of calls not yet taken by the
            # server (1,000) never overflows: each call reaches the node.
            for _ in range(STREAMS // 1000):
                s.sendall(b"".join(_headers(stream + 2 * i, path) for i in range(1000)))
                stream += 2000
                time.sleep(0.3)
                _drain(s)
                peak = max(peak, _rss_mb(node.pid))
            time.sleep(1)
            _drain(s)
            peak = max(peak, _rss_mb(node.pid))
            assert node.running(), node.log_tail()
            code, got = http(c.addr(leader), "GET", "/v1/status", token=token)
            assert code == 200 and got["storage_ok"] is True, got
        finally:
            s.close()
        assert peak - before <= MAX_GROWTH_MB, (
            f"{STREAMS} calls held open on one connection ({path}) took the node's "
            f"memory from {before} MB to {peak} MB"
        )
