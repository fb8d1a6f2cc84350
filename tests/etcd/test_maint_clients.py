"""etcd's Maintenance service against a 3-node liferaft-kv (issue 16): what
etcdctl, etcd's JSON gateway, aetcd and etcd3gw see of Status, Alarm,
Snapshot, MoveLeader, HashKV and /version.  One cluster for the module;
each test keeps to keys under its own prefix."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aetcd
import etcd3gw
import grpc
import pytest

from liferaft.etcd import errors
from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.etcd.proto import rpc_pb2_grpc
from liferaft.etcd.version import CLUSTER_VERSION, ETCD_VERSION
from tests.etcd.etcdctl import Etcdctl
from tests.etcd.maint_util import (
    hex_id,
    leader_everywhere,
    member_id,
    move_leader,
    restored_values,
    settled_status,
)
from tests.kv.procs import ProcCluster, http, wait_for


def test_endpoint_status_names_the_leader_and_moves_with_the_log(
    ctl: Etcdctl, etcd_cluster: ProcCluster
) -> None:
    c = etcd_cluster
    _, before = settled_status(ctl, c)
    ctl.ok("put", "st/a", "1")
    leader, after = settled_status(ctl, c)
    assert set(after) == {n.grpc for n in c.nodes.values()}
    for node_id, n in c.nodes.items():
        st = after[n.grpc]
        assert st["version"] == ETCD_VERSION
        assert st["header"]["member_id"] == member_id(node_id)
        assert st["leader"] == member_id(leader)
        assert st["dbSize"] > 0 and 0 < st["dbSizeInUse"] <= st["dbSize"]
        assert st["raftTerm"] >= 1 and st["raftIndex"] >= st["raftAppliedIndex"] > 0
        # The put is an entry: every node's commit index moved past its old one.
        assert st["raftIndex"] > before[n.grpc]["raftIndex"]
        assert "errors" not in st and not st.get("isLearner")
    assert len({s["header"]["cluster_id"] for s in after.values()}) == 1
    # The table output marks the leader's row (IS LEADER), as etcd's.
    rows = [r.split(", ") for r in ctl.ok("endpoint", "status").splitlines()]
    assert {r[0]: r[1] for r in rows} == {n.grpc: hex_id(i) for i, n in c.nodes.items()}
    assert sorted(r[4] for r in rows) == ["false", "false", "true"]


def test_endpoint_health_and_no_alarms(ctl: Etcdctl, etcd_cluster: ProcCluster) -> None:
    r = ctl.run("endpoint", "health")
    # etcdctl 3.4 prints the verdicts on stderr, whatever they are.
    healthy = [line for line in r.stderr.splitlines() if " is healthy: " in line]
    assert r.returncode == 0 and len(healthy) == 3, r.stderr
    assert ctl.ok("alarm", "list") == ""
    assert ctl.ok("alarm", "disarm") == ""
    # Raising an alarm would be a lie (liferaft-kv enforces no quota): refused.
    node = next(iter(etcd_cluster.nodes.values()))
    code, body = http(node.client, "POST", "/v3/maintenance/alarm", {"action": "ACTIVATE"})
    assert code == 501 and body["code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert "alarms cannot be raised" in body["message"]


# -- Snapshot ----------------------------------------------------------------------------


def test_snapshot_save_writes_a_checkpoint_that_restores(
    ctl: Etcdctl, etcd_cluster: ProcCluster, tmp_path: Path
) -> None:
    for i in range(20):
        ctl.ok("put", f"snap/{i:02d}", f"value {i}")
    node = next(iter(etcd_cluster.nodes.values()))
    one = Etcdctl(ctl.path, [node.grpc])
    path = tmp_path / "backup.db"
    # Linearizable: this node has applied the puts before it copies.
    one.ok("get", "snap/19")
    out = one.ok("snapshot", "save", str(path))
    assert out.strip() == f"Snapshot saved at {path}"
    # etcdctl 3.4 keeps a file only at 32 modulo 512 bytes (its sha256 check).
    assert path.stat().st_size % 512 == 32
    keys = [f"snap/{i:02d}".encode() for i in (0, 7, 19)]
    got = restored_values(path, tmp_path / "restored", keys)
    assert got == {k: f"value {int(k[5:])}".encode() for k in keys}


def test_an_abandoned_snapshot_stream_leaves_the_node_serving(
    etcd_cluster: ProcCluster,
) -> None:
    """A client that takes one blob and goes: the copy thread is ended and
    closed in order, and the node answers the next snapshot whole."""
    node = next(iter(etcd_cluster.nodes.values()))
    big = "x" * (512 * 1024)
    for i in range(4):  # 2 MiB: more than the stream's buffers hold
        code, _ = etcd_cluster.put(node.id, f"abandon/{i}", big)
        assert code == 200

    async def run() -> tuple[int, int]:
        async with grpc.aio.insecure_channel(node.grpc) as ch:
            stub = rpc_pb2_grpc.MaintenanceStub(ch)
            call = stub.Snapshot(pb.SnapshotRequest(), timeout=20)
            first = await call.read()
            call.cancel()
            whole = 0
            async for resp in stub.Snapshot(pb.SnapshotRequest(), timeout=20):
                whole += len(resp.blob)
                last = resp.remaining_bytes
            assert last == 0
            return len(first.blob), whole

    first, whole = asyncio.run(run())
    assert 0 < first < whole and whole % 512 == 32
    assert "Traceback" not in node.log_tail(200)


# -- MoveLeader --------------------------------------------------------------------------


def test_move_leader_to_a_follower_and_refusals(ctl: Etcdctl, etcd_cluster: ProcCluster) -> None:
    c = etcd_cluster
    old = c.wait_leader()
    new = next(n for n in c.nodes if n != old)
    move_leader(ctl, c, new)
    r = ctl.run("move-leader", "1234")
    assert r.returncode != 0 and "etcdserver: bad leader transferee" in r.stderr
    # etcdctl finds the leader among its endpoints; liferaft-kv also takes
    # the call on a follower (it asks the leader), here through the gateway.
    follower = c.nodes[old]
    code, body = http(
        follower.client,
        "POST",
        "/v3/maintenance/transfer-leadership",
        {"targetID": str(member_id(old))},
        timeout=20,
    )
    assert code == 200, body
    leader_everywhere(c, old)


# -- HashKV ------------------------------------------------------------------------------


def _hashes(ctl: Etcdctl, rev: int) -> dict[str, str]:
    out = ctl.ok("endpoint", "hashkv", "--rev", str(rev))
    return dict(line.split(", ") for line in out.splitlines())


def test_hashkv_agrees_across_replicas_and_across_compaction(
    ctl: Etcdctl, etcd_cluster: ProcCluster
) -> None:
    for i in range(5):
        ctl.ok("put", f"hash/{i}", "a")
        ctl.ok("put", f"hash/{i}", "b")
    rev = json.loads(ctl.ok("put", "hash/end", "x", "-w", "json"))["header"]["revision"]

    def agreed(at: int) -> str | None:
        # A node that has not applied ``at`` yet answers "future revision".
        r = ctl.run("endpoint", "hashkv", "--rev", str(at))
        if r.returncode != 0:
            return None
        values = set(dict(line.split(", ") for line in r.stdout.splitlines()).values())
        return values.pop() if len(values) == 1 else None

    h = wait_for(lambda: agreed(rev), 20, "the replicas' hashes at one revision to agree")
    assert h != wait_for(lambda: agreed(rev - 1), 20, "the hashes one revision earlier")
    # After a compaction the hash covers less (as etcd's, whose answer
    # carries the compact revision to compare by), and replicas agree again.
    ctl.ok("compaction", str(rev - 2))
    assert wait_for(lambda: agreed(rev), 20, "the hashes after compaction") != h
    r = ctl.run("endpoint", "hashkv", "--rev", str(rev - 3))
    assert r.returncode != 0 and "required revision has been compacted" in r.stderr


# -- the gateway, /version and the PyPI clients ------------------------------------------


def test_gateway_status_and_version_as_etcd(etcd_cluster: ProcCluster) -> None:
    leader = etcd_cluster.wait_leader()
    node = etcd_cluster.nodes[leader]
    code, body = http(node.client, "POST", "/v3/maintenance/status", {})
    assert code == 200
    # protobuf JSON: 64-bit numbers as strings, as etcd's gateway.
    assert body["version"] == ETCD_VERSION and body["leader"] == str(member_id(leader))
    assert int(body["dbSize"]) > 0 and int(body["raftIndex"]) > 0
    code, body = http(node.client, "GET", "/version")
    assert code == 200 and body == {"etcdserver": ETCD_VERSION, "etcdcluster": CLUSTER_VERSION}
    host, port = node.client.rsplit(":", 1)
    client = etcd3gw.client(host=host, port=int(port), api_path=None, timeout=10)
    assert client.api_path == "/v3/"  # read from /version
    assert client.status()["version"] == ETCD_VERSION


def test_authenticate_without_a_token_file_is_not_enabled(
    ctl: Etcdctl, etcd_cluster: ProcCluster
) -> None:
    ctl.ok("put", "noauth/k", "v")
    # etcd's client takes this answer to mean "go on without a token".
    r = Etcdctl(ctl.path, ctl.endpoints, user="root:anything").run("get", "noauth/k")
    assert r.returncode == 0 and r.stdout.splitlines() == ["noauth/k", "v"]
    assert "etcdserver: authentication is not enabled" in r.stderr
    node = next(iter(etcd_cluster.nodes.values()))
    body = {"name": "root", "password": "anything"}
    code, got = http(node.client, "POST", "/v3/auth/authenticate", body)
    assert code == 412 and got["message"] == "etcdserver: authentication is not enabled"
    assert got["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]


def test_aetcd_status_and_snapshot(etcd_cluster: ProcCluster, tmp_path: Path) -> None:
    node_id = etcd_cluster.wait_leader()
    node = etcd_cluster.nodes[node_id]
    host, port = node.grpc.rsplit(":", 1)
    path = tmp_path / "aetcd.snapshot"

    async def run() -> object:
        async with aetcd.Client(host=host, port=int(port), timeout=20) as client:
            await client.put(b"aetcd/k", b"v1")
            # aetcd's status() also lists members (the Cluster service):
            # its Maintenance stub is the call this module serves.
            st = await client.maintenancestub.Status(aetcd.rpc.StatusRequest(), timeout=10)
            with open(path, "wb") as f:
                await client.snapshot(f)
            return st

    st = asyncio.run(run())
    assert st.version == ETCD_VERSION and st.leader == member_id(node_id)  # type: ignore[attr-defined]
    got = restored_values(path, tmp_path / "restored", [b"aetcd/k"])
    assert got == {b"aetcd/k": b"v1"}


@pytest.mark.parametrize("path", ["/v3/maintenance/hash", "/v3/maintenance/hashkv"])
def test_gateway_hashkv_paths(etcd_cluster: ProcCluster, path: str) -> None:
    node = next(iter(etcd_cluster.nodes.values()))
    code, body = http(node.client, "POST", path, {"revision": "999999999"})
    assert code == 400 and body["message"] == errors.FUTURE_REV.message
    code, body = http(node.client, "POST", path, {})
    assert code == 200 and "hash" in body and int(body["header"]["revision"]) > 1
