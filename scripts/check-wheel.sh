#!/usr/bin/env bash
# The packaging check (issue 14, "Packaging"): what a user gets from PyPI.
#
#   1. `python -m build` makes an sdist and a wheel, both named for
#      liferaft.__version__ (the one source of the version);
#   2. the wheel alone (`pip install liferaft`, no extras) goes into a fresh
#      venv; from outside the source tree it imports the library and runs
#      examples/counter.py (3 nodes over TCP), and the `liferaft` command
#      prints the one-line `pip install 'liferaft[kv]'` hint, exit 1;
#   3. `liferaft[kv]` then makes the command work (`liferaft --help`).
#
# It needs the package registry (build's isolated env fetches hatchling;
# pip fetches msgspec and the kv extra), so .ci/run runs it after
# `make test`, never inside it.  PYTHON picks the interpreter that builds
# (default: .venv/bin/python, which has `build` from the dev extra).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
step() { printf '== %s (%ss)\n' "$1" "$SECONDS"; }
fail() { echo "check-wheel: FAIL: $*" >&2; exit 1; }

version="$(cd "$ROOT" && "$PY" -c 'import liferaft; print(liferaft.__version__)')"
step "build sdist and wheel of liferaft $version"
"$PY" -m build --outdir "$TMP/dist" "$ROOT" >"$TMP/build.log" 2>&1 \
  || { tail -30 "$TMP/build.log"; fail "python -m build failed"; }
wheel="$TMP/dist/liferaft-$version-py3-none-any.whl"
sdist="$TMP/dist/liferaft-$version.tar.gz"
[[ -f "$wheel" ]] || fail "no $(basename "$wheel"): $(ls "$TMP/dist")"
[[ -f "$sdist" ]] || fail "no $(basename "$sdist"): $(ls "$TMP/dist")"
"$PY" - "$wheel" "$sdist" <<'EOF' || fail "wheel or sdist contents"
import sys, tarfile, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["liferaft/__init__.py", "liferaft/runtime/node.py", "liferaft/_console.py",
        "liferaft/console/static/index.html", "liferaft/console/static/replay.js"]
missing = [n for n in need if n not in names]
missing += [] if any(n.endswith("licenses/LICENSE") for n in names) else ["LICENSE"]
if any(n.startswith(("tests/", "examples/")) for n in names):
    missing.append("(tests or examples inside the wheel)")
members = tarfile.open(sys.argv[2]).getnames()
for want in ("LICENSE", "examples/counter.py", "tests/test_packaging.py"):
    if not any(m.endswith("/" + want) for m in members):
        missing.append(f"sdist: {want}")
if missing:
    sys.exit(f"missing: {missing}")
EOF

step "fresh venv, pip install the wheel (no extras)"
"$PY" -m venv "$TMP/venv"
VPY="$TMP/venv/bin/python"
"$VPY" -m pip install -q --disable-pip-version-check "$wheel" \
  || fail "pip install $(basename "$wheel")"
cd "$TMP"  # so nothing is imported from the source tree
got="$("$VPY" -c 'import importlib.metadata as m, liferaft; print(m.version("liferaft"), liferaft.__file__)')"
[[ "$got" == "$version $TMP/venv/"* ]] || fail "installed liferaft is not the wheel: $got"
if "$VPY" -c 'import click' 2>/dev/null; then fail "click installed without the kv extra"; fi

step "run examples/counter.py from the wheel"
port="$("$PY" -c 'from liferaft.harness import free_base_port; print(free_base_port(3))')"
out="$(timeout 60 "$VPY" "$ROOT/examples/counter.py" "$port")" || fail "counter.py exited $?"
[[ "$(echo $out)" == "5 7" ]] || fail "counter.py printed: $out"

step "the liferaft command without the kv extra"
set +e
hint="$("$TMP/venv/bin/liferaft" status 2>&1)"
rc=$?
set -e
[[ $rc -eq 1 ]] || fail "liferaft without kv exited $rc: $hint"
[[ "$hint" == *"pip install 'liferaft[kv]'"* && "$hint" != *Traceback* ]] \
  || fail "no one-line hint: $hint"

step "pip install 'liferaft[kv]', then the command works"
"$VPY" -m pip install -q --disable-pip-version-check "$wheel[kv]" || fail "pip install [kv]"
"$TMP/venv/bin/liferaft" --help >/dev/null || fail "liferaft --help with the kv extra"

step "ok: $(basename "$wheel") and $(basename "$sdist")"
