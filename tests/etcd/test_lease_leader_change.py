"""A lease kept alive by etcdctl's keep-alive stream keeps its key across a
leader change (issue 16's "etcd-specific semantics clients depend on"), on
a cluster of its own since the test stops its leader.  The holder's client
is the real etcdctl: its stream to a node fails over as etcd's clientv3
does, and the node forwards each keep-alive to whoever leads."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd.background import Background, PatientEtcdctl
from tests.kv.procs import ProcCluster, proc_cluster

TTL = 3


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ProcCluster]:
    with proc_cluster(tmp_path, grpc=True) as c:
        c.start_cluster(3)
        yield c


def test_keepalive_stream_keeps_a_key_across_a_leader_change(
    etcdctl: str, own_cluster: ProcCluster
) -> None:
    c = own_cluster
    leader = c.wait_leader()
    # The holder talks to a follower: it stays up while the leader goes.
    follower = next(i for i in c.nodes if i != leader)
    ctl = PatientEtcdctl(etcdctl, [c.nodes[follower].grpc])
    m = re.match(r"lease ([0-9a-f]+) granted", ctl.ok("lease", "grant", str(TTL)))
    assert m
    lid = m.group(1)
    ctl.ok("put", "--lease", lid, "held", "v")
    with Background.etcdctl(ctl, "lease", "keep-alive", lid) as ka:
        ka.wait(lambda ls: len(ls) >= 2, 10, "two keep-alives")
        c.stop(leader)  # SIGTERM: it hands over, then stops
        new = c.wait_leader(among=[i for i in c.nodes if i != leader])
        assert new != leader
        seen = len(ka.drain())
        # Well past the TTL after the change: the key is still there, and the
        # stream kept renewing (through the new leader).
        time.sleep(3 * TTL)
        assert ka.proc.poll() is None, ka.stop_and_stderr()
        assert len(ka.drain()) > seen
        assert ka.lines[-1] == f"lease {lid} keepalived with TTL({TTL})"
        assert ctl.ok("get", "held", "--print-value-only").strip() == "v"
    # The holder gone, the lease ends and takes the key: the check above bites.
    deadline = time.monotonic() + 3 * TTL + 10
    while ctl.ok("get", "held") != "":
        assert time.monotonic() < deadline, "the key outlived its lease"
        time.sleep(0.2)
