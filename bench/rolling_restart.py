"""The no-leader gap of a rolling restart of the leader (docs/deploy.md,
"Stopping a node"): 3 ``liferaft serve`` processes on 127.0.0.1.

    .venv/bin/python bench/rolling_restart.py                  # this checkout, 10 restarts
    .venv/bin/python bench/rolling_restart.py --tree OTHER     # another checkout's serve

Each round finds the leader, sends it SIGTERM (as systemd or Kubernetes
stop a unit or a pod) and polls the two others' ``/v1/status`` every 5 ms
until one of them is leader: the gap is the time from the signal to that
answer.  Then the stopped node is started again on its data and the
cluster is left to settle (every node ready) before the next round.  With
``--tree`` the nodes run that checkout's code (PYTHONPATH), so the same
script measures a build before and after a change; the harness (this
checkout's) starts them with ``--peer-addr``/``--client-addr``, which every
build understands.  Default timing (1 s election timeout, 100 ms
heartbeat), as an operator runs it.

Every process is stopped by PID on the way out (the harness does it);
data and logs live in a temp dir, removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from liferaft.harness.serve import ServeCluster  # noqa: E402


def status(addr: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://{addr}/v1/status", timeout=0.5) as r:
            body = json.loads(r.read())
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def leader(c: ServeCluster, among: list[str], timeout: float) -> str:
    """The node among ``among`` that says it leads (polled every 5 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for nid in among:
            st = status(c.nodes[nid].client)
            if st is not None and st.get("role") == "leader":
                return nid
        time.sleep(0.005)
    raise RuntimeError(f"no leader among {among} within {timeout} s")


def one_round(c: ServeCluster) -> float:
    """SIGTERM the leader; seconds until another node leads."""
    nodes = list(c.nodes)
    old = leader(c, nodes, 30)
    child = c.nodes[old].child
    assert child is not None
    c.nodes[old].expected_exit = True
    t0 = time.monotonic()
    os.kill(child.pid, signal.SIGTERM)
    leader(c, [n for n in nodes if n != old], 30)
    gap = time.monotonic() - t0
    c.stop(old, grace=10.0)  # reaps it (already exiting)
    c.start(old)
    c.wait_ready(timeout=60)
    time.sleep(0.5)  # the restarted node catches up and the leader settles
    return gap


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--tree", type=Path, help="run this checkout's liferaft serve")
    ap.add_argument("--keep", action="store_true", help="keep data and logs")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    tree = (args.tree or Path(__file__).resolve().parent.parent).resolve()
    if not (tree / "liferaft" / "kv" / "serve.py").is_file():
        ap.error(f"--tree {tree}: not a liferaft checkout")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    root = Path(tempfile.mkdtemp(prefix="liferaft-rolling-"))
    gaps: list[float] = []
    try:
        with ServeCluster(root, env=env, cwd=tree) as c:
            c.add_nodes(3)
            c.start_all()
            c.wait_ready(timeout=60)
            for i in range(args.rounds):
                gaps.append(one_round(c))
                print(f"round {i + 1}: {gaps[-1] * 1000:.0f} ms without a leader", flush=True)
    finally:
        if args.keep:
            print(f"data and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    ms = sorted(g * 1000 for g in gaps)
    print(
        f"{tree}: {len(ms)} restarts of the leader: median {statistics.median(ms):.0f} ms, "
        f"min {ms[0]:.0f} ms, max {ms[-1]:.0f} ms without a leader"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
