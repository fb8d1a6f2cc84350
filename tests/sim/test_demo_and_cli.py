"""The demo behind ``make run`` and the simulator's command line."""

from __future__ import annotations

import pytest

from liferaft.sim.__main__ import main as sim_main
from liferaft.sim.demo import main as demo_main


def test_demo_runs_and_fails_over(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_main(["--fast"]) == 0
    out = capsys.readouterr().out
    assert "won the election" in out
    assert "took over for term" in out
    assert "in the same order" in out


def test_sim_cli_last_line_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main(["--seeds", "3", "--steps", "1500"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("seeds=3 steps=")
    assert last.endswith("violations=0 liveness_failures=0")


def test_sim_cli_reports_a_planted_bug_with_a_replay_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = sim_main(["--seeds", "2", "--bug", "truncate-on-overlap", "--steps", "3000"])
    out = capsys.readouterr().out
    assert code == 1
    assert "VIOLATION seed=" in out
    assert "replay: python -m liferaft.sim --seed" in out and "--bug truncate-on-overlap" in out


def test_sim_cli_rejects_bad_arguments() -> None:
    with pytest.raises(SystemExit) as exc:
        sim_main(["--nodes", "0"])
    assert exc.value.code == 2
