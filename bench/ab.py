"""Two builds side by side: old, new, old, new... in one invocation.

A refactor must not cost speed (issue 13), and a speed-up must show against
the build before it (issue 18), on the same machine in the same hour.  This
runs one bench script of each build in turn, interleaved (A B A B ...), each
with the build's own ``liferaft`` on ``PYTHONPATH``, and prints the median of
every headline figure per build and their ratio.

    python bench/ab.py --old /tmp/old-tree --rounds 3 raft
    python bench/ab.py --old /tmp/old-tree --rounds 3 kv

``--old`` is a checkout of the older build (``git worktree add --detach DIR
REV``); ``--new`` defaults to this checkout.  ``raft`` runs
``bench/raft_bench.py`` for liferaft's two configurations (PySyncObj is
left out: it is the same in both builds); ``kv`` runs ``bench/kv_bench.py``
without etcd.  Both pin nodes to CPUs (``--pin``).  Raw outputs go to
``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

BENCHES = {
    "raft": [
        "bench/raft_bench.py",
        "--systems",
        "liferaft-sync,liferaft-mem",
        "--rounds",
        "1",
        "--kills",
        "1",
        "--pin",
    ],
    "kv": ["bench/kv_bench.py", "--no-etcd", "--rounds", "1", "--pin"],
}


def run_one(tree: Path, bench: str, out: Path, extra: list[str]) -> dict[str, Any]:
    """One run of ``bench`` from ``tree``; its ``--json`` payload."""
    script, *args = BENCHES[bench]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(tree / script), *args, *extra, "--json", str(out)]
    log = out.with_suffix(".log")
    with open(log, "w") as f:
        rc = subprocess.run(cmd, cwd=tree, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0 or not out.exists():
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}); see {log}")
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def check_tree(name: str, tree: Path, bench: str) -> None:
    """Refuse, before the first round, a checkout that cannot run ``bench``
    (a typo in the path, a build from before the script existed): else the
    mistake shows only after a whole run of the other build, as an exit
    status and a log to read."""
    script = BENCHES[bench][0]
    for need in ("liferaft", script):
        if not (tree / need).exists():
            raise SystemExit(
                f"--{name} {tree}: no {need} there; it must be a checkout of liferaft "
                f"that has {script} (git worktree add --detach DIR REV)"
            )


def errors(bench: str, data: dict[str, Any]) -> list[str]:
    """The failures a run recorded (figures() leaves those systems out)."""
    if bench == "raft":
        return [f"{r['system']}: {r['error']}" for r in data["results"] if r.get("error")]
    return [f"{rr.get('system')}: {rr['error']}" for rr in data["runs"] if rr.get("error")]


def figures(bench: str, data: dict[str, Any]) -> dict[str, float]:
    """The headline figures of one run, by name (what each means:
    docs/bench.md)."""
    out: dict[str, float] = {}
    if bench == "raft":
        for r in data["results"]:
            if r.get("error"):
                continue
            name = r["system"]
            out[f"{name}: max sustained writes/s"] = float(r["max_rate"])
            for key, label in (("lat100", "at 100/s"), ("lathalf", "at half of max")):
                lat = r.get(key) or {}
                if lat.get("p50"):
                    out[f"{name}: p50 ms {label}"] = float(lat["p50"])
            fails = [f["failover"] for f in r.get("failovers", []) if f.get("failover")]
            if fails:
                out[f"{name}: failover s"] = statistics.median(fails)
    else:
        for rr in data["runs"]:
            res = rr.get("result") or {}
            if rr.get("system") != "liferaft-kv" or not res:
                continue
            for st in res.get("steps", []):
                key = f"{st['op']} x{st['connections']}"
                out[f"{key}: ops/s"] = float(st["rate"])
                if st.get("p50_ms") is not None:
                    out[f"{key}: p50 ms"] = float(st["p50_ms"])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("bench", choices=sorted(BENCHES))
    p.add_argument("--old", required=True, type=Path, help="checkout of the older build")
    p.add_argument("--new", type=Path, default=HERE.parent, help="checkout of the newer build")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("/tmp/liferaft-ab"))
    a, extra = p.parse_known_args()
    if a.rounds < 1:
        p.error(f"--rounds {a.rounds}: at least one round")
    for name in ("old", "new"):
        check_tree(name, getattr(a, name).resolve(), a.bench)
    a.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    failed: list[str] = []
    t0 = time.monotonic()
    for r in range(1, a.rounds + 1):
        for name, tree in (("old", a.old), ("new", a.new)):
            data = run_one(tree.resolve(), a.bench, a.out / f"{a.bench}-{name}-{r}.json", extra)
            runs[name].append(figures(a.bench, data))
            failed += [f"round {r} {name}: {e}" for e in errors(a.bench, data)]
            print(f"round {r} {name}: done ({time.monotonic() - t0:.0f} s)", flush=True)
    keys = [k for k in runs["new"][0] if all(k in f for f in runs["old"] + runs["new"])]
    if not keys:  # an empty table with exit 0 would read as "no difference"
        raise SystemExit(
            f"no figure common to every run of both builds; failures: {'; '.join(failed) or '-'}"
        )
    if failed:  # figures from the runs that worked, but say what is missing
        print("failed (left out): " + "; ".join(failed), file=sys.stderr)
    print(f"\n{a.bench}: medians of {a.rounds} interleaved rounds (old = {a.old}, new = {a.new})")
    print("| figure | old | new | new/old |\n|---|---:|---:|---:|")
    for k in keys:
        old = statistics.median(f[k] for f in runs["old"])
        new = statistics.median(f[k] for f in runs["new"])
        ratio = new / old if old else float("nan")
        print(f"| {k} | {old:,.2f} | {new:,.2f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
