"""The stranger's referee: :class:`liferaft.chaos.hostile.Watch` judges
/v1/status answers without any process running.  Each change a stranger
can make is seen, counted once however many nodes report it, and what the
harness itself does (its members, the operator's ``oops-`` members) is not
a change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from liferaft.chaos.cluster import ChaosCluster
from liferaft.chaos.hostile import FORGED_TERM_STEP, HOSTILE, Stranger, Watch


@pytest.fixture
def cluster(tmp_path: Path) -> ChaosCluster:
    return ChaosCluster(["n1", "n2", "n3"], tmp_path / "c")


def status(c: ChaosCluster, term: int = 5, **extra: dict[str, Any]) -> dict[str, Any]:
    members = [
        {"id": m.id, "peer_addr": m.peer, "client_addr": m.client, "voter": True}
        for m in c.members.values()
    ]
    members += list(extra.values())
    return {"term": term, "members": members}


def test_the_harness_own_cluster_is_no_change(cluster: ChaosCluster) -> None:
    w = Watch(cluster)
    st = status(cluster, oops={"id": "oops-3", "peer_addr": "127.0.0.1", "client_addr": ""})
    for nid in cluster.members:
        w.check_status(nid, st)
    st["members"][0]["client_addr"] = ""  # not announced yet
    w.check_status("n1", st)
    assert not w.changes and not w.details


def test_a_stranger_member_counts_once_however_many_nodes_list_it(cluster: ChaosCluster) -> None:
    w = Watch(cluster)
    st = status(cluster, s={"id": "stranger-1", "peer_addr": "127.0.0.1:1", "client_addr": ""})
    for nid in cluster.members:
        w.check_status(nid, st)
    assert w.changes == {"membership": 1}
    assert "stranger-1" in w.details[0]


def test_changed_addresses_and_forged_terms_are_changes(cluster: ChaosCluster) -> None:
    w = Watch(cluster)
    st = status(cluster, term=FORGED_TERM_STEP + 7)
    st["members"][0]["client_addr"] = "203.0.113.66:6666"
    st["members"][1]["peer_addr"] = "203.0.113.66:7000"
    w.check_status("n1", st)
    w.check_status("n2", st)
    assert w.changes == {"term": 2, "client_addr": 1, "membership": 1}


def test_the_cluster_hands_its_nodes_a_private_secret(cluster: ChaosCluster) -> None:
    mode = cluster.secret_file.stat().st_mode & 0o777
    assert mode == 0o600
    assert cluster.secret_file.read_bytes().strip() == cluster.secret
    assert len(cluster.secret) >= 32


def test_unknown_hostile_kinds_are_refused(cluster: ChaosCluster) -> None:
    import random

    with pytest.raises(ValueError, match="unknown hostile fault"):
        Stranger(cluster, ["peer-junk", "nope"], random.Random(1), Watch(cluster))
    assert "operator-bad-addr" in HOSTILE
