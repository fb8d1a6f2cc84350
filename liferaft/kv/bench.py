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

This module re-exports the parts, each in a module of its own: the systems
(:mod:`.bench_adapters`), the load loop (:mod:`.bench_load`) and the results
and their printing (:mod:`.bench_report`).  The command line, a click
command like every other ``liferaft`` command, is :mod:`liferaft.cli.bench`
(``liferaft bench kv --help``).
"""

from __future__ import annotations

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
    "make_adapter",
    "parse_endpoints",
    "percentile",
    "preload",
    "reads_description",
    "run_bench",
]
