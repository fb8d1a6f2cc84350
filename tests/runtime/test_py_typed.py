"""liferaft ships ``py.typed`` (PEP 561), so its types reach the programs that import it.

Without the marker mypy --strict treats liferaft as untyped ("module is
installed, but missing library stubs or py.typed marker") and every
``@command`` signature turns into ``Any``: a wrong argument type goes unseen
until it is refused at run time.  The test runs mypy --strict on a small
user program, finding liferaft the way it finds an installed package (on
the interpreter's search path, not as a source file given to it), and
checks that the one wrong call is reported and nothing else is.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import liferaft

USER_PROGRAM = textwrap.dedent(
    """\
    from liferaft.runtime import Node, NodeTimeoutError, Replicated, command


    class Counter(Replicated):
        def __init__(self) -> None:
            super().__init__()
            self.value = 0

        @command
        def add(self, n: int) -> int:
            self.value += n
            return self.value


    async def use(counter: Counter, node: Node) -> int:
        try:
            total: int = await counter.add(5)
        except NodeTimeoutError:
            return -1
        await counter.add("five")  # WRONG
        return total
    """
)


def test_py_typed_ships_next_to_the_package() -> None:
    # hatch's wheel target takes every file under liferaft/ (pyproject.toml,
    # [tool.hatch.build.targets.wheel] packages = ["liferaft"]), so the
    # marker reaches the wheel as long as it is in the package directory.
    assert (Path(liferaft.__file__).parent / "py.typed").is_file()


def test_mypy_strict_sees_the_typed_command_signatures(tmp_path: Path) -> None:
    mypy = shutil.which("mypy", path=os.path.dirname(sys.executable))
    if mypy is None:
        pytest.skip("mypy is not installed next to this interpreter")
    program = tmp_path / "user.py"
    program.write_text(USER_PROGRAM)
    wrong_line = USER_PROGRAM.splitlines().index(
        next(line for line in USER_PROGRAM.splitlines() if line.endswith("# WRONG"))
    ) + 1
    # liferaft comes from the search path, as an installed package would:
    # mypy reads a package found there only if it carries py.typed.
    env = {**os.environ, "PYTHONPATH": str(Path(liferaft.__file__).parent.parent)}
    env.pop("MYPYPATH", None)
    proc = subprocess.run(
        [mypy, "--strict", "--cache-dir", os.devnull, "--no-error-summary", "user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert "py.typed" not in out and "import-untyped" not in out, out
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert len(errors) == 1, out
    assert errors[0].startswith(f"user.py:{wrong_line}:"), out
    assert '"str"; expected "int"' in errors[0], out
