"""The ``liferaft`` command's surface, in process: help text on every
command and option, ``-h``, ``--version``, shell completion, and the
formats of docs/operations.md, "Scripting the CLI".  (Exit codes against a
real cluster: test_cli_exit_codes.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import liferaft
from liferaft.cli import main
from liferaft.cli.exit_codes import CommandFailedError, ExitCode
from liferaft.cli.output import Output, emit, simple_line

from .cli_tree import walk

COMMANDS = walk()


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


# What a light command must not import: the server stack (liferaft/cli/__init__.py).
SERVER_SIDE = ("liferaft.runtime", "liferaft.kv", "aiohttp.web", "uvloop", "prometheus_client")
_IMPORTS_PROG = """
import json, sys
from liferaft.cli import run
seen = {}
for argv in (["--version"], ["kv", "get", "-h"]):
    sys.argv = ["liferaft", *argv]
    try:
        run()
    except SystemExit:
        pass
    seen[" ".join(argv)] = sorted(sys.modules)
print(json.dumps(seen))
"""


def test_light_commands_do_not_import_the_server_stack() -> None:
    """`liferaft --version` and `kv get` start without the runtime, the kv
    server, aiohttp's server side, uvloop or prometheus (a third of a second
    before the lazy group); `--version` not even the client."""
    r = subprocess.run([sys.executable, "-c", _IMPORTS_PROG], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.splitlines()[-1])
    version, kv_get = seen["--version"], seen["kv get -h"]

    def server_side(mods: list[str]) -> list[str]:
        return [m for m in mods if any(m == s or m.startswith(s + ".") for s in SERVER_SIDE)]

    assert "liferaft.cli" in version and server_side(version) == []
    assert not any(m.startswith(("liferaft.client", "aiohttp", "rich")) for m in version)
    assert "liferaft.cli.client_cmds" in kv_get and server_side(kv_get) == []


# -- -w on every command that prints -----------------------------------------------------

# Commands that print but take no -w, and why (docs/operations.md, "Scripting the CLI").
NO_WRITE_OUT = {
    ("serve",): "it logs (--log-format), it prints no result",
    ("cluster", "up"): "a live table for people until Ctrl-C; `status -w` is the scriptable view",
}


def _option(cmd: click.Command, flag: str) -> click.Option | None:
    return next((p for p in cmd.params if isinstance(p, click.Option) and flag in p.opts), None)


def test_every_printing_command_takes_w_and_json() -> None:
    leaves = {path: cmd for path, cmd in COMMANDS if not isinstance(cmd, click.Group)}
    assert set(NO_WRITE_OUT) <= set(leaves), "an exempt command that does not exist"
    missing = []
    for path, cmd in leaves.items():
        w = _option(cmd, "-w")
        if path in NO_WRITE_OUT:
            assert w is None, f"{' '.join(path)} takes -w now: drop it from NO_WRITE_OUT"
            continue
        if w is None or not isinstance(w.type, click.Choice) or set(w.type.choices) != {
            "table", "json", "simple"
        }:
            missing.append(" ".join(path))
        # `bench kv --json FILE` names a file (docs/bench.md); elsewhere it is -w json.
        alias = _option(cmd, "--json")
        if path != ("bench", "kv") and (alias is None or not alias.is_flag):
            missing.append(f"{' '.join(path)} --json")
    assert {("inspect",), ("cluster", "down"), ("bench", "wal")} <= set(leaves)
    assert not missing, "no -w table|json|simple: " + ", ".join(missing)


def _data_dir(tmp: Path) -> Path:
    from liferaft.core import ConfState, Entry, HardState, Snapshot, SnapshotMeta
    from liferaft.storage import DiskStorage

    st = DiskStorage(tmp, segment_size=300)
    st.apply_snapshot(Snapshot(SnapshotMeta(1, 1, ConfState(voters=frozenset({"a", "b"}))), b"s"))
    st.save(None, [Entry(j, 2, b"x" * 10) for j in range(2, 12)])
    st.save(HardState(2, "a", 8), [])
    st.close()
    return tmp


def test_inspect_formats(tmp_path: Path) -> None:
    d = _data_dir(tmp_path)
    r = CliRunner().invoke(main, ["inspect", str(d), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["ok"] is True and doc["hard_state"] == {"term": 2, "vote": "a", "commit": 8}
    assert (doc["wal"]["first"], doc["wal"]["last"], doc["wal"]["corruption"]) == (2, 11, None)
    assert doc["snapshots"] == [{"index": 1, "term": 1, "status": "ok"}]
    assert doc["membership"]["voters"] == ["a", "b"]
    r = CliRunner().invoke(main, ["inspect", str(d), "-w", "simple"])
    assert r.exit_code == 0, r.output
    rows = [line.split("\t") for line in r.output.splitlines()]
    assert ["hard_state", "2", "a", "8"] in rows and ["wal", "2", "11"] in rows
    assert ["snapshot", "1", "1", "ok"] in rows and ["membership", "a,b", ""] in rows
    assert all(row[0] in ("hard_state", "segment", "wal", "snapshot", "membership") for row in rows)
    # Corruption: still one document on stdout, and exit 1.
    seg = sorted((d / "wal").glob("*.wal"))[0]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0x10
    seg.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["inspect", str(d), "-w", "json"])
    assert r.exit_code == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["wal"]["corruption"]["path"] == str(seg)
    assert "corruption found" in r.stderr


def test_cluster_down_formats(tmp_path: Path) -> None:
    from liferaft.harness import pidfile

    r = CliRunner().invoke(main, ["cluster", "down", "--dir", str(tmp_path), "-w", "json"])
    assert r.exit_code == 0 and json.loads(r.output) == {"dir": str(tmp_path), "stopped": []}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pidfile.write(tmp_path.resolve() / pidfile.NAME, {"n1": proc.pid})
        r = CliRunner().invoke(main, ["cluster", "down", "--dir", str(tmp_path), "-w", "simple"])
        assert (r.exit_code, r.output) == (0, f"n1\t{proc.pid}\n"), r.output
        assert proc.wait(timeout=30) is not None  # it was stopped, not just listed
    finally:
        proc.kill()
        proc.wait()


def test_bench_wal_formats(tmp_path: Path) -> None:
    args = ["bench", "wal", "--dir", str(tmp_path), "--entries", "500", "--seconds", "0.01"]
    r = CliRunner().invoke(main, [*args, "-w", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert [b["batch"] for b in doc["batches"]] == [1, 16, 256] and doc["entries"] == 500
    assert doc["raw_syncs"] > 0 and all(b["serial"] > 0 for b in doc["batches"])
    r = CliRunner().invoke(main, [*args, "-w", "simple"])
    assert r.exit_code == 0, r.output
    assert [line.split("\t")[0] for line in r.output.splitlines()] == ["1", "16", "256"]
