"""Finding and running the real etcdctl 3.4 (Debian's etcd-client) that the
etcd-protocol tests drive against liferaft-kv (issue 16).

etcdctl comes from ``scripts/install-etcd-client.sh`` (``.ci/run`` runs it).
When it is missing, or is not a 3.4 client, the tests that need it skip with
the reason, or fail under ``CI=true``: the rule of :func:`tests.conftest.require_tool`.
Only 3.4 is accepted because it is the version whose output the tests check
and whose API (v3, gRPC) liferaft-kv serves; 3.5 changed several outputs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import require_tool, unusable_tool

# Debian installs it here; a CI job's PATH may lack /usr/bin's siblings but
# seldom /usr/bin, so this is the fallback only.
DEBIAN_PATH = Path("/usr/bin/etcdctl")
WANT_MAJOR_MINOR = "3.4"
VERSION_RE = re.compile(r"^etcdctl version:\s*(\d+)\.(\d+)\.(\d+)", re.MULTILINE)


def etcdctl_env() -> dict[str, str]:
    """The environment for an etcdctl child: the caller's, with the v3 API
    forced and etcdctl's own ``ETCDCTL_*`` settings dropped, so a developer's
    exported ``ETCDCTL_ENDPOINTS`` or ``ETCDCTL_API=2`` cannot steer a test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def run_etcdctl(
    path: str, *args: str, timeout: float = 20.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``etcdctl ARGS`` (``input`` on its stdin, e.g. ``txn -i``'s) and
    return it finished (not checked: callers assert on the exit status and
    output they expect)."""
    return subprocess.run(
        [path, *args], capture_output=True, text=True, env=etcdctl_env(),
        timeout=timeout, check=False, input=input,
        stdin=subprocess.DEVNULL if input is None else None,
    )  # fmt: skip


def etcdctl_version(path: str) -> str | None:
    """The ``X.Y.Z`` that ``etcdctl version`` reports, or None when it
    does not run or says something else."""
    try:
        r = run_etcdctl(path, "version", timeout=10.0)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = VERSION_RE.search(r.stdout) if r.returncode == 0 else None
    return ".".join(m.groups()) if m else None


def find_etcdctl() -> str:
    """The path of a usable etcdctl 3.4.x: on PATH, else /usr/bin/etcdctl.
    Skips the calling test (fails it under CI=true) naming the install
    script when there is none, or naming the version when it is not 3.4."""
    path = shutil.which("etcdctl")
    if path is None and os.access(DEBIAN_PATH, os.X_OK):
        path = str(DEBIAN_PATH)
    if path is None:
        path = require_tool("etcdctl")  # skips or fails with the install script
    version = etcdctl_version(path)
    if version is None or not version.startswith(WANT_MAJOR_MINOR + "."):
        unusable_tool(
            f"{path} is etcdctl {version or '(unknown version)'}, not "
            f"{WANT_MAJOR_MINOR}.x: run scripts/install-etcd-client.sh "
            "(Debian package etcd-client)"
        )
    return path


class Etcdctl:
    """etcdctl bound to ``endpoints`` (and ``--user``, when given)."""

    def __init__(self, path: str, endpoints: list[str], user: str | None = None) -> None:
        self.path = path
        self.endpoints = endpoints
        self.user = user

    def run(
        self, *args: str, timeout: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``etcdctl --endpoints ... ARGS``, finished (not checked).  The
        command timeout is 15 s, not etcdctl's 5: on two shared cores under a
        parallel run a linearizable call can take longer, and the tests check
        answers, not speed (a later ``--command-timeout`` in ARGS wins)."""
        auth = ["--user", self.user] if self.user else []
        return run_etcdctl(
            self.path, "--endpoints", ",".join(self.endpoints), "--command-timeout", "15s",
            *auth, *args,
            timeout=timeout, input=input,
        )  # fmt: skip

    def ok(self, *args: str, timeout: float = 30.0, input: str | None = None) -> str:
        """Its stdout; AssertionError with stderr if it failed."""
        r = self.run(*args, timeout=timeout, input=input)
        assert r.returncode == 0, f"etcdctl {' '.join(args)} failed: {r.stderr.strip()}"
        return r.stdout
