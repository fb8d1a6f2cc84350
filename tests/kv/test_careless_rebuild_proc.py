"""A careless operator's recovery (docs/operations.md, "Losing quorum for
good"): ``--force-new-cluster`` on a node whose old peers still run would
make two clusters under one cluster id, both taking writes (the old
majority elects its own leader; the forced node refuses its peers as
strangers).  It is refused while any other member answers on its peer
address, and nothing is changed then."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from liferaft.kv.rebuild import FORCE_RECORD
from liferaft.kv.serve import serve_argv
from tests.kv.procs import CLI, FAST_TIMING, proc_cluster, run_cli, wait_for


def test_force_new_cluster_is_refused_while_other_members_run(tmp_path: Path) -> None:
    with proc_cluster(tmp_path) as c:
        c.start_cluster(3)
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


def test_a_wiped_voter_cannot_rejoin_under_its_id(tmp_path: Path) -> None:
    """n3's disk is replaced and it is started again with --join: it would
    come back as the voter n3 with no log and no memory of its vote (it did,
    silently).  Refused, naming the way out: remove n3, then join."""
    with proc_cluster(tmp_path) as c:
        c.start_cluster(3)
        assert c.put(c.wait_leader(), "wipe/a", "1")[0] == 200
        c.stop("n3")
        n3 = c.nodes["n3"]
        shutil.rmtree(n3.data)
        join = ["--join", f"http://{c.nodes['n1'].client}"]
        argv = serve_argv("n3", n3.data, n3.peer, n3.client, *FAST_TIMING, *join)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0 and "already a voter" in r.stderr, r.stderr
        assert "members remove n3" in r.stderr
        removed = run_cli("members", "remove", "n3", "--endpoints", c.nodes["n1"].client)
        assert removed.returncode == 0, removed.stderr
        c.start("n3", mode=join)
        wait_for(lambda: c.get("n3", "wipe/a", "stale")[0] == 200, 30, "wipe/a on the new n3")
