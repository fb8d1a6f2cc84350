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
    # etcd's v3 API (issue 16): a second front door to the kv server.
    "etcd": {"etcd", "kv", "runtime", "storage", "transport", "codec", "core"},
    "harness": {"harness", "kv", "runtime", "storage", "transport", "codec", "core"},
    # The web console (issue 17): a front end of the kv server, like etcd.
    # Its replay viewer (console/replay.py) reads the simulator's traces.
    "console": {"console", "kv", "runtime", "storage", "transport", "codec", "core", "sim"},
    # The fault harness drives real processes from outside, as an operator
    # and a stranger would: it may use everything below the CLI.
    # With --api etcd its clients speak etcd's gRPC API through etcd's stubs.
    "chaos": {
        "chaos", "harness", "verify", "client", "etcd", "kv", "runtime", "storage", "transport",
        "codec", "core",
    },
    "cli": {
        "cli", "console", "etcd", "harness", "client", "kv", "runtime", "storage", "transport",
        "codec", "core", "sim",
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


# The core's role modules call into each other by design (raft.py steps the
# role functions, which take the Raft object); every other module of a
# package must sit in an order without circles (issue 13, "Done when").
CYCLES_ALLOWED = {
    frozenset({"liferaft.core.raft", "liferaft.core.leader", "liferaft.core.follower",
               "liferaft.core.candidate"}),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of its own package it imports, type-only imports
    included (a circle through ``if TYPE_CHECKING`` is still two modules
    that each need the other).  Package ``__init__`` modules are left out."""
    files = {_module_name(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        if path.name == "__init__.py":
            continue
        package = name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for mod, _ in _imports(path):
            targets.add(mod)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # `from . import peer_rpc` names a module
            if isinstance(node, ast.ImportFrom):
                pkg_parts = path.relative_to(PKG.parent).with_suffix("").parts[:-1]
                base = (
                    ".".join(list(pkg_parts[: len(pkg_parts) - node.level + 1])
                             + ([node.module] if node.module else []))
                    if node.level else node.module or ""
                )
                targets.update(f"{base}.{a.name}" for a in node.names)
        graph[name] = {
            t for t in targets
            if t in files and t != name and files[t].name != "__init__.py"
            and t.rsplit(".", 1)[0] == package
        }
    return graph


def _circles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles_inside_a_package() -> None:
    circles = [c for c in _circles(_module_graph(PKG)) if c not in CYCLES_ALLOWED]
    assert not circles, "import circles:\n" + "\n".join(str(sorted(c)) for c in circles)


def test_the_circle_finder_finds_a_circle(tmp_path: Path) -> None:
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert _circles(graph) == [frozenset({"p.a", "p.b", "p.c"})]
    assert _circles({"p.a": {"p.b"}, "p.b": set()}) == []
