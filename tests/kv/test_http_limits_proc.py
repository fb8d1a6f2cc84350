"""Client connections never take the file descriptors storage needs: real
`liferaft serve` processes at `ulimit -n 512`, the leader's client port
flooded with request heads that never finish (issue 12, defect 6), or its
gRPC port (etcd's API) flooded with connections that never say a word."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest

from liferaft.kv.listener import FD_RESERVE
from tests.kv.procs import http, proc_cluster, rss_mib, wait_for

NOFILE = 512


def test_a_flooded_client_port_leaves_descriptors_for_storage(tmp_path: Path) -> None:
    # Snapshots every 10 entries: each opens files (temp file, directory
    # fsync, a new WAL segment) while the flood holds the client port.
    extra = ["--snapshot-entries", "10", "--client-header-timeout", "120"]
    with proc_cluster(tmp_path, extra=extra, nofile=NOFILE) as c:
        leader = c.start_cluster(3)
        assert leader is not None
        follower = next(i for i in sorted(c.nodes) if i != leader)
        host, _, port = c.addr(leader).rpartition(":")
        socks: list[socket.socket] = []
        try:
            for _ in range(NOFILE + 100):  # more than the node could ever open
                s = socket.create_connection((host, int(port)), timeout=5)
                s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
            # Writes through a follower are forwarded to the flooded leader,
            # which must still append, fsync and snapshot them.
            for i in range(40):
                code, got = c.put(follower, f"flood/{i}", "v")
                assert code == 200, got
        finally:
            for s in socks:
                s.close()
        assert c.nodes[leader].running(), c.nodes[leader].log_tail()

        def status() -> dict[str, object] | None:
            code, got = http(c.addr(leader), "GET", "/v1/status")
            return got if code == 200 else None

        st = wait_for(status, 20, "the flooded node's client port to answer again")
        assert st["storage_ok"] is True and st["snapshot_index"], st
        code, got = http(c.addr(leader), "GET", "/v1/kv/flood/39?consistency=stale")
        assert code == 200 and got["value"] == "v"
        assert "too many open files" not in c.nodes[leader].log_tail(400).lower()


def _open_sockets(pid: int) -> int:
    """The sockets ``pid`` holds now (one closed while counted is not)."""
    n = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(FileNotFoundError):
            n += "socket" in fd.readlink().name
    return n


def test_a_flooded_grpc_port_leaves_descriptors_for_storage_and_the_client_port(
    tmp_path: Path,
) -> None:
    """gRPC's own server took every connection it was offered and kept a
    silent one for 120 s (grpc-core's handshake timeout), so a stranger
    could take all of the node's descriptors through etcd's port: its
    snapshots and WAL segments then failed with EMFILE.  The gRPC port must
    keep within its share of the open-file limit, as the client port does,
    and drop a connection that says nothing within --client-header-timeout."""
    extra = ["--snapshot-entries", "10", "--client-header-timeout", "3"]
    with proc_cluster(tmp_path, extra=extra, nofile=NOFILE, grpc=True) as c:
        leader = c.start_cluster(3)
        assert leader is not None
        follower = next(i for i in sorted(c.nodes) if i != leader)
        node = c.nodes[leader]
        assert node.child is not None
        host, _, port = node.grpc.rpartition(":")
        before = _open_sockets(node.child.pid)
        socks: list[socket.socket] = []
        try:
            for _ in range(NOFILE + 100):  # more than the node could ever open
                socks.append(socket.create_connection((host, int(port)), timeout=5))
            time.sleep(1)  # the node accepts (and drops) what it was offered
            # The node holds at most its share of the limit for gRPC, so
            # its client port still answers and its storage still works.
            held = _open_sockets(node.child.pid) - before
            # A few sockets of the node's own may come and go meanwhile (a
            # peer or proxy connection, one grpc-core accepts and then
            # drops): a margin of 8 against the 482 held without the cap.
            assert held <= (NOFILE - FD_RESERVE) // 2 + 8, held
            code, got = http(c.addr(leader), "GET", "/v1/status")
            assert code == 200 and got["storage_ok"] is True, got
            for i in range(40):
                code, got = c.put(follower, f"flood/{i}", "v")
                assert code == 200, got
            # Silent connections are dropped after the header timeout (3 s).
            deadline = time.monotonic() + 15
            while _open_sockets(node.child.pid) - before > 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _open_sockets(node.child.pid) - before <= 5, _open_sockets(node.child.pid)
        finally:
            for s in socks:
                s.close()
        assert node.running(), node.log_tail()
        code, got = http(c.addr(leader), "GET", "/v1/status")
        assert code == 200 and got["storage_ok"] is True and got["snapshot_index"], got
        assert "too many open files" not in node.log_tail(400).lower()


@pytest.mark.xfail(
    strict=True,
    reason="known gap (docs/kv.md, 'Client port limits'): aiohttp bounds a head's lines "
    "(128 of 8 KiB names and values), not its total size, and the listener does not yet "
    "count a head's bytes; a budget there (nginx keeps a head within 32 KiB) is the fix",
)
def test_request_heads_from_strangers_hold_little_memory(tmp_path: Path) -> None:
    """Found by the adversarial review (HTTP client port): aiohttp's parser
    takes a request head of up to 128 header lines of 8 KiB names and 8 KiB
    values (about 2 MiB), and the token is checked only once the head is
    complete, so a stranger with no token held about 1.9 MiB of the node's
    memory per connection, for the header timeout and again on reconnecting:
    at the default cap of 1024 connections, about 2 GiB.  The connection
    cap bounds connections, not memory; a head this size must be refused
    (431) long before it is all buffered.  100 connections, each sending
    ~1 MiB of header lines and never ending the head, with a token file."""
    conns = 100
    extra = ["--client-header-timeout", "60"]  # only the head's size may bound it
    with proc_cluster(tmp_path, extra=extra, token="s3cret") as c:
        leader = c.start_cluster(1)
        assert leader is not None
        node = c.nodes[leader]
        assert node.child is not None
        host, _, port = c.addr(leader).rpartition(":")
        lines = b"".join(b"X-%03d: " % i + b"v" * 8000 + b"\r\n" for i in range(120))
        before = rss_mib(node.child.pid)
        socks: list[socket.socket] = []
        try:
            for _ in range(conns):
                s = socket.create_connection((host, int(port)), timeout=5)
                socks.append(s)
                # Sent whole or refused: a reset or a closed window is the
                # node refusing it, which is what this test asks for.
                with contextlib.suppress(OSError):
                    s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n" + lines)
            time.sleep(2)  # the node parses what it was sent
            grown = rss_mib(node.child.pid) - before
        finally:
            for s in socks:
                s.close()
        assert node.running(), node.log_tail()
        # A few hundred KiB a connection at most (kernel buffers aside).
        assert grown < 32, f"{conns} unfinished heads grew the node by {grown:.0f} MiB"
