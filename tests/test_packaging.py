"""Packaging (issue 14): one version, a library that needs only msgspec, and
a ``liferaft`` command that says which extra to install.

The wheel itself is built and installed in a fresh venv by
scripts/check-wheel.sh (it needs the package registry, so ``.ci/run`` runs
it after ``make test``); these tests check the same promises from the
source tree, offline.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

import liferaft
from liferaft._console import HINT, KV_MODULES
from liferaft.harness import free_base_port

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# Layers a `pip install liferaft` user imports: they may need msgspec only.
LIBRARY_LAYERS = ("core", "codec", "storage", "transport", "runtime", "sim", "verify")
# Top-level module -> the distribution in the kv extra that provides it.
KV_DISTRIBUTIONS = {
    "click": "click",
    "aiohttp": "aiohttp",
    "yarl": "yarl",
    "rich": "rich",
    "prometheus_client": "prometheus-client",
    "sortedcontainers": "sortedcontainers",
    "lmdb": "lmdb",
    "uvloop": "uvloop",
    "grpc": "grpcio",
    "google": "protobuf",  # google.protobuf, for liferaft/etcd/proto/
}

# Run before the code under test in a child interpreter: every module of the
# kv extra becomes unimportable, as if only `pip install liferaft` had run.
BLOCKER = """
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
"""


def _requirement_name(req: str) -> str:
    for sep in "<>=!~;[ ":
        req = req.split(sep, 1)[0]
    return req.strip().lower()


def _run_blocked(blocked: Iterable[str], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    prog = f"BLOCKED = {sorted(blocked)!r}\n{BLOCKER}\n{code}"
    return subprocess.run(
        [sys.executable, "-c", prog, *args],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )


def _third_party_imports(path: Path, *, top_level: bool = False) -> set[str]:
    """The third-party modules ``path`` imports (``top_level``: only those
    imported at module level, so on every import of it)."""
    out = set()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in tree.body if top_level else ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top != "liferaft" and top not in sys.stdlib_module_names:
                out.add(top)
    return out


# -- one version ------------------------------------------------------------------------


def test_the_version_has_one_source() -> None:
    """pyproject.toml reads the version from liferaft/__init__.py, and the
    installed metadata (what `pip show` and `liferaft --version` report)
    agrees with it."""
    assert "version" not in PROJECT, "a second, static version in pyproject.toml"
    assert "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["hatch"]["version"]["path"] == "liferaft/__init__.py"
    assert liferaft.__version__ == importlib.metadata.version("liferaft"), (
        "installed metadata is stale: reinstall (make install, or pip install -e '.[dev]')"
    )


def test_liferaft_version_prints_the_one_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from liferaft._console import run; run()", "--version"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert liferaft.__version__ in proc.stdout


def test_license_file_is_the_declared_one() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole text, not a stub
    assert PROJECT["license"] == {"text": "Apache-2.0"}
    assert "License :: OSI Approved :: Apache Software License" in PROJECT["classifiers"]


# -- the library needs msgspec only; the kv extra covers the rest -----------------------


# What the library may import inside a function, for a feature the user asks
# for and so already has: metrics on an application's own registry
# (``Node(registry=...)``, runtime/metrics.py).  Never at module level.
OPTIONAL_IN_LIBRARY = {"prometheus_client"}


def test_the_library_depends_on_msgspec_only() -> None:
    assert [_requirement_name(r) for r in PROJECT["dependencies"]] == ["msgspec"]
    files = [f for layer in LIBRARY_LAYERS for f in (ROOT / "liferaft" / layer).rglob("*.py")]
    bad = {
        f"{f.relative_to(ROOT)} imports {mod}"
        for f in files
        for mod in _third_party_imports(f) - {"msgspec"} - OPTIONAL_IN_LIBRARY
    }
    bad |= {
        f"{f.relative_to(ROOT)} imports {mod} at module level"
        for f in files
        for mod in _third_party_imports(f, top_level=True) - {"msgspec"}
    }
    assert not bad, "the library must need no extra:\n" + "\n".join(sorted(bad))


def test_the_kv_extra_covers_every_other_import() -> None:
    """Whatever the server, the CLI, the client and the harnesses import is
    in the kv extra, and `_console` knows every module of it."""
    extra = {_requirement_name(r) for r in PROJECT["optional-dependencies"]["kv"]}
    assert set(KV_DISTRIBUTIONS.values()) <= extra
    assert set(KV_DISTRIBUTIONS) == KV_MODULES
    missing = set()
    for f in (ROOT / "liferaft").rglob("*.py"):
        for mod in _third_party_imports(f) - {"msgspec"}:
            if mod not in KV_DISTRIBUTIONS:
                missing.add(f"{f.relative_to(ROOT)} imports {mod}")
    assert not missing, "not in the kv extra:\n" + "\n".join(sorted(missing))
    dev = {_requirement_name(r) for r in PROJECT["optional-dependencies"]["dev"]}
    assert "liferaft" in dev  # dev includes kv, so `make test` and `make run` get everything
    assert any("[kv]" in r for r in PROJECT["optional-dependencies"]["dev"])


def test_library_runs_a_cluster_without_the_kv_extra() -> None:
    """With every kv-extra module unimportable: import the library's layers
    and run examples/counter.py (3 nodes over TCP, two replicated writes)."""
    base = free_base_port(3)
    code = """
import runpy
for mod in BLOCKED:                       # the blocker really blocks
    try:
        __import__(mod)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"blocker let {mod} through")
import liferaft, liferaft.core, liferaft.codec, liferaft.storage, liferaft.transport
import liferaft.runtime, liferaft.sim, liferaft.verify
runpy.run_path("examples/counter.py", run_name="__main__")
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print("leaked", leaked)
"""
    proc = _run_blocked(KV_MODULES, code, str(base))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["5", "7", "leaked", "[]"], proc.stdout


# -- the console script -----------------------------------------------------------------


def test_console_script_is_the_wrapper() -> None:
    assert PYPROJECT["project"]["scripts"] == {"liferaft": "liferaft._console:run"}


@pytest.mark.parametrize("missing", ["click", "aiohttp"])
def test_command_without_the_kv_extra_prints_the_install_hint(missing: str) -> None:
    proc = _run_blocked({missing}, "from liferaft._console import run; run()", "status")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(HINT), proc.stderr
    assert "pip install 'liferaft[kv]'" in proc.stderr
    assert proc.stdout == ""


def test_a_missing_module_outside_the_kv_extra_keeps_its_traceback() -> None:
    """The hint is for the kv extra only: any other missing module is a bug
    to see in full, not to explain away."""
    proc = _run_blocked({"msgspec"}, "from liferaft._console import run; run()", "serve", "--help")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "msgspec" in proc.stderr
    assert HINT not in proc.stderr
