"""Fixtures of the etcd-protocol tests: the real etcdctl client, and a
3-node liferaft-kv serving etcd's gRPC API and JSON gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd.etcdctl import Etcdctl, find_etcdctl
from tests.kv.procs import ProcCluster, proc_cluster


@pytest.fixture(scope="session")
def etcdctl() -> str:
    """The path of etcdctl 3.4.x; the test skips (fails under CI=true) when
    there is none.  See tests/etcd/etcdctl.py."""
    return find_etcdctl()


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    """One 3-node cluster per test module, every node serving gRPC
    (``node.grpc``) and the gateway (``node.client``).  Tests share it: use
    keys under a prefix of the test's own."""
    root: Path = tmp_path_factory.mktemp("etcd")
    with proc_cluster(root, grpc=True) as c:
        c.start_cluster(3)
        c.wait_leader()
        yield c


@pytest.fixture
def ctl(etcdctl: str, etcd_cluster: ProcCluster) -> Etcdctl:
    """etcdctl pointed at every node of the module's cluster."""
    return Etcdctl(etcdctl, [n.grpc for n in etcd_cluster.nodes.values()])
