"""The README's library example runs as written (on free ports)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from liferaft.harness.ports import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_counter_example_runs() -> None:
    text = README.read_text()
    section = text[text.index("## The library API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    src = code.group(1)
    for port in ("7101", "7102", "7103"):
        src = src.replace(port, str(free_port()))
    out = subprocess.run(
        [sys.executable, "-c", src], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["5", "7"]
