"""etcdctl's member commands against a 3-node liferaft-kv over gRPC (etcd's
Cluster service, issue 16): list, add (by peer URL only, as in etcd),
promote and remove with etcd's errors, and a member added by etcdctl
actually starting and joining under the id the cluster gave it."""

from __future__ import annotations

import json
import re
from typing import Any

from liferaft.etcd import ids
from tests.etcd.etcdctl import Etcdctl
from tests.kv.procs import HOST, ProcCluster, free_port, wait_for

CLUSTER = "liferaft"  # serve's default --cluster-id


def members(ctl: Etcdctl) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = json.loads(ctl.ok("member", "list", "-w", "json"))["members"]
    return got


def by_peer(ctl: Etcdctl, peer: str) -> dict[str, Any] | None:
    return next((m for m in members(ctl) if m.get("peerURLs") == [f"http://{peer}"]), None)


def test_member_list(ctl: Etcdctl, etcd_cluster: ProcCluster) -> None:
    want = sorted(
        [ids.hex_id(ids.member_id(CLUSTER, n.id)), "started", n.id, f"http://{n.peer}",
         f"http://{n.grpc}", "false"]
        for n in etcd_cluster.nodes.values()
    )  # fmt: skip

    def rows() -> list[list[str]]:
        return sorted(line.split(", ") for line in ctl.ok("member", "list").splitlines())

    # Each node records its gRPC address in the book once it serves, as an
    # etcd member publishes its client URLs after it starts.
    wait_for(lambda: rows() == want, 20, f"member list {want}", interval=0.3)
    doc = json.loads(ctl.ok("member", "list", "-w", "json"))
    assert doc["header"]["cluster_id"] == ids.cluster_id(CLUSTER)
    assert {m["ID"] for m in doc["members"]} == {
        ids.member_id(CLUSTER, n) for n in etcd_cluster.nodes
    }


def test_member_add_promote_remove_and_errors(ctl: Etcdctl) -> None:
    peer = f"{HOST}:{free_port()}"
    out = ctl.ok("member", "add", "spare", "--learner", f"--peer-urls=http://{peer}")
    # etcdctl prints the new member's id and the lines the new etcd would run with.
    assert out.splitlines()[0].startswith("Member ") and " added to cluster " in out
    assert 'ETCD_NAME="spare"' in out and 'ETCD_INITIAL_CLUSTER_STATE="existing"' in out
    assert f"spare=http://{peer}" in out
    new = by_peer(ctl, peer)
    assert new is not None and new.get("isLearner") is True and not new.get("name")
    mid = f"{new['ID']:x}"
    assert out.split()[1] == mid
    assert f"{mid}, unstarted, , http://{peer}, , true" in ctl.ok("member", "list")

    same = ctl.run("member", "add", "again", f"--peer-urls=http://{peer}")
    assert same.returncode != 0 and "Peer URLs already exists" in same.stderr
    # (etcdctl itself refuses what is not a URL; these pass it, not the server)
    for urls in (f"unix://{HOST}:1", f"http://{HOST}:1,http://{HOST}:2"):
        bad = ctl.run("member", "add", "bad", f"--peer-urls={urls}")
        assert bad.returncode != 0 and "given member URLs are invalid" in bad.stderr, urls

    # A learner with no node behind it has not caught up; a voter is no learner.
    lag = ctl.run("member", "promote", mid)
    assert lag.returncode != 0
    assert "can only promote a learner member which is in sync with leader" in lag.stderr
    voter = ids.hex_id(ids.member_id(CLUSTER, "n1"))
    notl = ctl.run("member", "promote", voter)
    assert notl.returncode != 0 and "can only promote a learner member" in notl.stderr

    # etcdctl prints the id as %16x: padded with spaces when it has fewer
    # than 16 hex digits (the id hashes a random port: 1 in 16 does).
    assert re.search(rf"Member +{mid} removed", ctl.ok("member", "remove", mid))
    assert by_peer(ctl, peer) is None
    gone = ctl.run("member", "remove", mid)
    assert gone.returncode != 0 and "member not found" in gone.stderr
    assert len(members(ctl)) == 3


def test_member_add_knows_a_peer_address_by_another_name(
    ctl: Etcdctl, etcd_cluster: ProcCluster
) -> None:
    """n1's peer address spelled with "localhost": the same endpoint, so
    etcd's "Peer URLs already exists" (it was recorded as a second member
    at n1's address, a learner that never starts)."""
    port = etcd_cluster.nodes["n1"].peer.rsplit(":", 1)[1]
    r = ctl.run("member", "add", "twin", f"--peer-urls=http://localhost:{port}")
    try:
        assert r.returncode != 0 and "Peer URLs already exists" in r.stderr, r.stdout
    finally:
        if r.returncode == 0:
            ctl.ok("member", "remove", r.stdout.split()[1])
    assert len(members(ctl)) == 3


def test_added_member_starts_and_joins(
    ctl: Etcdctl, etcdctl: str, etcd_cluster: ProcCluster
) -> None:
    """etcdctl member add gives only a peer URL; the node started for it
    (--id n4 --join) takes the member's id, shows up under its name with its
    gRPC client URL, catches up, and is promoted to the voter it was added as."""
    ctl.ok("put", "join/k", "before")
    peer = f"{HOST}:{free_port()}"
    out = ctl.ok("member", "add", "n4", f"--peer-urls=http://{peer}")
    mid = int(out.split()[1], 16)
    contact = etcd_cluster.nodes["n1"].client
    node = etcd_cluster.define("n4", ["--join", f"http://{contact}"], peer_addr=peer)
    try:
        etcd_cluster.start("n4")

        def joined() -> dict[str, Any] | None:
            m = by_peer(ctl, peer)
            ok = m and m.get("name") == "n4" and not m.get("isLearner")
            return m if ok else None

        m = wait_for(joined, 30, "n4 started, named and promoted", interval=0.5)
        assert m["ID"] == mid
        assert m["clientURLs"] == [f"http://{node.grpc}"]
        own = Etcdctl(etcdctl, [node.grpc])
        got = own.ok("get", "join/k", "--consistency=s", "--print-value-only")
        assert got.strip() == "before"
        # A restart with the same --id finds the adopted id in its data dir.
        etcd_cluster.stop("n4")
        etcd_cluster.start("n4", mode=[])
        wait_for(lambda: own.run("endpoint", "health").returncode == 0, 30, "n4 back", 0.5)
        assert by_peer(ctl, peer) == m
    finally:
        if node.running():
            etcd_cluster.stop("n4")
        etcd_cluster.nodes.pop("n4")
        if by_peer(ctl, peer) is not None:
            ctl.ok("member", "remove", f"{mid:x}")
    assert len(members(ctl)) == 3
