"""Every runnable example answers ``--help`` and refuses a bad flag the way
a command-line program does: usage, exit 0 or 2, and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from liferaft.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
# peer_node.py is the shared module of the one-process-per-node examples.
PROGRAMS = sorted(p.name for p in (ROOT / "examples").glob("*.py") if p.name != "peer_node.py")


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), *args],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("script", PROGRAMS)
def test_help_prints_usage_and_exits_0(script: str) -> None:
    proc = _run(script, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage:"), proc.stdout[:500]


@pytest.mark.parametrize("script", PROGRAMS)
def test_a_bad_flag_is_a_usage_error_without_a_traceback(script: str) -> None:
    proc = _run(script, "--no-such-flag")
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "usage:" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("script", [p for p in PROGRAMS if p != "counter.py"])
def test_a_data_dir_it_cannot_use_is_one_line_and_exit_1(script: str, tmp_path: Path) -> None:
    # A regular file where the data directory should be: the node cannot
    # start, and the program says why in one line, as for a port in use.
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("")
    args = ["--id", "n1", "--peers", f"n1=127.0.0.1:{free_port()}", "--data-dir", str(not_a_dir)]
    if script == "config_service.py":
        args += ["--http", f"127.0.0.1:{free_port()}"]
    proc = _run(script, *args)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr[-2000:]
