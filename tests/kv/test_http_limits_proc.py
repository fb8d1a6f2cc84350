"""Client connections never take the file descriptors storage needs: real
`liferaft serve` processes at `ulimit -n 512`, the leader's client port
flooded with request heads that never finish (issue 12, defect 6)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.kv.procs import http, proc_cluster, wait_for

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
