"""Locks and elections that clients build on leases, Txn and watch, against
a 3-node liferaft-kv: ``etcdctl lock`` and ``etcdctl elect`` (clientv3's
concurrency package), etcd3gw's Lock (the JSON gateway) and aetcd's Lock
(gRPC).  Each waits on a watch of the key before its own, so these prove
the three services together."""

from __future__ import annotations

import asyncio
import time

import aetcd
import etcd3gw
import pytest

from liferaft.etcd.registry import all_calls
from tests.etcd.background import Background, PatientEtcdctl
from tests.etcd.etcdctl import Etcdctl
from tests.kv.procs import ProcCluster


@pytest.fixture
def ctl(etcdctl: str, etcd_cluster: ProcCluster) -> Etcdctl:
    """etcdctl at every node, patient under load (tests/etcd/background.py)."""
    return PatientEtcdctl(etcdctl, [n.grpc for n in etcd_cluster.nodes.values()])


pytestmark = pytest.mark.skipif(
    not any(c.method == "Txn" for c in all_calls()),
    reason="etcd's KV Txn is not served in this tree yet; lock and elect need it",
)


def test_etcdctl_lock_excludes_until_the_holder_ends(ctl: Etcdctl) -> None:
    with Background.etcdctl(ctl, "lock", "lk1") as first:
        (key,) = first.wait(lambda ls: len(ls) >= 1, 15, "the lock's key")
        assert key.startswith("lk1/")
        with Background.etcdctl(ctl, "lock", "lk1", "echo", "second") as second:
            time.sleep(1.0)  # it queues behind the holder
            assert second.drain() == [] and second.proc.poll() is None
            first.stop()  # SIGTERM: etcdctl unlocks and revokes its lease
            assert second.wait(lambda ls: "second" in ls, 15, "the second holder") == ["second"]
            assert second.exited(10) == 0


def test_etcdctl_elect_hands_over_when_the_leader_ends(ctl: Etcdctl) -> None:
    with Background.etcdctl(ctl, "elect", "el1", "p1") as p1:
        got = p1.wait(lambda ls: len(ls) >= 2, 15, "p1 elected")
        assert got[0].startswith("el1/") and got[1] == "p1"
        with (
            Background.etcdctl(ctl, "elect", "el1", "p2") as p2,
            Background.etcdctl(ctl, "elect", "-l", "el1") as watcher,
        ):
            assert watcher.wait(lambda ls: len(ls) >= 2, 15, "the leader seen")[1] == "p1"
            p1.stop()
            assert p2.wait(lambda ls: len(ls) >= 2, 15, "p2 elected")[1] == "p2"
            assert watcher.wait(lambda ls: "p2" in ls, 15, "the new leader seen")[-1] == "p2"


def test_etcd3gw_lock(etcd_cluster: ProcCluster) -> None:
    host, port = next(iter(etcd_cluster.nodes.values())).client.rsplit(":", 1)
    c = etcd3gw.Etcd3Client(host=host, port=int(port), timeout=10, api_path=None)
    holder = c.lock("gwlock", ttl=30)
    assert holder.acquire() is True
    assert holder.is_acquired()
    other = c.lock("gwlock", ttl=30)
    assert other.acquire() is False and not other.is_acquired()
    assert holder.refresh() == 30
    assert holder.release() is True
    assert other.acquire() is True and other.is_acquired()
    assert other.release() is True


async def test_aetcd_lock_waits_for_the_holder(etcd_cluster: ProcCluster) -> None:
    host, port = list(etcd_cluster.nodes.values())[1].grpc.rsplit(":", 1)
    async with aetcd.Client(host=host, port=int(port), timeout=10) as c:
        holder = c.lock(b"aelock", ttl=30)
        assert await holder.acquire(timeout=10)
        waiter = c.lock(b"aelock", ttl=30)
        assert await waiter.acquire(timeout=0) is False
        got = asyncio.create_task(waiter.acquire(timeout=20))  # waits on a watch
        await asyncio.sleep(0.5)
        assert not got.done()
        assert await holder.release()
        assert await asyncio.wait_for(got, 20) is True
        assert await waiter.is_acquired()
        assert await waiter.release()
