"""The ``liferaft`` command's surface, in process: help text on every
command and option, ``-h``, ``--version``, shell completion, and the
formats of docs/operations.md, "Scripting the CLI".  (Exit codes against a
real cluster: test_cli_exit_codes.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import liferaft
from liferaft.cli import main
from liferaft.cli.exit_codes import CommandFailedError, ExitCode
from liferaft.cli.output import Output, emit, simple_line


def _walk(cmd: click.Command, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], click.Command]]:
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        for name, sub in sorted(cmd.commands.items()):
            out += _walk(sub, (*path, name))
    return out


COMMANDS = _walk(main, ())


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, cmd in COMMANDS:
        where = " ".join(("liferaft", *path))
        if not (cmd.help or "").strip():
            missing.append(where)
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip():
                missing.append(f"{where} {'/'.join(p.opts)}")
    assert len(COMMANDS) > 20  # the walk saw the tree, not just the top
    assert not missing, "no help text: " + ", ".join(missing)


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "-")
def test_h_is_help_on_every_command(path: tuple[str, ...]) -> None:
    r = CliRunner().invoke(main, [*path, "-h"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("Usage: ") and "-h, --help" in r.output


def test_version() -> None:
    r = CliRunner().invoke(main, ["--version"])
    assert (r.exit_code, r.output) == (0, f"liferaft {liferaft.__version__}\n")


def test_shell_completion_makes_a_script() -> None:
    """docs/operations.md: eval "$(_LIFERAFT_COMPLETE=bash_source liferaft)"."""
    prog = "import sys; sys.argv[0] = 'liferaft'; from liferaft.cli import run; run()"
    env = {**os.environ, "_LIFERAFT_COMPLETE": "bash_source"}
    r = subprocess.run([sys.executable, "-c", prog], env=env, capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "_liferaft_completion()" in r.stdout and "complete " in r.stdout


def _printed(out: Output, fmt: str) -> tuple[int, str]:
    @click.command()
    def show() -> None:
        emit(out, fmt)

    r = CliRunner().invoke(show, [])  # stdout captured: not a terminal
    return r.exit_code, r.output


def test_the_formats() -> None:
    rows = [["a\tb", "line1\nline2", "back\\slash"], ["[/]", "x" * 300, "…"]]
    out = Output({"k": [1, 2]}, rows, ("one", "two", "three"), title="t")
    code, text = _printed(out, "simple")
    assert code == 0
    assert text.splitlines() == ["a\\tb\tline1\\nline2\tback\\\\slash", f"[/]\t{'x' * 300}\t…"]
    assert json.loads(_printed(out, "json")[1]) == {"k": [1, 2]}
    code, text = _printed(out, "table")
    # Not a terminal: the 300-wide cell is whole, on one line, markup is text.
    assert code == 0 and "x" * 300 in text and "[/]" in text
    assert text.count("…") == 1  # the cell's own, none added
    line = Output({"revision": 5}, [["5"]], line="OK revision 5")
    assert _printed(line, "table")[1] == "OK revision 5\n"
    assert _printed(line, "simple")[1] == "5\n"
    assert simple_line(["\r"]) == "\\r"


def test_a_failure_prints_first_then_exits_with_its_code() -> None:
    out = Output([], [["up"]], ("state",), failure=(ExitCode.UNAVAILABLE, "all down"))
    code, text = _printed(out, "simple")
    assert code == ExitCode.UNAVAILABLE and text.startswith("up\n") and "Error: all down" in text
    assert CommandFailedError("x", ExitCode.NOT_FOUND).exit_code == 3


def test_exit_code_numbers_are_stable() -> None:
    """Scripts branch on these; docs/operations.md lists them."""
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0, "ERROR": 1, "USAGE": 2, "NOT_FOUND": 3, "PRECONDITION_FAILED": 4,
        "UNAVAILABLE": 5, "OUTCOME_UNKNOWN": 6, "INTERRUPTED": 130,
    }  # fmt: skip
