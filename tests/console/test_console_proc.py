"""The console's server side on real ``liferaft serve`` processes: the stream
through any node shows the whole cluster (gathered over the peer RPC), a
stopped member shows down and then up, the static files never leave their
directory, the token guards the data, and a stranger on the peer port gets
no status."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest

from liferaft.chaos import peer_wire
from liferaft.runtime import peer_rpc
from tests.kv.procs import ProcCluster, proc_cluster

FIELDS = {"id", "voter", "peer_addr", "client_addr", "reachable", "role", "term", "leader",
          "commit_index", "applied_index", "last_log_index", "snapshot_index", "lag",
          "storage_ok", "error"}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    with proc_cluster(tmp_path_factory.mktemp("console")) as c:
        c.start_cluster(3)
        yield c


class Stream:
    """One open console stream, read line by line (bounded waits)."""

    def __init__(self, addr: str, token: str | None = None) -> None:
        host, port = addr.rsplit(":", 1)
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.conn.request("GET", "/v1/console/stream", headers=headers)
        self.resp = self.conn.getresponse()

    def line(self) -> dict[str, Any]:
        raw = self.resp.readline()  # http.client undoes the chunking
        assert raw, "the stream ended"
        got: dict[str, Any] = json.loads(raw)
        return got

    def until(self, check: Any, seconds: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            line = self.line()
            if check(line):
                return line
        raise AssertionError(f"no line with {what} within {seconds} s")

    def close(self) -> None:
        self.conn.close()


def _raw(addr: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """GET ``path`` exactly as written (http.client sends the target as is)."""
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def test_the_stream_shows_every_member_and_one_leader(cluster: ProcCluster) -> None:
    c = cluster
    leader = c.wait_leader()
    via = next(n for n in c.nodes if n != leader)
    s = Stream(c.addr(via))
    try:
        assert s.resp.status == 200
        assert s.resp.getheader("Content-Type") == "application/x-ndjson"
        t0 = time.monotonic()
        first = s.line()
        t1 = time.monotonic()
        assert first["via"] == via and isinstance(first["history"], list)
        assert isinstance(first["timeline"], list)
        assert [m["id"] for m in first["members"]] == ["n1", "n2", "n3"]
        assert all(set(m) == FIELDS for m in first["members"])
        assert first["leader"] == leader
        assert set(first["rates"]) >= {"t", "writes_per_s", "reads_per_s", "commit_p50_ms",
                                       "commit_p99_ms", "apply_lag"}  # fmt: skip
        second = s.line()
        t2 = time.monotonic()
        assert "history" not in second and isinstance(second["timeline"], list)
        assert second["at"] > first["at"]
        print(f"first line after {t1 - t0:.2f} s, second {t2 - t1:.2f} s later")
        # Right after start a member's status call may still miss its 0.8 s
        # (peer links coming up, a busy machine): every member answers soon.
        def all_up(ln: dict[str, Any]) -> bool:
            return all(m["reachable"] and m["error"] is None for m in ln["members"])

        line = s.until(all_up, 15, "every member reachable")
        leaders = [m["id"] for m in line["members"] if m["role"] == "leader"]
        assert leaders == [leader] == [line["leader"]]
        # Each member records its client address through the leader once it
        # serves: the page learns every one (where to carry on) within moments.
        want = {c.addr(n) for n in c.nodes}
        s.until(lambda ln: {m["client_addr"] for m in ln["members"]} == want, 15,
                "every member's client address")  # fmt: skip
    finally:
        s.close()


def test_a_stopped_member_shows_down_then_up(cluster: ProcCluster) -> None:
    c = cluster
    leader = c.wait_leader()
    via, gone = [n for n in c.nodes if n != leader][:2]
    s = Stream(c.addr(via))
    try:
        s.line()
        t0 = time.monotonic()
        c.pause(gone)
        try:
            def down(line: dict[str, Any]) -> bool:
                m = next(m for m in line["members"] if m["id"] == gone)
                return not m["reachable"]

            line = s.until(down, 15, f"{gone} unreachable")
            m = next(m for m in line["members"] if m["id"] == gone)
            assert m["error"] and m["role"] is None and m["term"] is None
            print(f"{gone} shown down after {time.monotonic() - t0:.2f} s")
            kinds = [(e["kind"], e["node"]) for e in line["timeline"]]
            if ("down", gone) not in kinds:  # the entry may come a line later
                s.until(lambda ln: any(e["kind"] == "down" and e["node"] == gone
                                       for e in ln["timeline"]), 5, "a down entry")  # fmt: skip
        finally:
            c.resume(gone)
        s.until(lambda ln: any(e["kind"] == "up" and e["node"] == gone for e in ln["timeline"]),
                15, "an up entry")  # fmt: skip
    finally:
        s.close()


def test_the_leader_tells_how_far_a_silent_member_lags(cluster: ProcCluster) -> None:
    """A member that does not answer has no figures of its own, but through
    the leader the page still sees how many entries it lacks (the leader's
    match index for it): the number an operator wants at that moment."""
    c = cluster
    leader = c.wait_leader()
    gone = next(n for n in c.nodes if n != leader)
    s = Stream(c.addr(leader))
    try:
        s.line()
        c.pause(gone)
        try:
            for i in range(5):
                status, _ = c.put(leader, f"console-lag/{i}", "v")
                assert status == 200
            line = s.until(
                lambda ln: any(m["id"] == gone and not m["reachable"] and (m["lag"] or 0) >= 5
                               for m in ln["members"]), 15, f"{gone} lagging by 5")  # fmt: skip
            m = next(m for m in line["members"] if m["id"] == gone)
            assert m["commit_index"] is None and m["error"]
        finally:
            c.resume(gone)
    finally:
        s.close()


def test_static_files_never_leave_their_directory(cluster: ProcCluster) -> None:
    addr = cluster.addr("n1")
    status, headers, body = _raw(addr, "/ui/")
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert headers["Cache-Control"] == "no-cache"
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and all(f"http://{cluster.addr(n)}" in csp
                                              for n in cluster.nodes)  # fmt: skip
    for path in ("/ui/../kv/server.py", "/ui/%2e%2e/front.py", "/ui/%2E%2E/%2E%2E/kv/server.py",
                 "/ui/..%2ffront.py", "/ui/static/index.html", "/ui/front.py", "/ui/.",
                 "/ui/%2e%2e", "/ui//etc/passwd", "/ui/index.html/.."):  # fmt: skip
        status, _, body = _raw(addr, path)
        assert status == 404, (path, status)
        assert b"import" not in body and b"<!doctype" not in body, path


def test_a_stranger_on_the_peer_port_gets_no_status(cluster: ProcCluster) -> None:
    c = cluster
    host, port = c.nodes["n1"].peer_addr.rsplit(":", 1)
    got = asyncio.run(peer_wire.call((host, int(port)), "liferaft", "x9",
                                     peer_rpc.StatusQuery(), 1, random.Random(7)))  # fmt: skip
    assert got.reply is None and "not a member" in got.text, got.text


def test_with_a_token_the_data_needs_it_and_the_page_does_not(tmp_path: Any) -> None:
    with proc_cluster(tmp_path, token="s3cret") as c:
        c.start_cluster(1)
        addr = c.addr("n1")
        status, headers, _ = _raw(addr, "/v1/console/stream")
        assert status == 401
        origin = f"http://{addr}"
        status, headers, _ = _raw(addr, "/v1/status", {"Origin": origin})
        assert status == 401 and headers["Access-Control-Allow-Origin"] == origin
        status, headers, _ = _raw(addr, "/ui/")
        assert status == 200
        s = Stream(addr, token="s3cret")
        try:
            assert s.resp.status == 200
            first = s.line()
            assert [m["role"] for m in first["members"]] == ["leader"]
        finally:
            s.close()
