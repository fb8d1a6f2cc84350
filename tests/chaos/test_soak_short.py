"""The short version of the fault harness, inside `make test`: one seed of a
5-node soak with every fault kind (partitions only where network namespaces
work; the run says so otherwise) and every hostile fault (a stranger on the
peer and client ports, an operator's bad member address), and a crash loop.  Run as subprocesses,
like `make soak`, so their processes and namespaces are theirs to clean up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "liferaft.chaos", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def field(line: str, name: str) -> int:
    return int(line.split(f" {name}=")[1].split()[0])


def test_a_short_soak_with_every_fault_and_a_stranger_is_linearizable(tmp_path: Path) -> None:
    """Linearizable, nothing lost, and nothing the stranger did changed the
    cluster (members, addresses, keys, terms); no node exited; every
    hostile kind ran (the first pass takes each once).  The coordination
    half ran and passed: revision order, watch streams without gaps or
    duplicates, no lease expired early; and it really exercised them
    (events delivered, leases whose keys went, transactions recorded)."""
    r = run(["soak", "--time", "45", "--seed", "7", "--nodes", "5", "--out", str(tmp_path)], 240)
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr[-3000:]}"
    assert "linearizable=yes" in last and "lost=0" in last and "seed=7" in last
    assert "membership_changed_by_stranger=0" in last and "node_exits=0" in last
    assert int(last.split("hostile=")[1].split()[0]) >= 10
    assert "STRANGER CHANGED" not in r.stdout and "NODE EXIT" not in r.stdout
    assert (tmp_path / "history.json").stat().st_size > 1000
    faults = next(ln for ln in r.stdout.splitlines() if ln.startswith("faults:"))
    assert "kill" in faults or "stop" in faults  # the nemesis really ran
    assert "hostile: operator-bad-addr" in r.stdout  # the operator fault ran
    for name in ("rev_violations", "watch_gaps", "watch_dups", "watch_bad", "lease_early_expiry"):
        assert field(last, name) == 0, name
    assert "COORDINATION:" not in r.stdout
    coord = next(ln for ln in r.stdout.splitlines() if ln.startswith("coordination:"))
    assert field(coord, "rev_ops") > 500 and field(coord, "watch_events") > 100
    assert field(coord, "lease_keys_gone") >= 1  # a holder died or revoked, and it showed
    for f in ("rev_history.json", "watches.json", "leases.json"):
        assert (tmp_path / f).stat().st_size > 100


def test_a_crash_loop_loses_nothing_acknowledged(tmp_path: Path) -> None:
    r = run(["crashloop", "--rounds", "20", "--seed", "3", "--out", str(tmp_path)], 240)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr[-3000:]}"
    last = r.stdout.strip().splitlines()[-1]
    assert "rounds=20" in last and "lost=0" in last
    acked = int(last.split("acked=")[1].split()[0])
    assert acked > 100


def test_the_harness_says_no_when_reads_are_stale(tmp_path: Path) -> None:
    """The whole pipeline can fail: with stale reads on purpose, a node cut
    off by a partition answers old values and the verdict must be NO."""
    from liferaft.chaos.netns import available

    ok, why = available()
    if not ok:
        import pytest

        pytest.skip(f"network namespaces unavailable: {why}")
    r = run(["soak", "--time", "20", "--seed", "11", "--nodes", "3", "--faults", "partition",
             "--hostile", "none", "--read-consistency", "stale", "--out", str(tmp_path)], 240)
    assert r.returncode == 1, f"{r.stdout[-3000:]}\n{r.stderr[-2000:]}"
    assert "linearizable=NO" in r.stdout.strip().splitlines()[-1]
    assert "NOT LINEARIZABLE: key" in r.stdout and "could not be placed" in r.stdout
