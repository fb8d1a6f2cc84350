"""The architecture holds: the core does no I/O, and layers only import downward.

Both tests read the source with ``ast`` instead of importing it, so a
forbidden import is caught even on a code path no other test runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "liferaft"

# What the sans-IO core may import from the standard library.  Everything
# else (asyncio, socket, time, os, threading, ...) is I/O, a clock or
# concurrency, and so belongs to the runtime.
CORE_STDLIB = {
    "__future__",
    "bisect",
    "collections",
    "collections.abc",
    "contextlib",
    "dataclasses",
    "enum",
    "functools",
    "itertools",
    "json",
    "operator",
    "random",
    "typing",
}

# Layer -> the liferaft layers it may import (docs/architecture.md, "Layers").
ALLOWED = {
    "core": {"core"},
    "codec": {"codec", "core"},
    "storage": {"storage", "codec", "core"},
    "transport": {"transport", "codec", "core"},
    "sim": {"sim", "core", "codec", "storage"},
    "runtime": {"runtime", "storage", "transport", "codec", "core"},
    "kv": {"kv", "runtime", "storage", "transport", "codec", "core"},
    # The linearizability checker reads histories; it needs nothing of Raft.
    "verify": {"verify"},
    # The Python client speaks HTTP to any liferaft-kv; it shares no code
    # with the server, so it can be copied into a program on its own.
    "client": {"client"},
    # Real `liferaft serve` processes by PID (issue 13, section 4): it runs
    # the kv server's own command line and nothing else of Raft.
    "harness": {"harness", "kv", "runtime", "storage", "transport", "codec", "core"},
    # The fault harness drives real processes from outside, as an operator
    # and a stranger would: it may use everything below the CLI.
    "chaos": {
        "chaos", "harness", "verify", "client", "kv", "runtime", "storage", "transport", "codec",
        "core",
    },
    "cli": {
        "cli", "harness", "client", "kv", "runtime", "storage", "transport", "codec", "core",
        "sim",
    },
}


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute module names imported by ``path`` (relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    pkg_parts = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg_parts[: len(pkg_parts) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, node.lineno))
    return out


def _layer_files(layer: str) -> list[Path]:
    d = PKG / layer
    if d.is_dir():
        return sorted(d.rglob("*.py"))
    module = PKG / f"{layer}.py"  # a layer of one module (client.py)
    return [module] if module.is_file() else []


def test_core_imports_only_pure_stdlib() -> None:
    files = _layer_files("core")
    assert files, "liferaft/core is missing"
    bad = []
    for f in files:
        for mod, line in _imports(f):
            if mod.startswith("liferaft."):
                continue
            if mod not in CORE_STDLIB:
                bad.append(f"{f.name}:{line} imports {mod}")
    assert not bad, "the core must do no I/O and read no clock:\n" + "\n".join(bad)


def test_core_uses_no_global_random() -> None:
    """Only ``random.Random`` (an injected, seeded generator) may be named."""
    bad = []
    for f in _layer_files("core"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "random"
                and node.attr != "Random"
            ):
                bad.append(f"{f.name}:{node.lineno} uses random.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module == "random":
                names = {a.name for a in node.names}
                if names - {"Random"}:
                    bad.append(f"{f.name}:{node.lineno} imports {names} from random")
    assert not bad, "\n".join(bad)


def test_every_package_has_a_layer() -> None:
    """A new top-level package or module must be placed in ALLOWED, so the
    check below covers it (issue 13: chaos, verify and client.py were not)."""
    tops = {p.stem for p in PKG.iterdir() if p.name != "__init__.py" and not p.name.startswith("_")
            and (p.is_dir() and (p / "__init__.py").exists() or p.suffix == ".py")}
    assert tops - set(ALLOWED) == set(), f"no layer for {sorted(tops - set(ALLOWED))}"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_downward_only(layer: str) -> None:
    bad = []
    for f in _layer_files(layer):
        for mod, line in _imports(f):
            parts = mod.split(".")
            if parts[0] != "liferaft" or len(parts) < 2:
                continue
            target = parts[1]
            if target in ALLOWED and target not in ALLOWED[layer]:
                bad.append(f"{f.relative_to(PKG)}:{line} imports liferaft.{target}")
    assert not bad, f"{layer} may import only {sorted(ALLOWED[layer])}:\n" + "\n".join(bad)


def test_the_checks_see_a_forbidden_import(tmp_path: Path) -> None:
    """The import reader itself works: it finds what a file imports."""
    f = PKG / "core" / "raft.py"
    mods = {m for m, _ in _imports(f)}
    assert "liferaft.core.log" in mods and "random" in mods
