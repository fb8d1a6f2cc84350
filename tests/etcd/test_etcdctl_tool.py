"""The real etcdctl is there and is the 3.4 client; and the finder's rules
hold for a missing or wrong-version etcdctl (fake ones on a private PATH)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.etcd import etcdctl as finder
from tests.etcd.etcdctl import run_etcdctl


def test_etcdctl_version_names_api_3_4(etcdctl: str) -> None:
    r = run_etcdctl(etcdctl, "version")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("etcdctl version: 3.4."), r.stdout
    assert "API version: 3.4" in lines, r.stdout


@pytest.fixture
def private_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty PATH, no /usr/bin fallback, and no CI: skips, not fails."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(finder, "DEBIAN_PATH", tmp_path / "absent")
    monkeypatch.delenv("CI", raising=False)
    return tmp_path


def fake_etcdctl(directory: Path, version_output: str) -> Path:
    tool = directory / "etcdctl"
    tool.write_text(f"#!/bin/sh\nprintf '{version_output}'\n")
    tool.chmod(0o755)
    return tool


def test_missing_etcdctl_skips_naming_the_install_script(private_path: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match="scripts/install-etcd-client.sh"):
        finder.find_etcdctl()


def test_etcdctl_3_5_is_refused_naming_its_version(private_path: Path) -> None:
    fake_etcdctl(private_path, "etcdctl version: 3.5.9\\nAPI version: 3.5\\n")
    with pytest.raises(pytest.skip.Exception, match=r"etcdctl 3\.5\.9, not 3\.4\.x"):
        finder.find_etcdctl()


def test_a_fake_3_4_on_path_is_found_before_usr_bin(private_path: Path) -> None:
    tool = fake_etcdctl(private_path, "etcdctl version: 3.4.99\\nAPI version: 3.4\\n")
    assert finder.find_etcdctl() == str(tool)


def test_a_wrong_version_fails_under_ci(
    private_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_etcdctl(private_path, "garbage\\n")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"\(unknown version\).*CI=true"):
        finder.find_etcdctl()
