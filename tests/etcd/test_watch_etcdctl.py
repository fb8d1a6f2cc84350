"""etcdctl's watch against a 3-node liferaft-kv over gRPC (etcd's Watch
service, issue 16): what a user of etcd sees, checked line by line (the
expected lines are what etcd 3.4.23 prints for the same commands)."""

from __future__ import annotations

import json

import pytest

from tests.etcd.background import Background, PatientEtcdctl
from tests.etcd.etcdctl import Etcdctl
from tests.kv.procs import ProcCluster


@pytest.fixture
def ctl(etcdctl: str, etcd_cluster: ProcCluster) -> Etcdctl:
    """etcdctl at every node, patient under load (tests/etcd/background.py)."""
    return PatientEtcdctl(etcdctl, [n.grpc for n in etcd_cluster.nodes.values()])


def put_rev(ctl: Etcdctl, key: str, value: str) -> int:
    """Put; the revision it made."""
    rev: int = json.loads(ctl.ok("put", key, value, "-w", "json"))["header"]["revision"]
    return rev


def test_watch_shows_a_put_made_meanwhile(ctl: Etcdctl) -> None:
    with Background.etcdctl(ctl, "watch", "wlive/k") as w:
        # The watch may not be registered yet when a put lands: put again
        # (a new value) until one shows up, a bounded number of times.
        for i in range(20):
            ctl.ok("put", "wlive/k", f"v{i}")
            try:
                lines = w.wait(lambda ls, i=i: f"v{i}" in ls, 1.5, f"the put of v{i}", final=False)
                break
            except AssertionError:
                if w.proc.poll() is not None:
                    raise
        else:
            raise AssertionError(f"no put showed up: {w.lines!r}")
        at = lines.index(f"v{i}")
        assert lines[at - 2 : at + 1] == ["PUT", "wlive/k", f"v{i}"]
        ctl.ok("del", "wlive/k")
        w.wait(lambda ls: ls[-2:] == ["DELETE", "wlive/k"] or ls[-3:-1] == ["DELETE", "wlive/k"],
               10, "the delete")  # fmt: skip


def test_watch_rev_replays_history(ctl: Etcdctl) -> None:
    first = put_rev(ctl, "wrev/k", "a")
    ctl.ok("put", "wrev/other", "x")
    ctl.ok("put", "wrev/k", "b")
    ctl.ok("del", "wrev/k")
    want = ["PUT", "wrev/k", "a", "PUT", "wrev/k", "b", "DELETE", "wrev/k", ""]
    with Background.etcdctl(ctl, "watch", "wrev/k", "--rev", str(first)) as w:
        assert w.wait(lambda ls: len(ls) >= len(want), 10, "the replay") == want
        ctl.ok("put", "wrev/k", "c")  # and it goes on live
        assert w.wait(lambda ls: len(ls) >= len(want) + 3, 10, "a live put")[-3:] == [
            "PUT", "wrev/k", "c"
        ]  # fmt: skip


def test_watch_prefix_prev_kv(ctl: Etcdctl) -> None:
    first = put_rev(ctl, "wpre/a", "1")
    ctl.ok("put", "wpre/a", "2")
    ctl.ok("put", "wpreb", "outside")
    ctl.ok("del", "wpre/a")
    want = [
        "PUT", "wpre/a", "1",
        "PUT", "wpre/a", "1", "wpre/a", "2",
        "DELETE", "wpre/a", "2", "wpre/a", "",
    ]  # fmt: skip
    args = ("watch", "--prefix", "--prev-kv", "wpre/", "--rev", str(first))
    with Background.etcdctl(ctl, *args) as w:
        assert w.wait(lambda ls: len(ls) >= len(want), 10, "the replay") == want
    got = []
    with Background.etcdctl(
        ctl, "watch", "--prefix", "wpre/", "--rev", str(first), "-w", "json"
    ) as w:
        w.wait(lambda ls: sum(len(json.loads(x)["Events"]) for x in ls) >= 3, 10, "json events")
        for line in w.lines:
            got += json.loads(line)["Events"]
    assert [e.get("type", 0) for e in got] == [0, 0, 1]  # PUT, PUT, DELETE
    assert got[2]["kv"]["mod_revision"] == first + 3 and "create_revision" not in got[2]["kv"]


def test_watch_from_a_compacted_revision_is_canceled(etcdctl: str, ctl: Etcdctl) -> None:
    # One endpoint: the node that answered the compaction has applied it.
    one = PatientEtcdctl(etcdctl, ctl.endpoints[:1])
    first = put_rev(one, "wcomp/k", "a")
    last = put_rev(one, "wcomp/k", "b")
    one.ok("compaction", str(last))
    with Background.etcdctl(one, "watch", "wcomp/k", "--rev", str(first)) as w:
        assert w.exited(20) == 5  # etcdctl's ExitInterrupted, as against etcd
        w.stop()
        assert "watch was canceled (etcdserver: mvcc: required revision has been compacted)" in (
            w.stderr
        )
        assert "Error: watch is canceled by the server" in w.stderr
    # From after the compaction it replays.
    with Background.etcdctl(one, "watch", "wcomp/k", "--rev", str(last + 1)) as w:
        one.ok("put", "wcomp/k", "c")
        assert w.wait(lambda ls: len(ls) >= 3, 10, "a put after the compaction") == [
            "PUT", "wcomp/k", "c"
        ]  # fmt: skip
