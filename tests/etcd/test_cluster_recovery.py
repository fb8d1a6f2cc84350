"""Operations parity with etcd (issue 16): a backup saved from a running
cluster (``liferaft snapshot save``, and etcdctl's ``snapshot save`` when
Maintenance.Snapshot is served) restored into a NEW 3-node cluster with
``liferaft snapshot restore``; and ``liferaft serve --force-new-cluster``
recovering a cluster that lost 2 of 3 members for good."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.etcd.etcdctl import Etcdctl
from tests.kv.procs import CLI, ProcCluster, proc_cluster, run_cli, wait_for


def _restore_cluster(root: Path, backup: Path, etcdctl: str) -> None:
    """Three data dirs restored from ``backup``, started (no --initial-cluster:
    the data dirs hold the membership); the keys read back over gRPC."""
    with proc_cluster(root, grpc=True) as c:
        c.add_nodes(3)
        for i in c.nodes:
            n = c.nodes[i]
            r = run_cli("snapshot", "restore", str(backup), "--data-dir", str(n.data),
                        "--id", i, "--initial-cluster", c.spec())  # fmt: skip
            assert r.returncode == 0, r.stderr
            assert f"restored {backup}" in r.stdout
        # A second restore into a used data dir is refused, nothing touched.
        again = run_cli("snapshot", "restore", str(backup), "--data-dir", str(c.nodes["n1"].data),
                        "--id", "n1", "--initial-cluster", c.spec())  # fmt: skip
        assert again.returncode != 0 and "not empty" in again.stderr
        for i in c.nodes:
            c.start(i, mode=[])
        c.wait_leader()
        ctl = Etcdctl(etcdctl, [n.grpc for n in c.nodes.values()])
        got = ctl.ok("get", "bk/", "--prefix").splitlines()
        assert got == ["bk/a", "1", "bk/b", "2"]
        assert ctl.ok("put", "bk/c", "3").strip() == "OK"  # the new cluster takes writes
        for i in c.nodes:  # every replica holds the restored keys
            own = Etcdctl(etcdctl, [c.nodes[i].grpc])
            wait_for(lambda o=own: o.ok("get", "bk/c", "--consistency=s").strip(), 20,
                     f"bk/c on {i}", interval=0.3)  # fmt: skip
            assert own.ok("get", "bk/a", "--consistency=s", "--print-value-only").strip() == "1"


def test_snapshot_save_and_restore(
    ctl: Etcdctl, etcdctl: str, etcd_cluster: ProcCluster, tmp_path: Path
) -> None:
    ctl.ok("put", "bk/a", "1")
    ctl.ok("put", "bk/b", "2")
    backup = tmp_path / "backup.db"
    n1 = etcd_cluster.nodes["n1"]
    r = run_cli("snapshot", "save", str(backup), "--endpoints", n1.client)
    assert r.returncode == 0, r.stderr
    assert backup.stat().st_size > 0 and not backup.with_name("backup.db.part").exists()
    # A damaged backup is refused by restore, and leaves no data dir.
    bad = tmp_path / "bad.db"
    bad.write_bytes(backup.read_bytes()[:-100])
    r = run_cli("snapshot", "restore", str(bad), "--data-dir", str(tmp_path / "x"), "--id", "n1",
                "--initial-cluster", "n1=127.0.0.1:1")  # fmt: skip
    assert r.returncode != 0 and "cannot restore" in r.stderr
    assert not (tmp_path / "x").exists()
    _restore_cluster(tmp_path / "restored", backup, etcdctl)


def test_etcdctl_snapshot_save_restores(ctl: Etcdctl, etcdctl: str, tmp_path: Path) -> None:
    ctl.ok("put", "bk/a", "1")
    ctl.ok("put", "bk/b", "2")
    backup = tmp_path / "etcdctl.db"
    one = Etcdctl(etcdctl, ctl.endpoints[:1])
    assert "Snapshot saved at" in one.ok("snapshot", "save", str(backup), timeout=60)
    _restore_cluster(tmp_path / "restored", backup, etcdctl)


def test_snapshot_alias_takes(etcd_cluster: ProcCluster) -> None:
    """The bare ``liferaft snapshot`` is still ``snapshot take``."""
    ep = etcd_cluster.nodes["n2"].client
    for args in (["snapshot"], ["snapshot", "take"]):
        r = run_cli(*args, "--endpoints", ep)
        assert r.returncode == 0 and r.stdout.startswith("snapshot at index"), r.stderr


def test_force_new_cluster(tmp_path: Path, etcdctl: str) -> None:
    with proc_cluster(tmp_path, grpc=True) as c:
        c.start_cluster(3)
        for k in ("a", "b", "c"):
            assert c.put(c.wait_leader(), f"f/{k}", k)[0] == 200
        # Every replica applied them (the survivor must hold what was acknowledged).
        for i in c.nodes:
            wait_for(lambda i=i: c.get(i, "f/c", "stale")[0] == 200, 20, f"f/c on {i}")
        c.kill("n2")
        c.kill("n3")
        c.stop("n1")
        n1 = c.nodes["n1"]
        c.start("n1", mode=["--force-new-cluster"])
        c.wait_leader(among=["n1"])
        ctl = Etcdctl(etcdctl, [n1.grpc])
        assert ctl.ok("get", "f/", "--prefix", "--keys-only").split() == ["f/a", "f/b", "f/c"]
        assert ctl.ok("put", "f/d", "d").strip() == "OK"
        rows = ctl.ok("member", "list").splitlines()
        assert len(rows) == 1 and ", n1, " in rows[0]
        assert "FORCE-NEW-CLUSTER" in n1.log.read_text()
        # Once done, the flag is refused until it is removed (never twice by accident).
        c.stop("n1")
        again = subprocess.run([*CLI, *c.command("n1")[3:], "--force-new-cluster"],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert again.returncode != 0 and "already ran" in again.stderr
        c.start("n1", mode=[])
        c.wait_leader(among=["n1"])
        # Two fresh members join and catch up.
        for new in ("n4", "n5"):
            c.add_joining(new, via="n1")
            wait_for(lambda new=new: c.get(new, "f/d", "stale")[0] == 200, 30, f"f/d on {new}")
        rows = wait_for(
            lambda: (r := ctl.ok("member", "list").splitlines()) and
            len(r) == 3 and all(x.endswith(", false") for x in r) and r,
            30, "n4 and n5 voters", interval=0.3,
        )  # fmt: skip
        assert sorted(r.split(", ")[2] for r in rows) == ["n1", "n4", "n5"]
        # The cluster of three takes writes with n1 down.
        c.stop("n1")
        leader = c.wait_leader(among=["n4", "n5"])
        assert c.put(leader, "f/e", "e")[0] == 200


def test_snapshot_save_where_it_cannot_write(etcd_cluster: ProcCluster, tmp_path: Path) -> None:
    """A typo'd directory: one line naming the file, no traceback, no .part."""
    dest = tmp_path / "no-such-dir" / "backup.db"
    r = run_cli("snapshot", "save", str(dest), "--endpoints", etcd_cluster.nodes["n1"].client)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot write {dest}" in r.stderr and "nothing saved" in r.stderr
    assert not dest.parent.exists()
