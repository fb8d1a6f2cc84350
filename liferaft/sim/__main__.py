"""Command line: ``python -m liferaft.sim --seeds N [--seed-start S] [--nodes 5] [--steps K]``.

``--profile P`` forces one nemesis profile, ``--bug B`` plants a known bug,
``--disk real`` runs DiskStorage on files instead of its in-memory model.
``--seed S --trace run.json`` writes the run's events for the replay viewer.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .runner import DISKS, PROFILES, SeedResult, run_seed
from .trace import DEFAULT_LIMIT_MB, MB, TraceRecorder


def _run(
    args: tuple[int, int, int, str | None, str | None, str], trace: TraceRecorder | None = None
) -> SeedResult:
    seed, nodes, steps, bug, profile, disk = args
    if bug is None:
        return run_seed(seed, nodes=nodes, steps=steps, profile=profile, disk=disk, trace=trace)
    from .bugs import planted

    with planted(bug) as configure:
        return run_seed(
            seed, nodes=nodes, steps=steps, profile=profile, configure=configure, disk=disk,
            trace=trace,
        )


def _replay_command(seed: int, a: argparse.Namespace) -> str:
    cmd = f"python -m liferaft.sim --seed {seed} --nodes {a.nodes} --steps {a.steps}"
    if a.bug:
        cmd += f" --bug {a.bug}"
    if a.profile:
        cmd += f" --profile {a.profile}"
    if a.disk != "memory":
        cmd += f" --disk {a.disk}"
    return cmd


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liferaft.sim", description=__doc__)
    p.add_argument("--seeds", type=int, default=100, help="number of seeds to run")
    p.add_argument("--seed-start", type=int, default=0, help="first seed")
    p.add_argument("--seed", type=int, help="run exactly this one seed (verbose)")
    p.add_argument("--nodes", type=int, default=5, help="initial voters (default 5)")
    p.add_argument("--steps", type=int, default=6000, help="events per seed")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--verbose", "-v", action="store_true", help="one line per seed")
    p.add_argument("--bench", action="store_true", help="fault-free throughput benchmark")
    p.add_argument("--bug", help="plant a known bug (see liferaft.sim.bugs) to see it caught")
    p.add_argument("--profile", choices=sorted(PROFILES), help="force one nemesis profile")
    p.add_argument(
        "--disk",
        choices=DISKS,
        default="memory",
        help="memory: a model of DiskStorage (fast); real: DiskStorage on files under FaultFS",
    )
    p.add_argument(
        "--trace",
        metavar="FILE",
        help="with --seed: write the run's events as JSON for the replay viewer "
        "(liferaft sim view FILE)",
    )
    p.add_argument(
        "--trace-limit",
        type=float,
        default=DEFAULT_LIMIT_MB,
        metavar="MB",
        help=f"stop recording past this size (default {DEFAULT_LIMIT_MB} MB); "
        "the verdict is still recorded",
    )
    a = p.parse_args(argv)
    if a.trace is not None and (a.seed is None or a.bench):
        p.error("--trace records one run: give it one seed with --seed N")
    if a.trace is not None:
        # Written after the run: a directory that is not there must not
        # cost the whole run and end in a traceback.
        where = Path(a.trace).resolve().parent
        if not where.is_dir() or not os.access(where, os.W_OK):
            p.error(f"cannot write the trace to {a.trace}: {where} is not a writable directory")
    if not a.trace_limit >= 1:
        p.error(f"--trace-limit must be at least 1 (MB), not {a.trace_limit:g}")
    if a.bench:
        from .bench import main as bench_main

        return bench_main()
    if a.nodes < 1 or a.seeds < 0 or a.steps < 1:
        p.error("--nodes, --steps must be >= 1 and --seeds >= 0")
    if a.seed is not None:
        seeds = [a.seed]
        a.verbose = True
    else:
        seeds = list(range(a.seed_start, a.seed_start + a.seeds))
    work = [(s, a.nodes, a.steps, a.bug, a.profile, a.disk) for s in seeds]
    t0 = time.perf_counter()
    trace: TraceRecorder | None = None
    if a.trace is not None:
        trace = TraceRecorder(
            int(a.trace_limit * MB), seed=a.seed, nodes=a.nodes, steps=a.steps, bug=a.bug,
            profile=a.profile, command=_replay_command(a.seed, a),
        )
        results = [_run(work[0], trace)]
    elif a.jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(a.jobs) as ex:
            results = list(ex.map(_run, work, chunksize=4))
    else:
        results = [_run(w) for w in work]
    steps = commits = violations = liveness = 0
    for r in results:
        steps += r.steps
        commits += r.commits
        if a.verbose:
            faults = ",".join(f"{k}={v}" for k, v in sorted(r.faults.items()))
            print(
                f"seed={r.seed} profile={r.profile} steps={r.steps} commits={r.commits} "
                f"acked={r.acked} recovery={r.recovery_time} faults[{faults}]"
            )
        replay = _replay_command(r.seed, a)
        if r.violation:
            violations += 1
            print(f"VIOLATION seed={r.seed}: {r.violation}\n  replay: {replay}")
        if r.liveness_failure:
            liveness += 1
            print(f"LIVENESS seed={r.seed}: {r.liveness_failure}\n  replay: {replay}")
    dt = time.perf_counter() - t0
    print(f"elapsed={dt:.1f}s", file=sys.stderr)
    if trace is not None:
        try:
            size = trace.write(a.trace)
        except OSError as e:
            print(f"cannot write the trace to {a.trace}: {e.strerror or e}", file=sys.stderr)
            return 2
        cut = f", truncated at --trace-limit {a.trace_limit:g} MB" if trace.truncated else ""
        print(f"trace: {a.trace} ({len(trace.events)} events, {size / MB:.1f} MB{cut})")
    print(
        f"seeds={len(results)} steps={steps} commits={commits} "
        f"violations={violations} liveness_failures={liveness}"
    )
    return 0 if violations == 0 and liveness == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
