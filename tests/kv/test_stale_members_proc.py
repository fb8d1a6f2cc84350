"""Old members back after ``--force-new-cluster`` (docs/operations.md,
"Losing quorum for good"): n2 and n3 return on their old data dirs, a
majority of the OLD membership.  They used to elect a leader and take
writes beside the forced n1, two clusters under one id.  Now n1's newer
epoch tells each it was removed (docs/transport.md, "Epochs"): both stop
with one line, never start on that data again, and n1 is untouched.  A
member removed the normal way and restarted keeps today's behaviour."""

from __future__ import annotations

import subprocess
from pathlib import Path

from liferaft.kv.rebuild import STALE_RECORD
from liferaft.transport.secret import ensure_secret_file
from tests.kv.procs import CLI, ProcCluster, proc_cluster, run_cli, wait_for


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1] if stderr.strip() else ""


def _keys(c: ProcCluster, node: str, prefix: str) -> list[str]:
    code, body = c.request(node, "GET", f"/v1/kv?prefix={prefix}&consistency=stale")
    assert code == 200, body
    return sorted(kv["key"] for kv in body["items"])


def test_old_members_back_after_a_force_stop_for_good(tmp_path: Path) -> None:
    # A REMOVED answer is proven (and recorded for good) only when peers
    # authenticate: here with the cluster secret, as `cluster up` runs.
    secret = ensure_secret_file(tmp_path)
    with proc_cluster(tmp_path, extra=["--peer-secret-file", str(secret)]) as c:
        c.start_cluster(3)
        for k in "ab":
            assert c.put(c.wait_leader(), f"old/{k}", k)[0] == 200
        for i in c.nodes:
            wait_for(lambda i=i: c.get(i, "old/b", "stale")[0] == 200, 20, f"old/b on {i}")
        for i in ("n2", "n3", "n1"):  # n2 and n3 stop, able to come back
            c.stop(i)
        c.start("n1", mode=["--force-new-cluster"])
        c.wait_leader(among=["n1"])
        assert c.put("n1", "new/c", "c")[0] == 200
        rev = c.status("n1")["revision"]  # type: ignore[index]

        # Both old members at once, on their old data: each is told it was
        # removed and stops, naming the way back.
        pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
        old = {i: subprocess.Popen([*CLI, *c.command(i)[3:]], **pipes) for i in ("n2", "n3")}
        try:
            for i, p in old.items():
                _, err = p.communicate(timeout=60)
                line = _last_line(err)
                assert p.returncode == 1, err
                assert f"{i} was removed from cluster" in line and "--join" in line, err
                assert f"{i} is of epoch 0" in line and "n1 (epoch 1)" in line, err
                assert (c.nodes[i].data / STALE_RECORD).exists()
        finally:
            for p in old.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
        # n1 untouched: its keys, its revision, the only member.
        assert _keys(c, "n1", "old/") == ["old/a", "old/b"]
        assert _keys(c, "n1", "new/") == ["new/c"]
        st = c.status("n1")
        assert st is not None and st["revision"] == rev
        assert [m["id"] for m in st["members"]] == ["n1"]
        # Started again, even with n1 away, n2 refuses at once: with n3 it
        # could otherwise elect a leader while n1 is out of reach.
        c.stop("n1")
        again = subprocess.run([*CLI, *c.command("n2")[3:]], capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        line = _last_line(again.stderr)
        assert again.returncode == 1 and "was removed from its cluster" in line, again.stderr
        assert f"delete {c.nodes['n2'].data / STALE_RECORD}" in line
        assert "Traceback" not in again.stderr

        # A member removed the normal way, then restarted on its data, keeps
        # today's behaviour: it runs on, refused as an unknown peer (it is
        # of the cluster's epoch: a removal by conf change proves nothing
        # to it, and a lagging member could not tell it from a re-add).
        c.start("n1", mode=[])
        c.wait_leader(among=["n1"])
        n4 = c.add_joining("n4", via="n1")  # an empty node learns epoch 1 as it joins
        wait_for(lambda: c.get("n4", "new/c", "stale")[0] == 200, 30, "new/c on n4")
        removed = run_cli("members", "remove", "n4", "--endpoints", c.nodes["n1"].client)
        assert removed.returncode == 0, removed.stderr
        c.stop("n4")
        c.start("n4", mode=[])
        def refused() -> bool:  # in the log since the restart
            return "unknown peer 'n4'" in n4.log.read_text().rsplit("---- start", 1)[-1]

        wait_for(refused, 30, "n4 refused by n1")
        assert n4.running() and not (n4.data / STALE_RECORD).exists()
        assert c.put("n1", "new/d", "d")[0] == 200
