"""Shared pytest options and rules.

``--rewrite`` regenerates the expected output of golden interaction scripts
(tests/core/testdata/*.txt) instead of comparing against it.

Tests that need a Debian tool (etcdctl, etcd, chromium, ...) ask for it in
one way, :func:`require_tool` or ``@pytest.mark.requires_tool("etcdctl")``:
on a developer's machine a missing tool skips the test, naming the package
to install; with ``CI=true`` (CI sets it, see .ci/run) it fails, because a
CI run that skips what it was meant to run would pass without testing it.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

# The Debian package that ships each tool, for the skip message.
DEBIAN_PACKAGES = {
    "etcdctl": "etcd-client",
    "etcd": "etcd-server",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "h2load": "nghttp2-client",
}

# The project script that installs each tool, for the skip message.
INSTALL_SCRIPTS = {
    "etcdctl": "scripts/install-etcd-client.sh",
    "etcd": "scripts/install-etcd.sh",
    "h2load": "scripts/install-h2load.sh",
    "chromium": "scripts/install-chromium.sh",
    "chromedriver": "scripts/install-chromium.sh",
}


def in_ci() -> bool:
    """True when ``CI`` says so (``true``, ``1`` or ``yes``, any case)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_tool(name: str) -> str:
    """The path of the executable ``name``; if it is missing, skip the
    calling test, or fail it under ``CI=true``."""
    path = shutil.which(name)
    if path is not None:
        return path
    pkg = DEBIAN_PACKAGES.get(name)
    why = f"{name} is not installed" + (f" (Debian package {pkg})" if pkg else "")
    script = INSTALL_SCRIPTS.get(name)
    unusable_tool(why + (f": run {script}" if script else ""))


def unusable_tool(why: str) -> NoReturn:
    """Skip the calling test because a tool it needs is missing or
    unusable (``why`` says which and how to get it), or fail it under
    ``CI=true``."""
    if in_ci():
        pytest.fail(f"{why}; CI=true requires every tool a test needs", pytrace=False)
    pytest.skip(why)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the expected output of golden interaction scripts",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_tool(*names): the test needs these executables; "
        "skipped if one is missing, failed under CI=true",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("requires_tool"):
        for name in mark.args:
            require_tool(name)


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--rewrite"))
