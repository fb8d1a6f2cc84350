"""``liferaft sim view``: one self-contained HTML file per trace (no browser
here; tests/browser/test_replay_viewer.py runs the page in Chromium).

The page must open from ``file://`` with nothing running, so it may name no
script, style or image by URL; and a trace is data from a run, so nothing in
it (a checker message with ``</script>`` in it) may end the inlined JSON and
become markup.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from liferaft.cli import main
from liferaft.cli.exit_codes import ExitCode
from liferaft.console.replay import SCRIPTS, static_text, write_viewer
from liferaft.sim.__main__ import main as sim_main
from liferaft.sim.trace import TraceError

DATA_RE = re.compile(r'<script type="application/json" id="trace-data">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trace, as `python -m liferaft.sim --seed 3 --trace` writes it (short run)."""
    path = tmp_path_factory.mktemp("trace") / "run.json"
    sim_main(["--seed", "3", "--nodes", "3", "--steps", "400", "--trace", str(path)])
    return path


def _inlined(page: str) -> Any:
    found = DATA_RE.findall(page)
    assert len(found) == 1, "exactly one inlined trace"
    return json.loads(found[0])


def test_the_page_is_self_contained(trace_path: Path) -> None:
    out = write_viewer(trace_path)
    assert out == trace_path.with_suffix(".html")
    page = out.read_text("utf-8")
    # Nothing loaded from anywhere: no src= or href= at all (the scripts and
    # the CSS are inlined), so no http(s):// either.
    assert not re.search(r"""\b(src|href)\s*=""", page, re.I), "the page loads a file"
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "<link" not in page
    for name in SCRIPTS:
        assert static_text(name) in page, f"{name} is not inlined"
    assert static_text("replay.css") in page
    assert 'id="trace-file"' not in page, "the file picker belongs to /ui/replay.html only"
    assert _inlined(page) == json.loads(trace_path.read_text())


def test_a_script_tag_in_the_trace_cannot_break_out(trace_path: Path, tmp_path: Path) -> None:
    doc = json.loads(trace_path.read_text())
    evil = 'x </script><script>alert(1)</script><!-- <script> </SCRIPT > (t=5)'
    doc["verdict"].update(ok=False, violation=evil, event=len(doc["events"]), t=5)
    doc["events"].append({"t": doc["events"][-1]["t"], "k": "violation", "message": evil,
                          "rule": "x"})
    doc["node_ids"][0] = "</script><img src=x onerror=alert(1)>"
    bad = tmp_path / "evil.json"
    bad.write_text(json.dumps(doc))
    page = write_viewer(bad).read_text("utf-8")
    # Every "</script" in the page closes one of its three script elements.
    assert len(re.findall(r"</script", page, re.I)) == 1 + len(SCRIPTS)
    assert "<!--" not in DATA_RE.findall(page)[0]
    back = _inlined(page)
    assert back["verdict"]["violation"] == evil
    assert back["node_ids"][0] == doc["node_ids"][0]


def test_the_static_files_come_from_the_package() -> None:
    """importlib.resources finds them (the wheel ships liferaft/console/static/)."""
    html = static_text("replay.html")
    for name in (*SCRIPTS, "replay.css"):
        assert name in html and static_text(name)
    for ident in ("trace-file", "stage", "logs", "scrubber", "play", "pause", "step", "time",
                  "event-index", "violation", "jump-violation"):
        assert f'id="{ident}"' in html, f"#{ident} missing (contract D)"


def test_cli_view_prints_the_path(trace_path: Path) -> None:
    out = trace_path.with_suffix(".html")
    out.unlink(missing_ok=True)
    r = CliRunner().invoke(main, ["sim", "view", str(trace_path)])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == str(out.resolve())
    assert out.is_file()
    r = CliRunner().invoke(main, ["sim", "view", "-w", "json", str(trace_path)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"html": str(out.resolve()), "trace": str(trace_path)}


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "cannot read"),
        ("", "not JSON"),
        ("{not json", "not JSON"),
        ('["a list"]', "not a liferaft simulator trace"),
        ('{"format": "something-else", "version": 1}', "not a liferaft simulator trace"),
        ('{"format": "liferaft-sim-trace", "version": 99, "events": []}', "version 99"),
        ('{"format": "liferaft-sim-trace", "version": 1}', "no \"events\""),
    ],
)
def test_cli_view_refuses_what_is_not_a_trace(
    tmp_path: Path, content: str | None, why: str
) -> None:
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    r = CliRunner().invoke(main, ["sim", "view", str(path)])
    assert r.exit_code == ExitCode.ERROR, r.output
    assert why in r.output and "Traceback" not in r.output
    assert not path.with_suffix(".html").exists(), "a page was written for a bad trace"


def test_a_directory_or_a_page_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        write_viewer(tmp_path)
    page = tmp_path / "run.html"
    page.write_text("<p>mine</p>")
    with pytest.raises(TraceError, match="not a trace"):
        write_viewer(page)
    assert page.read_text() == "<p>mine</p>", "the page named was overwritten"


def test_the_command_says_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    """The installed command (through its error wrapper): one line, exit 1."""
    code = "from liferaft.cli import run; run()"
    p = subprocess.run(
        [sys.executable, "-c", code, "sim", "view", str(tmp_path / "missing.json")],
        capture_output=True, text=True, timeout=60,
    )
    assert p.returncode == ExitCode.ERROR
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot read"), p.stderr
