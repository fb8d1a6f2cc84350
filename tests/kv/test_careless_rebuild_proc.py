"""A careless operator's recovery (docs/operations.md, "Losing quorum for
good"; docs/deploy.md on a lost disk): ``--force-new-cluster`` while the
old peers still run, killed midway, and a wiped voter started again with
``--join`` under its old id."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.kv.mvcc import Range
from liferaft.kv.rebuild import FORCE_RECORD, force_new_cluster, read_force_record
from liferaft.kv.serve import (
    ServeError,
    ServeOptions,
    check_force,
    has_data,
    node_config,
    open_machine,
    serve_argv,
)
from tests.kv.procs import CLI, FAST_TIMING, ProcCluster, proc_cluster, run_cli, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    """Three nodes the tests below share; each leaves all three running."""
    with proc_cluster(tmp_path_factory.mktemp("careless")) as c:
        c.start_cluster(3)
        c.wait_leader()
        yield c


def test_force_new_cluster_is_refused_while_other_members_run(cluster: ProcCluster) -> None:
    """Forced while n2 and n3 run, n1 made a second cluster under the same
    id: n2 and n3 are a majority of the old membership and went on electing
    leaders and taking writes, n1 refused them as strangers, and one key
    held two values at one revision.  Refused now, changing nothing."""
    c = cluster
    assert c.put(c.wait_leader(), "fnc/a", "1")[0] == 200
    wait_for(lambda: c.get("n1", "fnc/a", "stale")[0] == 200, 20, "fnc/a on n1")
    c.stop("n1")  # n2 and n3 still run: the quorum is not lost
    n1 = c.nodes["n1"]
    before = sorted(p.name for p in n1.data.iterdir())
    r = subprocess.run([*CLI, *c.command("n1")[3:], "--force-new-cluster"],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode != 0, r.stderr
    assert "answer" in r.stderr and "n2" in r.stderr and "n3" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    # Nothing changed: no record, no backup dir; n1 rejoins its cluster as it was.
    assert sorted(p.name for p in n1.data.iterdir()) == before
    assert not (n1.data / FORCE_RECORD).exists()
    c.start("n1", mode=[])
    assert c.put(c.wait_leader(), "fnc/b", "2")[0] == 200
    wait_for(lambda: c.get("n1", "fnc/b", "stale")[0] == 200, 20, "fnc/b on n1")


def test_a_wiped_voter_cannot_rejoin_under_its_id(cluster: ProcCluster) -> None:
    """n3's disk is replaced and it is started again with --join: it would
    come back as the voter n3 with no log and no memory of its vote (it did,
    silently).  Refused, naming the way out: remove n3, then join."""
    c = cluster
    assert c.put(c.wait_leader(), "wipe/a", "1")[0] == 200
    c.stop("n3")
    n3 = c.nodes["n3"]
    shutil.rmtree(n3.data)
    join = ["--join", f"http://{c.nodes['n1'].client}"]
    argv = serve_argv("n3", n3.data, n3.peer, n3.client, *FAST_TIMING, *join)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "already a voter" in r.stderr, r.stderr
    assert "members remove n3" in r.stderr
    # A leader new in its term refuses changes until it commits (retry, bounded).
    wait_for(lambda: run_cli("members", "remove", "n3", "--endpoints",
                             c.nodes["n1"].client).returncode == 0, 30, "n3 removed")  # fmt: skip
    c.start("n3", mode=join)
    wait_for(lambda: c.get("n3", "wipe/a", "stale")[0] == 200, 30, "wipe/a on the new n3")


FORCE_CHILD = textwrap.dedent("""
    import asyncio, os, sys
    from pathlib import Path
    from liferaft.kv import rebuild
    from liferaft.kv.serve import ServeOptions, node_config, open_machine
    from liferaft.runtime import store
    data, point = Path(sys.argv[1]), sys.argv[2]
    calls = {"replace": 0}
    real_replace = os.replace
    def replace(a, b):
        calls["replace"] += 1
        if point == "move" and calls["replace"] == 3:  # hardstate moved, wal not
            os._exit(9)
        real_replace(a, b)
    rebuild.os.replace = replace
    real_fsync_dir = rebuild.fsync_dir
    def fsync_dir(d):
        real_fsync_dir(d)
        rebuild.fsync_dir = fsync_dir
    if point == "state":  # the new snapshot written, not its hard state
        store.DiskStore.save = lambda *a, **k: os._exit(9)
    o = ServeOptions("n1", data, "127.0.0.1:1", "127.0.0.1:2")
    m = open_machine(data, fresh=False, ours=True)
    asyncio.run(rebuild.force_new_cluster(node_config(o), m, data))
""")


@pytest.mark.parametrize("point", ["move", "state"])
def test_force_new_cluster_killed_midway_is_refused_then_finished(
    one_node_dir: Path, tmp_path: Path, point: str
) -> None:
    """kill -9 at each step of --force-new-cluster: a start without the
    flag is refused, naming it; one with it finishes the job on the data
    it kept (a one-member cluster that holds the keys)."""
    data = tmp_path / "n1"
    shutil.copytree(one_node_dir, data)
    r = subprocess.run([sys.executable, "-c", FORCE_CHILD, str(data), point],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 9, r.stderr
    o = ServeOptions("n1", data, "127.0.0.1:1", "127.0.0.1:2")
    with pytest.raises(ServeError, match="interrupted: start again with --force-new-cluster"):
        check_force(o, fresh=not has_data(data))
    machine = open_machine(data, fresh=False, ours=True)
    try:
        index = asyncio.run(force_new_cluster(node_config(o), machine, data))
        assert index == machine.applied_index() > 0
        assert machine.store.range(Range(b"crash/", b"crash0")).count == 2  # the keys kept
    finally:
        machine.close()
    assert read_force_record(data)["state"] == "done"  # type: ignore[index]
    check_force(o, fresh=False)  # a start without the flag goes on


@pytest.fixture(scope="module")
def one_node_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data dir of a stopped one-member cluster holding keys crash/*."""
    root = tmp_path_factory.mktemp("force")
    with proc_cluster(root) as c:
        c.start_cluster(1)
        leader = c.wait_leader()
        for k in "ab":
            assert c.put(leader, f"crash/{k}", k)[0] == 200
        c.stop("n1")
        return c.nodes["n1"].data
