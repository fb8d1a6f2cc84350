"""A Put that times out is never applied twice by a client's retry
(docs/etcd.md, "What clients retry"), with each tested client: etcdctl
(clientv3 3.4), etcd3gw and aetcd.

The leader's two followers are paused (SIGSTOP) so it cannot commit; the
Put reaches it and waits past ``--request-timeout``; the client is told
etcd's "etcdserver: request timed out" (UNAVAILABLE; HTTP 503 through the
gateway).  Then the followers go on (SIGCONT), the entry commits, and the
key shows it applied exactly once: version 1, created at the revision of
its only change, and still so after the client had time to retry.

Its own cluster: it pauses nodes.  The election timeout is long (3 s) so
the leader keeps leading through the short pause, and the request timeout
short (0.5 s), well inside the clients' own deadlines.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aetcd
import pytest
from aetcd import exceptions as aetcd_errors
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from tests.etcd.etcdctl import Etcdctl
from tests.kv.procs import ProcCluster, proc_cluster, wait_for

TIMED_OUT = "etcdserver: request timed out"


@pytest.fixture(scope="module")
def paused_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    root: Path = tmp_path_factory.mktemp("etcd-outcomes")
    timing = ["--election-timeout", "3000", "--heartbeat-interval", "100"]
    with proc_cluster(root, grpc=True, timing=timing, extra=["--request-timeout", "0.5"]) as c:
        c.start_cluster(3)
        c.wait_leader()
        yield c


def _timed_out_once(c: ProcCluster, etcdctl: str, key: str, put: Callable[[str], str]) -> None:
    """Pause both followers, ``put(leader)`` (returns the client's error
    text), resume, and check the key was applied exactly once."""
    leader = c.wait_leader()
    followers = [i for i in c.nodes if i != leader]
    try:
        for f in followers:
            c.pause(f)
        said = put(leader)
    finally:
        for f in followers:
            c.resume(f)
    assert TIMED_OUT in said, said
    ctl = Etcdctl(etcdctl, [n.grpc for n in c.nodes.values()])

    def applied() -> dict[str, int] | None:
        got = json.loads(ctl.ok("get", key, "-w", "json"))
        return got["kvs"][0] if got.get("kvs") else None

    kv = wait_for(applied, 20.0, f"{key} applied after the pause")
    time.sleep(1.0)  # room for a retry, had the client made one
    kv = applied()
    assert kv is not None
    assert kv["version"] == 1 and kv["create_revision"] == kv["mod_revision"], kv
    assert ctl.ok("get", key, "--rev", str(kv["mod_revision"] - 1)) == ""


def test_etcdctl_put_timed_out_applies_once(paused_cluster: ProcCluster, etcdctl: str) -> None:
    c = paused_cluster

    def put(leader: str) -> str:
        r = Etcdctl(etcdctl, [c.nodes[leader].grpc]).run("put", "o/ctl", "v")
        assert r.returncode != 0, r.stdout
        return r.stderr

    _timed_out_once(c, etcdctl, "o/ctl", put)


def test_etcd3gw_put_timed_out_applies_once(paused_cluster: ProcCluster, etcdctl: str) -> None:
    c = paused_cluster

    def put(leader: str) -> str:
        host, port = c.nodes[leader].client.rsplit(":", 1)
        gw = Etcd3Client(host=host, port=int(port), timeout=10)
        with pytest.raises(Etcd3Exception) as ei:
            gw.put("o/gw", "v")
        body = json.loads(ei.value.detail_text)
        assert body["code"] == 14  # UNAVAILABLE, HTTP 503
        return str(body["error"])

    _timed_out_once(c, etcdctl, "o/gw", put)


def test_aetcd_put_timed_out_applies_once(paused_cluster: ProcCluster, etcdctl: str) -> None:
    c = paused_cluster

    def put(leader: str) -> str:
        host, port = c.nodes[leader].grpc.rsplit(":", 1)

        async def run() -> str:
            async with aetcd.Client(host=host, port=int(port), timeout=10) as client:
                with pytest.raises(aetcd_errors.ConnectionFailedError) as ei:
                    await client.put(b"o/ae", b"v")
                return str(ei.value)

        return asyncio.run(run())

    _timed_out_once(c, etcdctl, "o/ae", put)


def test_etcdctl_txn_timed_out_applies_once(paused_cluster: ProcCluster, etcdctl: str) -> None:
    """A Txn is a write too: clientv3 does not send it again after "request
    timed out", and the node does not propose it twice."""
    c = paused_cluster

    def txn(leader: str) -> str:
        stdin = 'version("o/txn") = "0"\n\nput o/txn v\n\nput o/txn-else v\n\n'
        r = Etcdctl(etcdctl, [c.nodes[leader].grpc]).run("txn", input=stdin)
        assert r.returncode != 0, r.stdout
        return r.stderr

    _timed_out_once(c, etcdctl, "o/txn", txn)
    # Had it applied a second time, the compare would have failed then.
    ctl = Etcdctl(etcdctl, [n.grpc for n in c.nodes.values()])
    assert ctl.ok("get", "o/txn-else") == ""
