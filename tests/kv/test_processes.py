"""System tests: real ``liferaft serve`` processes on 127.0.0.1.

Each test starts its own cluster through :mod:`tests.kv.procs` (free ports,
logs in tmp_path, every process ended by PID even on failure) and drives it
over HTTP and through the ``liferaft`` CLI as a subprocess: kill -9 of the
leader under writes, a restarted follower caught up by snapshot, membership
changes and leadership transfer through the CLI, the read consistency modes,
an idempotent retry after a 504, bearer-token auth, ``cluster up`` and
``serve``'s one-line startup errors.

Real time passes here, so every wait is bounded; nothing asserts timings.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.kv.procs import (
    CLI,
    HOST,
    ProcCluster,
    Writer,
    free_base_port,
    free_port,
    http,
    http_full,
    kill_pids,
    kv_path,
    pid_alive,
    pids_with_arg,
    proc_cluster,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


def must_put(
    c: ProcCluster,
    key: str,
    value: str,
    req: dict[str, int] | None = None,
    ids: list[str] | None = None,
) -> int:
    """PUT in a client session (``req``: session, seq, lowest_pending; by
    default seq 1 of a new session), retried with those same fields on any
    live node until 200; the revision."""
    cands = ids or c.live_ids()
    if req is None:
        req = {"session": c.open_session(cands), "seq": 1, "lowest_pending": 1}
    tries = {"n": 0}

    def attempt() -> int | None:
        node = cands[tries["n"] % len(cands)]
        tries["n"] += 1
        code, body = c.put(node, key, value, **req, timeout=5.0)
        return int(body["revision"]) if code == 200 else None

    return wait_for(attempt, 20, f"PUT {key}={value} acknowledged", interval=0.1)


def status_of(c: ProcCluster, node: str) -> dict[str, Any]:
    return wait_for(lambda: c.status(node), 10, f"/v1/status of {node}")


# -- failures ------------------------------------------------------------------------------


def test_kill_9_of_the_leader_while_a_client_writes_loses_no_acknowledged_write(
    tmp_path: Path,
) -> None:
    with proc_cluster(tmp_path) as c:
        c.start_cluster(3)
        w = Writer(c, keys=10)
        w.start()
        try:
            w.wait_count(30)
            old, pid = c.leader_pid()
            c.kill(old)
            assert not pid_alive(pid)
            at_kill = w.count
            new = c.wait_leader(not_=old)
            assert new != old
            # The new leader takes writes: 30 more acknowledged after the kill.
            w.wait_count(at_kill + 30, timeout=30)
        finally:
            w.stop_ev.set()
        acked = w.finish()
        assert len(acked) == 10
        # A sequential client: each acknowledged write committed after the last.
        assert w.revisions == sorted(w.revisions)
        assert len(set(w.revisions)) == len(w.revisions)
        for node in c.live_ids():
            for key, (value, rev) in acked.items():
                code, body = c.get(node, key)  # linearizable, on each survivor
                assert code == 200, (node, key, code, body)
                assert (body["value"], body["revision"]) == (value, rev), (node, key)
        # The killed leader comes back with its data and catches up.
        c.start(old)
        want = {k: {"key": k, "value": v, "revision": r} for k, (v, r) in acked.items()}

        def caught_up() -> bool:
            code, body = c.request(old, "GET", "/v1/kv?prefix=w/&consistency=stale")
            got = {i["key"]: {f: i[f] for f in ("key", "value", "revision")} for i in body["items"]}
            return code == 200 and got == want

        wait_for(caught_up, 20, f"{old} to serve every acknowledged write after its restart")


def test_a_restarted_follower_catches_up_by_snapshot_after_compaction(tmp_path: Path) -> None:
    with proc_cluster(tmp_path, extra=["--snapshot-entries", "20"]) as c:
        leader = c.start_cluster(3)
        assert leader is not None
        follower = next(i for i in sorted(c.nodes) if i != leader)
        for i in range(5):
            must_put(c, f"early/{i}", str(i), ids=[leader])
        commit = status_of(c, leader)["commit_index"]
        wait_for(
            lambda: (c.status(follower) or {}).get("applied_index", 0) >= commit,
            10,
            f"{follower} to apply {commit}",
        )
        down_at = status_of(c, follower)["applied_index"]
        c.kill(follower)

        ids = [i for i in c.nodes if i != follower]
        for i in range(200):
            must_put(c, f"k/{i:03d}", f"v{i}", ids=ids)
        leader = c.wait_leader(among=ids)
        commit = status_of(c, leader)["commit_index"]
        assert commit >= down_at + 200
        # Both live nodes have compacted far past where the follower stopped,
        # so it cannot catch up from the log alone.
        for i in ids:
            wait_for(
                lambda i=i: (c.status(i) or {}).get("snapshot_index", 0) >= down_at + 100,
                10,
                f"{i} to snapshot past the stopped follower",
            )

        c.start(follower)
        st = wait_for(
            lambda: (s := c.status(follower)) and s["applied_index"] >= commit and s,
            20,
            f"{follower} to apply {commit}",
        )
        assert st["snapshot_index"] > down_at
        # It got there by a snapshot from a live node (its log after the restart).
        since_restart = c.nodes[follower].log_path.read_text().rsplit("---- start", 1)[1]
        got_snap = re.findall(r"snapshot (\d+) from (n\d) received", since_restart)
        assert got_snap, since_restart[-2000:]
        assert int(got_snap[0][0]) > down_at and got_snap[0][1] in ids
        # Stale reads on THAT node only (no ReadIndex round through the leader).
        code, body = c.request(follower, "GET", "/v1/kv?prefix=k/&consistency=stale")
        assert code == 200
        got = {i["key"]: i["value"] for i in body["items"]}
        assert got == {f"k/{i:03d}": f"v{i}" for i in range(200)}
        for i in (0, 57, 199):
            code, body = c.get(follower, f"k/{i:03d}", "stale")
            assert code == 200 and body["value"] == f"v{i}"
        code, body = c.get(follower, "early/3", "stale")
        assert code == 200 and body["value"] == "3"


def test_kill_9_of_every_node_then_restart_loses_no_acknowledged_write(tmp_path: Path) -> None:
    with proc_cluster(tmp_path) as c:
        c.start_cluster(3)
        acked = {f"d/{i}": must_put(c, f"d/{i}", f"v{i}") for i in range(40)}
        term = max(st["term"] for st in (c.status(i) for i in c.nodes) if st)
        for i in list(c.nodes):
            c.kill(i)
        for i in list(c.nodes):
            c.start(i)
        leader = c.wait_leader()
        assert status_of(c, leader)["term"] > term
        for key, rev in acked.items():
            code, body = c.get(leader, key)
            assert code == 200 and (body["value"], body["revision"]) == (f"v{key[2:]}", rev)
        code, body = c.put(leader, "d/after", "x")
        assert code == 200 and body["revision"] > max(acked.values())


def test_a_sigstopped_leader_never_serves_a_stale_linearizable_read(tmp_path: Path) -> None:
    with proc_cluster(tmp_path) as c:
        old = c.start_cluster(3)
        assert old is not None
        assert must_put(c, "x", "before", ids=[old])
        c.pause(old)
        try:
            others = [i for i in c.nodes if i != old]
            assert c.wait_leader(among=others) != old
            rev = must_put(c, "x", "during", ids=others)
        finally:
            c.resume(old)
        # Right after SIGCONT the old leader may still believe it leads: a
        # linearizable read there may fail, but never answer the old value.
        answers = []

        def read_on_old() -> bool:
            code, body = c.request(old, "GET", kv_path("x"), timeout=10)
            answers.append((code, body))
            return code == 200

        wait_for(read_on_old, 20, f"a linearizable read on {old}", interval=0.02)
        for code, body in answers:
            if code == 200:
                assert (body["value"], body["revision"]) == ("during", rev), answers
            else:  # refused, timed out, or no answer in time: never a stale value
                assert code in (0, 503, 504), answers
        st = wait_for(
            lambda: (s := c.status(old)) and s["role"] == "follower" and s["leader"] and s,
            20,
            f"{old} to follow",
        )
        assert st["leader"] in others


# -- membership and leadership through the CLI --------------------------------------------


def _members_via_cli(c: ProcCluster, ids: list[str]) -> list[dict[str, Any]]:
    r = c.cli("members", "list", "--json", "--endpoints", c.endpoints(ids))
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout))


def test_add_and_remove_a_member_through_the_cli_while_writing(tmp_path: Path) -> None:
    with proc_cluster(tmp_path) as c:
        c.start_cluster(3)
        first = ["n1", "n2", "n3"]
        w = Writer(c, keys=5, ids=first)
        w.start()
        try:
            w.wait_count(10)
            c.add_joining("n4", via="n2")

            n4 = c.nodes["n4"]

            def n4_is_voter() -> bool:
                code, body = c.request("n1", "GET", "/v1/members")
                return code == 200 and any(
                    m["id"] == "n4" and m["voter"] and m["client_addr"] == n4.client_addr
                    for m in body["members"]
                )

            wait_for(n4_is_voter, 40, "n4 to join as a voter (and announce its API)", 0.2)
            ms = {m["id"]: m for m in _members_via_cli(c, first)}
            assert sorted(ms) == ["n1", "n2", "n3", "n4"]
            assert ms["n4"] == {
                "id": "n4",
                "voter": True,
                "peer_addr": n4.peer_addr,
                "client_addr": n4.client_addr,
            }
            # The new member has the data (served from its own state).
            wait_for(
                lambda: c.get("n4", "w/0", "stale")[0] == 200,
                20,
                "n4 to hold the data",
            )
            n = w.count
            w.wait_count(n + 10)

            r = c.cli("members", "remove", "n4", "--json", "--endpoints", c.endpoints(first))
            assert r.returncode == 0, r.stderr
            assert "n4" not in {m["id"] for m in json.loads(r.stdout)}, r.stdout
            assert sorted(m["id"] for m in _members_via_cli(c, first)) == first
            st = status_of(c, "n1")
            assert sorted(m["id"] for m in st["members"]) == first
            n = w.count
            w.wait_count(n + 10)
        finally:
            w.stop_ev.set()
        acked = w.finish()
        for key, (value, rev) in acked.items():
            code, body = c.get("n1", key)
            assert code == 200 and (body["value"], body["revision"]) == (value, rev)


def test_members_remove_answers_with_the_membership_after_the_removal(tmp_path: Path) -> None:
    """Was a bug: the answer came before the core applied the removal."""
    with proc_cluster(tmp_path) as c:
        leader = c.start_cluster(3)
        gone = next(i for i in sorted(c.nodes) if i != leader)
        r = c.cli("members", "remove", gone, "--json")
        assert r.returncode == 0, r.stderr
        # Once the answer has come, the removal is applied on the leader...
        code, body = c.request(str(leader), "GET", "/v1/members")
        assert code == 200 and gone not in {m["id"] for m in body["members"]}
        # ...and the answer itself must say so.
        assert gone not in {m["id"] for m in json.loads(r.stdout)}, r.stdout


def test_transfer_leader_through_the_cli(tmp_path: Path) -> None:
    with proc_cluster(tmp_path) as c:
        old = c.start_cluster(3)
        assert old is not None
        term = status_of(c, old)["term"]
        target = next(i for i in sorted(c.nodes) if i != old)
        r = c.cli("transfer-leader", "--to", target, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"leader": target}
        assert c.wait_leader() == target
        st = status_of(c, target)
        assert st["role"] == "leader" and st["term"] > term
        assert status_of(c, old)["role"] == "follower"
        code, body = c.put(target, "after-transfer", "yes")
        assert code == 200, body
        # And back (the CLI finds the new leader among the endpoints itself).
        r = c.cli("transfer-leader", "--to", old, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"leader": old}
        assert c.wait_leader() == old


def test_transfer_leader_to_a_non_member_is_refused_at_once(tmp_path: Path) -> None:
    """Was a bug: a 504 after the whole request timeout instead of a 4xx."""
    with proc_cluster(tmp_path, extra=["--request-timeout", "1"]) as c:
        leader = c.start_cluster(3)
        assert leader is not None
        code, body = c.request(leader, "POST", "/v1/leader/transfer", {"to": "n9"})
        assert code in (400, 404, 409), (code, body)
        assert c.wait_leader() == leader


# -- reads, retries, auth ------------------------------------------------------------------


def test_each_consistency_mode_and_an_unknown_one(tmp_path: Path) -> None:
    with proc_cluster(tmp_path) as c:
        leader = c.start_cluster(3)
        assert leader is not None
        follower = next(i for i in sorted(c.nodes) if i != leader)
        code, body = c.put(follower, "mode/key", "v1")  # forwarded to the leader
        assert code == 200, body
        rev = body["revision"]
        want = {"key": "mode/key", "value": "v1", "revision": rev, "create_revision": rev,
                "version": 1}
        for node in (leader, follower):
            # linearizable first: once it answers, this node has applied the write,
            # so the stale read after it must see it too.
            for mode in ("linearizable", "lease", "stale", None):
                code, body = c.get(node, "mode/key", mode)
                assert (code, body) == (200, want), (node, mode)
                code, body = c.get(node, "mode/missing", mode)
                assert code == 404 and body["error"] == "not_found", (node, mode)
            code, body = c.get(node, "mode/key", "sequential")
            assert code == 400 and body["error"] == "bad_request", (node, body)
            code, body = c.request(node, "GET", "/v1/kv?prefix=mode/&consistency=bogus")
            assert code == 400 and body["error"] == "bad_request"
            code, body = c.request(node, "GET", "/v1/kv?prefix=mode/&consistency=stale")
            assert code == 200 and body["items"] == [want]


def test_a_retry_after_a_504_in_the_same_session_applies_once(tmp_path: Path) -> None:
    # An election timeout (1 s) no shorter than the request timeout (1 s): a
    # leader cut off from its followers stays leader for at least 1 s (check
    # quorum looks once per election timeout), so the PUT times out (504)
    # instead of meeting a deposed leader (503).
    timing = ["--election-timeout", "1000", "--heartbeat-interval", "100"]
    with proc_cluster(tmp_path, timing=timing, extra=["--request-timeout", "1"]) as c:
        c.start_cluster(3)
        must_put(c, "idem", "v0")
        leader = c.wait_leader()
        followers = [i for i in c.nodes if i != leader]
        req = {"session": c.open_session(), "seq": 1, "lowest_pending": 1}
        for f in followers:
            c.pause(f)
        try:
            code, body = c.put(leader, "idem", "v1", **req, timeout=10)
            assert code == 504, body
            assert body["error"] == "timeout"
            # Cut off for longer, the leader steps down (check quorum); a write
            # then is refused without being proposed: 503 with Retry-After.
            wait_for(
                lambda: (c.status(leader) or {}).get("role") not in (None, "leader"),
                10,
                "the isolated leader to step down",
            )
            code, body, headers = http_full(
                c.addr(leader), "PUT", kv_path("never"), {"value": "x"}, timeout=10
            )
            assert code == 503, body
            assert body["error"] == "no_leader"
            assert headers.get("Retry-After")
        finally:
            for f in followers:
                c.resume(f)
        rev = must_put(c, "idem", "v1", req)
        c.wait_leader()
        for node in c.live_ids():  # a second retry, anywhere: the same outcome
            assert must_put(c, "idem", "v1", req, [node]) == rev, node
        code, body = c.get(followers[0], "idem")
        assert (code, body["value"], body["revision"]) == (200, "v1", rev)
        # The 503 write was not applied.
        code, body = c.get(leader, "never")
        assert code == 404, body


def test_bearer_token_auth(tmp_path: Path) -> None:
    token = "s3cret-token"
    with proc_cluster(tmp_path, token=token) as c:
        leader = c.start_cluster(3)
        assert leader is not None
        follower = next(i for i in sorted(c.nodes) if i != leader)
        for node in (leader, follower):
            addr = c.addr(node)
            for tok in (None, "wrong", token + "x"):
                for method, path, body in (
                    ("GET", "/v1/status", None),
                    ("GET", kv_path("auth/k"), None),
                    ("PUT", kv_path("auth/k"), {"value": "bad"}),
                    ("DELETE", kv_path("auth/k"), None),
                    ("GET", "/v1/members", None),
                ):
                    code, got = http(addr, method, path, body, token=tok)
                    assert code == 401, (node, tok, method, path, got)
                    assert got["error"] == "unauthorized"
            code, got = http(addr, "GET", "/v1/status", headers={"Authorization": token})
            assert code == 401  # the scheme is required
            for path in ("/healthz", "/readyz"):
                code, got = http(addr, "GET", path)
                assert code == 200, (node, path, got)
        # Nothing unauthorized was applied.
        code, got = c.get(leader, "auth/k")
        assert code == 404, got
        code, got = c.put(follower, "auth/k", "good")
        assert code == 200, got
        for node in (leader, follower):
            code, got = c.get(node, "auth/k")
            assert code == 200 and got["value"] == "good"
        # The CLI with and without --token-file.
        r = c.cli("kv", "get", "auth/k", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["value"] == "good"
        r = c.cli("kv", "put", "auth/cli", "w")  # a CLI write opens a session first
        assert r.returncode == 0, r.stderr
        code, got = c.get(leader, "auth/cli")
        assert code == 200 and got["value"] == "w", got
        r = subprocess.run(
            [*CLI, "kv", "get", "auth/k", "--json", "--endpoints", c.endpoints()],
            capture_output=True,
            text=True,
            timeout=40,
        )
        assert r.returncode != 0
        assert json.loads(r.stdout)["error"] == "unauthorized"


# -- cluster up ---------------------------------------------------------------------------


_STOPPED = re.compile(r"(n\d+) \(pid (\d+), exit (-?\d+)\)")


def test_cluster_up_stops_every_node_on_sigint_and_resumes_its_data(tmp_path: Path) -> None:
    d = (tmp_path / "cluster").resolve()
    base = free_base_port(3)
    clients = [f"{HOST}:{base + 1000 + i}" for i in (1, 2, 3)]
    env = {**os.environ, "COLUMNS": "300"}
    started: list[subprocess.Popen[bytes]] = []

    def up(run: int) -> tuple[subprocess.Popen[bytes], Path]:
        out = tmp_path / f"up{run}.log"
        with open(out, "wb") as f:
            p = subprocess.Popen(
                [*CLI, "cluster", "up", "--nodes", "3", "--dir", str(d)]
                + ["--base-port", str(base), "--no-table"],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        started.append(p)
        return p, out

    def leader_addr() -> str | None:
        for a in clients:
            code, st = http(a, "GET", "/v1/status", timeout=1.0)
            if code == 200 and st["role"] == "leader" and st["leader_client_addr"]:
                return str(st["leader_client_addr"])
        return None

    def nodes_of(p: subprocess.Popen[bytes]) -> set[int]:
        return pids_with_arg(f"--data-dir {d}/n") - {p.pid}

    def three_nodes(p: subprocess.Popen[bytes]) -> set[int]:
        return wait_for(lambda: (s := nodes_of(p)) and len(s) == 3 and s, 10, "3 node PIDs")

    def sigint_and_check(p: subprocess.Popen[bytes], out: Path, pids: set[int]) -> None:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=15)
        text = " ".join(out.read_text(errors="replace").split())
        assert p.returncode == 0, text
        stopped = {nid: (int(pid), int(rc)) for nid, pid, rc in _STOPPED.findall(text)}
        assert sorted(stopped) == ["n1", "n2", "n3"], text
        assert {pid for pid, _ in stopped.values()} == pids
        assert all(rc == 0 for _, rc in stopped.values()), stopped  # SIGTERM: clean exits
        assert not [pid for pid in pids if pid_alive(pid)]
        assert nodes_of(p) == set()

    try:
        p, out = up(1)
        ld = wait_for(leader_addr, 30, "cluster up to elect a leader", interval=0.2)
        pids = three_nodes(p)
        code, body = http(ld, "PUT", kv_path("resume/me"), {"value": "first run"})
        assert code == 200, body
        sigint_and_check(p, out, pids)
        assert sorted(x.name for x in d.iterdir() if x.is_dir()) == ["n1", "n2", "n3"]

        p, out = up(2)
        ld = wait_for(leader_addr, 30, "the resumed cluster to elect a leader", interval=0.2)
        pids = three_nodes(p)
        code, body = http(ld, "GET", kv_path("resume/me"))
        assert code == 200 and body["value"] == "first run", body
        sigint_and_check(p, out, pids)
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        kill_pids(pids_with_arg(str(d)), grace=3.0)
        for f in sorted(tmp_path.glob("up*.log")) + sorted(d.glob("n*.log")):
            print(f"==== {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-10:]))


# -- serve's startup errors ----------------------------------------------------------------


def _serve(
    data_dir: Path,
    *,
    peer: str | None = None,
    client: str | None = None,
    mode: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``liferaft serve`` as n1 (a new one-node cluster unless ``mode``), run
    to its exit (bounded)."""
    peer = peer or f"{HOST}:{free_port()}"
    client = client or f"{HOST}:{free_port()}"
    mode = mode if mode is not None else ["--initial-cluster", f"n1={peer}"]
    cmd = [*CLI, "serve", "--id", "n1", "--data-dir", str(data_dir)]
    cmd += ["--peer-addr", peer, "--client-addr", client, *mode]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def _error_line(r: subprocess.CompletedProcess[str]) -> str:
    """The run failed with exactly one line starting with "Error", the last
    one on stderr, and no traceback; that line."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("Error")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr
    return errors[0]


def _bad_initial_cluster(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return _serve(tmp_path / "d", mode=["--initial-cluster", "n1=nohost"])


def _peer_port_in_use(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        return _serve(tmp_path / "d", peer=f"{HOST}:{s.getsockname()[1]}")


def _client_port_in_use(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen()
        return _serve(tmp_path / "d", client=f"{HOST}:{s.getsockname()[1]}")


def _data_dir_under_a_file(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "a-file").write_text("not a directory\n")
    return _serve(tmp_path / "a-file" / "data")


def _join_with_existing_data(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    with proc_cluster(tmp_path) as c:
        c.start_cluster(1)
        assert c.put("n1", "k", "v")[0] == 200
        assert c.stop("n1") == 0
        d = c.nodes["n1"].data_dir
    return _serve(d, mode=["--join", "http://127.0.0.1:1"])


_BAD_INPUTS = {
    # case: (run, words the error line must hold)
    "bad --initial-cluster": (_bad_initial_cluster, ["--initial-cluster", "nohost"]),
    "peer port in use": (_peer_port_in_use, ["--peer-addr", "in use"]),
    "client port in use": (_client_port_in_use, ["--client-addr", "in use"]),
    "data dir under a file": (_data_dir_under_a_file, ["a-file", "Not a directory"]),
    "--join with existing data": (_join_with_existing_data, ["--join", "already holds"]),
}


@pytest.mark.parametrize("case", list(_BAD_INPUTS))
def test_serve_refuses_bad_input_with_one_error_line(tmp_path: Path, case: str) -> None:
    run, words = _BAD_INPUTS[case]
    r = run(tmp_path)
    line = _error_line(r)
    for w in words:
        assert w in line, (w, line)


@pytest.mark.parametrize(
    "case",
    [
        "bad --initial-cluster",
        "peer port in use",
        "data dir under a file",
        "--join with existing data",
    ],
)
def test_serve_startup_errors_are_the_only_line_on_stderr(tmp_path: Path, case: str) -> None:
    r = _BAD_INPUTS[case][0](tmp_path)
    assert r.returncode != 0
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [_error_line(r)]
