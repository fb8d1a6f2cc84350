"""``python -m liferaft.chaos soak|crashloop ...``: fault injection against
real liferaft-kv processes.  See docs/chaos.md."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from liferaft.etcd.planted import BUGS

from .crashloop import crashloop
from .hostile import HOSTILE
from .nemesis import FAULTS
from .soak import APIS, soak


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liferaft.chaos")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("soak", help="workloads + nemesis, then the linearizability verdict")
    s.add_argument("--time", type=float, default=300.0, help="seconds of faults (bounded)")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--nodes", type=int, default=5)
    s.add_argument("--faults", default=",".join(FAULTS), help=f"subset of {','.join(FAULTS)}")
    s.add_argument(
        "--hostile",
        default="all",
        help=f"stranger and operator faults: all, none, or a subset of {','.join(HOSTILE)}",
    )
    s.add_argument("--clients", type=int, default=6)
    s.add_argument("--out", type=Path, default=None, help="where history.json goes")
    s.add_argument(
        "--read-consistency",
        choices=["linearizable", "lease", "stale"],
        default="linearizable",
        help="stale: read stale on purpose, to see the checker say NO",
    )
    s.add_argument(
        "--api",
        choices=APIS,
        default="http",
        help="what the clients speak: liferaft's /v1 API, or etcd's v3 gRPC API",
    )
    s.add_argument(
        "--bug",
        choices=sorted(BUGS),
        default=None,
        help="TEST ONLY: plant a known bug in every node's etcd front end (--api etcd), "
        "to see the verdict catch it",
    )
    c = sub.add_parser("crashloop", help="kill -9 under acknowledged writes, N times")
    c.add_argument("--rounds", type=int, default=100)
    c.add_argument("--seed", type=int, default=None)
    c.add_argument("--nodes", type=int, default=3)
    c.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else int(time.time()) % 100_000
    out = a.out or Path(tempfile.mkdtemp(prefix=f"liferaft-{a.cmd}-"))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if a.cmd == "soak":
        faults = [f for f in a.faults.split(",") if f]
        hostile = {"all": list(HOSTILE), "none": []}.get(
            a.hostile, [h for h in a.hostile.split(",") if h]
        )
        bad = sorted(set(hostile) - set(HOSTILE))
        if bad:
            p.error(f"unknown --hostile {','.join(bad)}; choose from {','.join(HOSTILE)}")
        if a.api == "etcd" and a.read_consistency == "lease":
            p.error("--api etcd reads linearizable or stale (serializable), not lease")
        if a.bug and a.api != "etcd":
            p.error("--bug plants a bug of the etcd front end: give --api etcd")
        if not 0 < a.time <= 24 * 3600 or not 1 <= a.nodes <= 9:
            p.error("--time must be in (0, 86400] and --nodes in 1..9")
        res = asyncio.run(
            soak(
                a.time,
                seed,
                a.nodes,
                faults,
                out,
                clients=a.clients,
                log=log,
                read_consistency=a.read_consistency,
                hostile=hostile,
                api=a.api,
                bug=a.bug,
            )
        )
        if res.explanation:
            print(res.explanation)
        for k, v in res.unexpected.items():
            print(f"unexpected: {k} (x{v})")
        for why in res.skipped:
            print(f"skipped: {why}")
        for what, n in sorted(res.hostile_outcomes.items()):
            print(f"hostile: {what} (x{n})")
        for d in res.stranger_details:
            print(f"STRANGER CHANGED {d}")
        for e in res.exits:
            print(f"NODE EXIT: {e}")
        if res.coord is not None:
            for m in res.coord.messages():
                print(f"COORDINATION: {m}")
            print(f"{res.coord_summary}; {res.coord.rev.line()} {res.coord.watch.line()} "
                  f"{res.coord.lease.line()}")
        for g in res.rss_grew:
            print(f"RSS GREW: {g}")
        if res.rss:
            print(
                "rss (MiB, baseline -> end): "
                + ", ".join(f"{n} {b >> 20}->{e >> 20}" for n, (b, e) in res.rss.items())
            )
        print(
            f"faults: {res.faults}; set adds acknowledged {res.set_acked}, "
            f"invented {res.invented}; history: {res.out}/history.json"
        )
        print(res.line())
        return 0 if res.passed else 1
    if not 1 <= a.rounds <= 10_000:
        p.error("--rounds must be in 1..10000")
    cres = asyncio.run(crashloop(a.rounds, seed, out, a.nodes, log=log))
    for pr in cres.problems:
        print(f"problem: {pr}")
    print(cres.line())
    return 0 if cres.lost == 0 and not cres.problems else 1


if __name__ == "__main__":
    sys.exit(main())
