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


def test_sim_cli_runs_a_single_voter_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    """`--nodes 1` once crashed the driver ("empty range"); a one-voter
    cluster that grows is a schedule the simulator must run."""
    assert sim_main(["--seeds", "3", "--nodes", "1", "--steps", "1500"]) == 0
    assert capsys.readouterr().out.strip().endswith("violations=0 liveness_failures=0")


def test_sim_cli_reports_any_exception_and_goes_on(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure that is not a checker's (here, storage blowing up in seed 1)
    still names its seed and replay command, and the other seeds run."""
    from liferaft.core import MemoryStorage
    from liferaft.sim import runner

    real_run, real_append = runner._run_seed, MemoryStorage.append
    on_fire = {"now": False}

    def append(self: MemoryStorage, ents: object) -> None:
        if on_fire["now"]:
            raise OSError("disk on fire")
        real_append(self, ents)  # type: ignore[arg-type]

    def run(seed: int, *a: object) -> runner.SeedResult:
        on_fire["now"] = seed == 1
        return real_run(seed, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(MemoryStorage, "append", append)
    monkeypatch.setattr(runner, "_run_seed", run)
    code = sim_main(["--seeds", "3", "--steps", "1500"])
    out = capsys.readouterr().out
    assert code == 1
    assert "VIOLATION seed=1: exception OSError: disk on fire" in out
    assert "replay: python -m liferaft.sim --seed 1 " in out
    assert out.strip().splitlines()[-1].startswith("seeds=3 ")
    assert "seed=0:" not in out and "seed=2:" not in out
