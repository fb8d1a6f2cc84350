"""Helpers of the Maintenance and Auth tests: etcd ids of a ProcCluster's
nodes, and reading back a snapshot file an etcd client saved."""

from __future__ import annotations

from pathlib import Path

from liferaft.etcd import ids
from liferaft.kv.machine import KVMachine
from liferaft.kv.mvcc import Range
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
