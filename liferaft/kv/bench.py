"""``liferaft bench kv``: an HTTP load generator for liferaft-kv (and, through
an adapter, for etcd v3.4's JSON gateway).

Theory of operation
-------------------

A *step* is one kind of operation at one concurrency for a fixed time.  It
opens ``connections`` keep-alive HTTP connections (one aiohttp session, one
worker task per connection, each a loop of sequential requests: closed-loop
load, so the rate is what the server sustains at that concurrency), runs a
short warm-up that is not counted (connections are opened, caches warmed),
then counts every request that *completes* inside the measured window.
Throughput is those completions over the window; p50/p99 are their
latencies (nearest rank).  Any answer other than success is an error,
counted by kind (``http 503``, ``ClientOSError``, ...), and is neither in the
rate nor in the latencies.

The operations:

* ``write``: a put of a ``value_size``-byte value to key ``bench/<n>``
  (``n`` cycles over ``keys`` keys), sent to the leader, found before the
  run (liferaft: ``GET /v1/status`` -> ``leader_client_addr``; etcd:
  ``POST /v3/maintenance/status`` -> the member whose id is ``leader``).
* ``linearizable``: a read of an existing key (liferaft: ReadIndex;
  etcd: a default, linearizable range).
* ``stale``: a read served from the local state (liferaft:
  ``consistency=stale``; etcd: ``"serializable": true``).

Reads go to every endpoint in turn (worker *i* to endpoint *i mod n*, the
leader first: one connection reads at the leader, 16 spread 6/5/5), or only
to the leader with ``--reads-at leader``; the output says which.  Before
the first step every key is written once, so reads always find a value.

The generator is a single Python process.  Each step reports the CPU the
generator itself used (process time over wall time): near 100% means the
client, not the server, may be the limit of that step.

Adapters
--------

An :class:`Adapter` turns an operation into an HTTP request and judges the
answer; the loop above is the same for every system.  :class:`LiferaftAdapter`
speaks liferaft-kv's HTTP API (docs/kv.md); :class:`EtcdAdapter` speaks etcd's grpc-gateway JSON
(``POST /v3/kv/put`` and ``/v3/kv/range`` with base64 keys and values; etcd
3.4 serves it under ``/v3/`` and, deprecated, ``/v3beta/``; 3.3 only under
``/v3beta/``; ``--etcd-prefix auto`` probes for it).

Modules
-------

This module is the command line; it re-exports the parts, each in a module
of its own: the systems (:mod:`.bench_adapters`), the load loop
(:mod:`.bench_load`) and the results and their printing
(:mod:`.bench_report`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from .bench_adapters import (
    Adapter,
    BenchError,
    EtcdAdapter,
    LiferaftAdapter,
    Request,
    bench_key,
    bench_value,
    make_adapter,
    parse_endpoints,
)
from .bench_load import (
    MAX_SECONDS,
    OPS,
    READS_AT,
    Config,
    StepHook,
    percentile,
    preload,
    run_bench,
)
from .bench_report import Result, StepResult, format_step, format_table, reads_description

__all__ = [
    "MAX_SECONDS",
    "OPS",
    "READS_AT",
    "Adapter",
    "BenchError",
    "Config",
    "EtcdAdapter",
    "LiferaftAdapter",
    "Request",
    "Result",
    "StepHook",
    "StepResult",
    "bench_key",
    "bench_value",
    "format_step",
    "format_table",
    "main",
    "make_adapter",
    "parse_endpoints",
    "percentile",
    "preload",
    "reads_description",
    "run_bench",
]


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of integers: {s!r}") from exc


def _words(s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="liferaft bench kv",
        description="HTTP load generator: writes/s, linearizable and stale reads/s at several "
        "concurrencies, with p50/p99 latency (liferaft-kv, or etcd v3 through its JSON gateway).",
    )
    p.add_argument("--endpoints", required=True, help="comma-separated HOST:PORT (or URLs)")
    p.add_argument("--system", choices=("liferaft", "etcd"), default="liferaft")
    p.add_argument(
        "--connections", type=_ints, default=(1, 16, 64), help="concurrencies (default 1,16,64)"
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measured time per step (default 5)")
    p.add_argument(
        "--warmup", type=float, default=0.5, help="uncounted time before each step (default 0.5)"
    )
    p.add_argument(
        "--ops", type=_words, default=OPS, help=f"subset of {','.join(OPS)} (run in this order)"
    )
    p.add_argument(
        "--reads-at",
        choices=READS_AT,
        default="all",
        help="spread reads over all endpoints (default) or send them to the leader",
    )
    p.add_argument("--value-size", type=int, default=100, help="bytes per value (default 100)")
    p.add_argument("--keys", type=int, default=1000, help="distinct keys (default 1000)")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    p.add_argument("--token-file", help="liferaft: file holding the bearer token")
    p.add_argument(
        "--etcd-prefix", default="auto", help="etcd gateway prefix: auto (probe), /v3, /v3beta"
    )
    p.add_argument("--json", help="write the result to this file")
    a = p.parse_args(argv)
    cfg = Config(
        connections=a.connections,
        seconds=a.seconds,
        warmup=a.warmup,
        ops=a.ops,
        reads_at=a.reads_at,
        keys=a.keys,
        request_timeout=a.timeout,
    )
    try:
        cfg.check()
        if not 1 <= a.value_size <= 1 << 20:
            raise ValueError("value size must be 1..1048576")
        token = Path(a.token_file).read_text().strip() if a.token_file else None
        adapter = make_adapter(
            a.system, parse_endpoints(a.endpoints), a.value_size, token, a.etcd_prefix
        )
    except (ValueError, OSError) as exc:
        p.error(str(exc))
    try:
        res = asyncio.run(run_bench(adapter, cfg))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print()
    print(format_table(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res.to_json(), f, indent=1)
        print(f"\nwrote {a.json}")
    # Errors are in the table; only a step with no success at all fails the run.
    return 1 if any(s.ok == 0 for s in res.steps) else 0


if __name__ == "__main__":
    sys.exit(main())
