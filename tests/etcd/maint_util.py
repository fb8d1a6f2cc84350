"""Helpers of the Maintenance and Auth tests: etcd ids of a ProcCluster's
nodes, and reading back a snapshot file an etcd client saved."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from liferaft.etcd import ids
from liferaft.kv.machine import KVMachine
from liferaft.kv.mvcc import Range
from tests.etcd.etcdctl import Etcdctl
from tests.kv.procs import ProcCluster, wait_for

CLUSTER = "liferaft"  # `liferaft serve`'s default --cluster-id


def member_id(node_id: str) -> int:
    return ids.member_id(CLUSTER, node_id)


def hex_id(node_id: str) -> str:
    """The member id as etcdctl prints and takes it."""
    return ids.hex_id(member_id(node_id))


def restored_values(snapshot: Path, into: Path, keys: list[bytes]) -> dict[bytes, bytes]:
    """Restore ``snapshot`` (a file of Snapshot blobs) into a fresh KVMachine
    as a follower receives a checkpoint, and read ``keys`` back from it."""
    m = KVMachine(into)
    try:
        with open(snapshot, "rb") as f:
            m.restore(iter(lambda: f.read(1 << 16), b""))
        out = {}
        for k in keys:
            kvs = m.range(Range(k)).kvs
            if kvs:
                out[k] = kvs[0].value
        return out
    finally:
        m.close()


def leader_everywhere(c: ProcCluster, want: str, timeout: float = 20.0) -> None:
    """Wait until every node's /v1/status names ``want`` as the leader."""

    def agreed() -> bool:
        views = [c.status(n) for n in c.nodes]
        return all(v is not None and v["leader"] == want for v in views)

    wait_for(agreed, timeout, f"every node to follow {want}", interval=0.1)


def settled_status(ctl: Etcdctl, c: ProcCluster) -> tuple[str, dict[str, Any]]:
    """The leader and ``etcdctl endpoint status -w json`` by endpoint, once
    every endpoint names the leader /v1/status agrees on (a loaded machine
    may hold an election between two looks: look again)."""

    def probe() -> tuple[str, dict[str, Any]] | None:
        leader = c.leader_view()
        r = ctl.run("endpoint", "status", "-w", "json")
        if leader is None or r.returncode != 0:
            return None
        st = {e["Endpoint"]: e["Status"] for e in json.loads(r.stdout)}
        if all(s.get("leader") == member_id(leader) for s in st.values()):
            return leader, st
        return None

    return wait_for(probe, 20, "every endpoint to name the agreed leader", interval=0.2)


def move_leader(ctl: Etcdctl, c: ProcCluster, to: str) -> None:
    """``etcdctl move-leader`` to ``to``: its output, then every node's
    /v1/status, says ``to`` leads."""
    out = ctl.ok("move-leader", hex_id(to)).strip()
    m = re.fullmatch(r"Leadership transferred from ([0-9a-f]+) to ([0-9a-f]+)", out)
    assert m is not None, out
    # "from" is whoever led when etcdctl asked (an election may come between).
    assert m.group(1) in {hex_id(n) for n in c.nodes} and m.group(2) == hex_id(to)
    leader_everywhere(c, to)
