"""The fault harness on etcd's v3 API (``soak --api etcd``), inside `make
test`: every client speaks etcd's gRPC API to a 3-node cluster under kill
-9, SIGSTOP, leadership transfers and partitions (where network namespaces
work), and the verdict is clean; the same run with a planted bug in the
etcd front's Watch (``--bug etcd-watch-skip``) must fail with the gaps it
made, and one with stale reads from the store's deferred commit (``--bug
kv-read-unsettled``) with the histories it broke.  Each run is a
subprocess, as `make soak` runs, so its processes and namespaces are its
own to clean up.  (Without processes: tests/chaos/test_etcd_api.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: One short run, the same with and without the bug (seconds of faults).
ARGS = ["soak", "--api", "etcd", "--time", "10", "--seed", "3", "--nodes", "3",
        "--faults", "kill,stop,transfer,partition", "--hostile", "none"]  # fmt: skip
COUNTS = ("rev_violations", "watch_gaps", "watch_dups", "watch_bad", "lease_early_expiry")


def run(out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], str]:
    r = subprocess.run(
        [sys.executable, "-m", "liferaft.chaos", *ARGS, "--out", str(out), *extra],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    lines = r.stdout.strip().splitlines()
    return r, lines[-1] if lines else ""


def field(line: str, name: str) -> int:
    return int(line.split(f" {name}=")[1].split()[0])


def node_logs(out: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((out / "cluster").glob("*.log")))


def test_an_etcd_soak_under_faults_is_clean(tmp_path: Path) -> None:
    """Linearizable, nothing lost, every revision, watch and lease check at
    0, through etcd's API (every node serves gRPC), and the run really
    exercised it: reads and writes recorded, watch events delivered, a
    lease whose keys went, a fault that ran."""
    r, last = run(tmp_path)
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-3000:]}"
    assert "linearizable=yes" in last and "lost=0" in last and "node_exits=0" in last
    assert last.endswith("seed=3 api=etcd")
    for name in COUNTS:
        assert field(last, name) == 0, name
    assert "COORDINATION:" not in r.stdout and "unexpected:" not in r.stdout
    coord = next(ln for ln in r.stdout.splitlines() if ln.startswith("coordination:"))
    assert field(coord, "rev_ops") > 200 and field(coord, "watch_events") > 50
    assert field(coord, "lease_keys_gone") >= 1
    faults = next(ln for ln in r.stdout.splitlines() if ln.startswith("faults:"))
    assert any(f in faults for f in ("kill", "stop", "transfer", "partition"))
    logs = node_logs(tmp_path)
    assert "--grpc-addr" in logs and "PLANTED BUG" not in logs


def test_the_etcd_soak_catches_a_watch_that_skips_an_event(tmp_path: Path) -> None:
    """The same run with every node's Watch dropping the first event after
    a resume from a start revision: the watchers resume all the time, so
    the watch checker must report gaps and the run must fail; nothing else
    is wrong (the reads and writes do not go through the watch)."""
    r, last = run(tmp_path, "--bug", "etcd-watch-skip")
    assert r.returncode == 1, f"{r.stdout[-4000:]}\n{r.stderr[-3000:]}"
    assert field(last, "watch_gaps") > 0, last
    assert "linearizable=yes" in last and field(last, "rev_violations") == 0
    assert "COORDINATION: watch" in r.stdout and "gaps: missed" in r.stdout
    assert "PLANTED BUG etcd-watch-skip" in node_logs(tmp_path)


def test_the_etcd_soak_catches_a_read_that_skips_the_deferred_commit(tmp_path: Path) -> None:
    """The same run with every node's store reading the last commit from a
    thread without having the loop settle first (``--bug
    kv-read-unsettled``: mvcc/store.py, "Deferred commits"): a Range right
    after an acknowledged put misses it, so the checkers must say the
    history is not linearizable and the run must fail."""
    r, last = run(tmp_path, "--bug", "kv-read-unsettled")
    assert r.returncode == 1, f"{r.stdout[-4000:]}\n{r.stderr[-3000:]}"
    assert "linearizable=NO" in last and field(last, "lost") == 0, last
    assert "NOT LINEARIZABLE: key" in r.stdout
    assert "PLANTED BUG kv-read-unsettled" in node_logs(tmp_path)
