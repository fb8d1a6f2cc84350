"""Golden interaction scripts of the core (etcd/raft's datadriven style).

Every tests/core/testdata/*.txt is run by tests/core/interaction.py and its
output compared with the expected blocks in the file.  ``pytest --rewrite``
writes the actual output back instead; read the diff before committing it.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from .interaction import Env, ScriptError, parse, render, run_script

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_interaction(path: Path, rewrite: bool) -> None:
    expected, actual = run_script(path)
    if rewrite:
        if actual != expected:
            path.write_text(actual)
        return
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"{path.name} (expected)",
                tofile=f"{path.name} (actual)",
            )
        )
        pytest.fail(f"{path} differs from its golden output (pytest --rewrite):\n{diff}")


def test_there_are_scripts() -> None:
    assert len(SCRIPTS) >= 10


def test_every_script_says_what_it_shows() -> None:
    for path in SCRIPTS:
        assert path.read_text().startswith("# "), f"{path} must start with a # comment"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "script.txt"
    p.write_text(text)
    return p


def test_unknown_command_names_file_and_line(tmp_path: Path) -> None:
    p = _write(tmp_path, "# x\nadd-nodes 1 voters=(1)\n----\nok\n\nfrobnicate 1\n----\nok\n")
    with pytest.raises(ScriptError, match=r"script\.txt:6: frobnicate: unknown command"):
        run_script(p)


def test_bad_arguments_name_file_and_line(tmp_path: Path) -> None:
    cases = [
        ("add-nodes 1 voters=(1) bogus=3", "unknown argument"),
        ("add-nodes 1 voters=(1) pre-vote=maybe", "must be true or false"),
        ("add-nodes 1 voters=(1) index=x", "not an integer"),
        ("add-nodes one", "usage: add-nodes"),
    ]
    for cmd, why in cases:
        p = _write(tmp_path, f"{cmd}\n----\nok\n")
        with pytest.raises(ScriptError, match=rf"script\.txt:1: add-nodes: .*{why}"):
            run_script(p)
    p = _write(tmp_path, "add-nodes 1 voters=(1)\n----\nok\n\ncampaign 7\n----\nok\n")
    with pytest.raises(ScriptError, match=r"script\.txt:5: campaign: no node '7'"):
        run_script(p)
    p = _write(tmp_path, "add-nodes 1 voters=(1)\n----\nok\n\ndeliver-msgs type=Nope\n----\n")
    with pytest.raises(ScriptError, match=r"script\.txt:5: deliver-msgs: unknown message type"):
        run_script(p)


def test_missing_separator_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path, "# x\nraft-state\nok\n")
    with pytest.raises(ScriptError, match=r"script\.txt:2: expected a '----' line"):
        run_script(p)


def test_render_round_trips_and_replaces_output(tmp_path: Path) -> None:
    text = "# c\n\nraft-state\n----\nold\n\n# d\nraft-state\n----\n"
    items = parse(tmp_path / "x.txt", text)
    assert render(items, {}) == text
    env = Env("x.txt")
    outputs = {3: env.run(3, "raft-state"), 8: ["new"]}
    assert render(items, outputs) == "# c\n\nraft-state\n----\nok\n\n# d\nraft-state\n----\nnew\n"


def test_payloads_may_contain_equals_and_spaces(tmp_path: Path) -> None:
    env = Env("x.txt")
    env.run(1, "add-nodes 1 voters=(1)")
    env.run(2, "campaign 1")
    env.run(3, "process-ready 1")
    assert env.run(4, "propose 1 'k=v w'") == ["ok"]
    out = env.run(5, "process-ready 1")
    assert '  2/3 EntryNormal "k=v w"' in out
