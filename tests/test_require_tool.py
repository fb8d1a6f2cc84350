"""The rule for tests that need a Debian tool (etcdctl, etcd, chromium):
missing on a developer's machine, the test is skipped with the package to
install; missing under ``CI=true``, it fails, so a CI machine without the
tool can never pass by skipping what it was meant to run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", str(tmp_path))
    return tmp_path


def test_a_missing_tool_is_a_skip_naming_its_debian_package(
    empty_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(
        pytest.skip.Exception, match="etcdctl.*etcd-client.*scripts/install-etcd-client.sh"
    ):
        require_tool("etcdctl")


@pytest.mark.parametrize("ci", ["true", "1", "TRUE"])
def test_a_missing_tool_fails_under_ci(
    empty_path: Path, monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match="chromium.*CI"):
        require_tool("chromium")


def test_ci_false_still_skips(empty_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_tool("etcd")


def test_a_present_tool_is_its_path(empty_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    tool = empty_path / "etcdctl"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert require_tool("etcdctl") == str(tool)


def test_the_marker_applies_the_same_rule(tmp_path: Path) -> None:
    """``@pytest.mark.requires_tool("etcdctl")`` on a test: skipped without
    CI, an error (in setup) with CI=true.  Run in a child pytest, as a
    project's test module would be."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (tmp_path / "test_needs.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.requires_tool('liferaft-no-such-tool')\n"
        "def test_needs_it():\n    pass\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    outcomes = {}
    for ci in ("", "true"):
        env = {**os.environ, "PYTHONPATH": root, "CI": ci}
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
             "--rootdir", str(tmp_path), str(tmp_path)],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip
        outcomes[ci] = r.stdout.strip().splitlines()[-1]
    assert "1 skipped" in outcomes[""], outcomes
    assert "1 error" in outcomes["true"], outcomes
