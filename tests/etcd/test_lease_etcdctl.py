"""etcdctl's lease commands, and put --lease, against a 3-node liferaft-kv
over gRPC (etcd's Lease service, issue 16).  The expected lines are what
etcd 3.4.23 prints for the same commands (ids aside)."""

from __future__ import annotations

import re
import time

import pytest

from tests.etcd.background import PatientEtcdctl
from tests.etcd.etcdctl import Etcdctl
from tests.kv.procs import ProcCluster


@pytest.fixture
def ctl(etcdctl: str, etcd_cluster: ProcCluster) -> Etcdctl:
    """etcdctl at every node, patient under load (tests/etcd/background.py)."""
    return PatientEtcdctl(etcdctl, [n.grpc for n in etcd_cluster.nodes.values()])


GRANTED = re.compile(r"^lease ([0-9a-f]+) granted with TTL\((\d+)s\)$")


def grant(ctl: Etcdctl, ttl: int) -> tuple[str, int]:
    """A new lease: its id as etcdctl prints it (hex) and its TTL."""
    m = GRANTED.match(ctl.ok("lease", "grant", str(ttl)).strip())
    assert m, "unexpected lease grant output"
    return m.group(1), int(m.group(2))


def test_grant_keepalive_timetolive_revoke_and_put_lease(ctl: Etcdctl) -> None:
    lid, ttl = grant(ctl, 60)
    assert ttl == 60
    assert ctl.ok("put", "--lease", lid, "lease1/k", "v").strip() == "OK"
    assert ctl.ok("lease", "keep-alive", "--once", lid).strip() == (
        f"lease {lid} keepalived with TTL(60)"
    )
    out = ctl.ok("lease", "timetolive", "--keys", lid).strip()
    m = re.fullmatch(rf"lease {lid} granted with TTL\(60s\), remaining\((\d+)s\), "
                     r"attached keys\(\[lease1/k\]\)", out)  # fmt: skip
    assert m and 50 <= int(m.group(1)) <= 60, out
    assert lid in ctl.ok("lease", "list").split()
    assert ctl.ok("get", "lease1/k", "--print-value-only").strip() == "v"
    assert ctl.ok("lease", "revoke", lid).strip() == f"lease {lid} revoked"
    assert ctl.ok("get", "lease1/k") == ""  # the key went with the lease
    assert ctl.ok("lease", "timetolive", lid).strip() == f"lease {lid} already expired"
    assert lid not in ctl.ok("lease", "list").split()
    r = ctl.run("lease", "revoke", lid)
    assert r.returncode != 0
    assert "etcdserver: requested lease not found" in r.stderr
    r = ctl.run("lease", "keep-alive", "--once", lid)
    # TTL 0 in the answer: clientv3 turns it into ErrLeaseNotFound (as against etcd).
    assert r.returncode == 2 and "Error: etcdserver: requested lease not found" in r.stderr


def test_put_lease_key_goes_when_the_lease_expires(ctl: Etcdctl) -> None:
    lid, ttl = grant(ctl, 1)  # raised to the cluster's minimum if below it
    ctl.ok("put", "--lease", lid, "lease2/k", "v")
    assert ctl.ok("get", "lease2/k", "--print-value-only").strip() == "v"
    deadline = time.monotonic() + ttl + 15
    while ctl.ok("get", "lease2/k") != "":
        assert time.monotonic() < deadline, "the key outlived its lease"
        time.sleep(0.2)
    assert ctl.ok("lease", "timetolive", lid).strip() == f"lease {lid} already expired"


def test_put_with_an_unknown_lease_is_refused(ctl: Etcdctl) -> None:
    r = ctl.run("put", "--lease", "7fffffff", "lease3/k", "v")
    assert r.returncode != 0 and "etcdserver: requested lease not found" in r.stderr
    assert ctl.ok("get", "lease3/k") == ""
