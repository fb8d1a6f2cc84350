"""The bench harness (bench/benchkit, bench/ab.py) when things go wrong: a
failed run is reported as failed, never as figures; a yardstick without a
sample says so instead of reporting 0 ms; a bad checkout is refused before
anything runs.  No bench is run at length and no timing is asserted.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # the bench scripts import benchkit as top-level

import ab  # noqa: E402
import raft_bench  # noqa: E402
from benchkit import runner, stats, yardsticks  # noqa: E402
from raft_report import report  # noqa: E402


def test_a_run_that_raises_is_reported_and_exits_1_with_its_children_killed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # E.g. the fsync yardstick on a full disk: before, the OSError escaped
    # runner.run, so the script died with a traceback, printed no report of
    # the rounds already done and left its temp dir behind.
    killed = []

    async def main() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    assert runner.run(main(), lambda: killed.append(True)) == 1
    assert killed
    err = capsys.readouterr().err
    assert "bench failed" in err and "No space left on device" in err


def test_a_yardstick_without_samples_has_no_figure_rather_than_zero(tmp_path: Path) -> None:
    fs = yardsticks.measure_fsync(tmp_path, 0.0)  # no time: no sample
    assert fs["n"] == 0 and fs["p50"] is None and fs["p99"] is None
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    one = yardsticks.measure_fsync(tmp_path, 5.0, cap=1)
    assert one["n"] == 1 and one["p50"] == one["p99"] and one["p50"] > 0


def test_stats_on_no_sample_or_one() -> None:
    assert stats.summarize([]) == {"p50": None, "p90": None, "p99": None, "max": None}
    assert stats.summarize([0.002]) == {"p50": 2.0, "p90": 2.0, "p99": 2.0, "max": 2.0}
    assert stats.med([]) is None and stats.med([None]) is None
    assert stats.fmt(stats.med([3.0]), str) == "3.0"
    assert stats.fmt(None, str) == "n/a"


def _bench_without_yardsticks() -> SimpleNamespace:
    plan = raft_bench.QUICK
    result = raft_bench.ClusterResult("liferaft-sync", 1, max_rate=1000.0)
    result.lat100 = {"p50": 1.5, "p99": 3.0}
    no_figure = {"p50": None, "p99": None, "n": 0}
    return SimpleNamespace(
        plan=plan,
        et=lambda: plan.tick * plan.election_ticks,
        args=SimpleNamespace(systems=["liferaft-sync"]),
        results=[result],
        env=[{"round": 1, "fsync": no_figure, "rtt": no_figure, "hardstate": no_figure}],
    )


def test_the_raft_report_survives_missing_yardsticks(capsys: pytest.CaptureFixture[str]) -> None:
    # No fdatasync or RTT figure: no ratio against them (before: a
    # ZeroDivisionError in the summary, after the whole run).
    out = report(_bench_without_yardsticks(), 1.0)  # type: ignore[arg-type]
    assert not any("fdatasync" in k for k in out["ratios"])
    assert "SUMMARY:" in capsys.readouterr().out


@pytest.mark.parametrize("broken", ["missing", "old build"])
def test_ab_refuses_a_bad_checkout_before_running_anything(
    tmp_path: Path, broken: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old"
    if broken == "old build":  # a checkout from before the bench script existed
        (old / "liferaft").mkdir(parents=True)
        (old / "bench").mkdir()
    ran: list[object] = []
    monkeypatch.setattr(ab, "run_one", lambda *a: ran.append(a))
    argv = ["ab.py", "raft", "--old", str(old), "--rounds", "1", "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        ab.main()
    assert str(old) in str(exc.value) and "bench/raft_bench.py" in str(exc.value)
    assert ran == []


def test_ab_refuses_zero_rounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["ab.py", "raft", "--old", str(BENCH.parent), "--rounds", "0"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        ab.main()
    assert exc.value.code == 2  # argparse's usage error, not an IndexError


def test_ab_fails_when_the_builds_share_no_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every system of one build errored (figures() skips those): an empty
    # table with exit 0 would read as "nothing changed".
    payloads = {"old": {"results": [{"system": "liferaft-sync", "error": "boom"}]}}
    good = {"system": "liferaft-sync", "max_rate": 100.0, "lat100": {"p50": 1.0}}
    payloads["new"] = {"results": [good]}
    monkeypatch.setattr(ab, "run_one", lambda tree, b, out, extra: payloads[out.stem.split("-")[1]])
    argv = ["ab.py", "raft", "--old", str(BENCH.parent), "--rounds", "1"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        ab.main()
    assert "no figure" in str(exc.value) and "boom" in str(exc.value)
