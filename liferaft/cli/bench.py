"""``liferaft bench wal`` and ``liferaft bench kv``: the benchmarks' command
lines (docs/bench.md).  The load generator itself, and its theory of
operation, is :mod:`liferaft.kv.bench`; this module only parses flags,
runs it and prints the result in the format of ``-w`` (:mod:`.output`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import click

from liferaft.kv.bench import (
    OPS,
    READS_AT,
    BenchError,
    Config,
    Result,
    format_table,
    make_adapter,
    parse_endpoints,
    run_bench,
)
from liferaft.kv.serve import ServeError, load_token

from .exit_codes import CommandFailedError, ExitCode
from .output import Output, emit, write_out_options

STEP_COLUMNS = ("op", "conns", "ops/s", "p50 ms", "p99 ms", "errors", "client CPU")


@click.group()
def bench() -> None:
    """Benchmarks (figures go to BENCHMARKS.md)."""


WAL_COLUMNS = ("batch", "entries/s", "syncs/s", "pipelined entries/s", "pipelined syncs/s",
               "no-sync entries/s", "raw syncs/s")  # fmt: skip


@bench.command("wal")
@click.option("--dir", "directory", default=None, help="Directory on the file system to test.")
@click.option("--entries", default=1_000_000, show_default=True, help="Log size for reopen.")
@click.option("--seconds", default=2.0, show_default=True, help="Duration of each measurement.")
@write_out_options()
def bench_wal(directory: str | None, entries: int, seconds: float, fmt: str) -> None:
    """WAL throughput with and without sync, next to the raw fdatasync rate.

    -w simple prints a line per batch size (batch, entries/s, syncs/s,
    pipelined entries/s and syncs/s, entries/s without sync, raw syncs/s)."""
    from liferaft.storage.bench import run as wal_bench

    res = wal_bench(directory, entries, seconds)
    rows = [
        [str(b.batch), f"{b.serial:.0f}", f"{b.serial_syncs:.0f}", f"{b.pipelined:.0f}",
         f"{b.pipelined_syncs:.0f}", f"{b.no_sync:.0f}", f"{res.raw_syncs:.0f}"]
        for b in res.batches
    ]  # fmt: skip
    emit(Output(dataclasses.asdict(res), rows, WAL_COLUMNS, line="\n".join(res.lines())), fmt)


def _ints(_ctx: click.Context, _param: click.Parameter, s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError as exc:
        raise click.BadParameter(f"not a list of integers: {s!r}") from exc


def _words(_ctx: click.Context, _param: click.Parameter, s: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in s.split(",") if x.strip())


def _output(res: Result) -> Output:
    """The run's result: the markdown table (table), one row per step."""
    rows = [
        [s.op, str(s.connections), f"{s.rate:.0f}",
         "-" if s.p50_ms is None else f"{s.p50_ms:.2f}",
         "-" if s.p99_ms is None else f"{s.p99_ms:.2f}",
         str(s.error_count), f"{s.client_cpu * 100:.0f}%"]
        for s in res.steps
    ]  # fmt: skip
    return Output(res.to_json(), rows, STEP_COLUMNS, line="\n" + format_table(res))


@bench.command("kv")
@click.option(
    "--endpoints", required=True, help="Comma-separated HOST:PORT (or http(s):// URLs)."
)
@click.option(
    "--system", type=click.Choice(["liferaft", "etcd"]), default="liferaft", show_default=True,
    help="What serves the endpoints: liferaft-kv, or etcd v3 through its JSON gateway.",
)
@click.option(
    "--connections", default="1,16,64", show_default=True, callback=_ints,
    help="Concurrencies, comma-separated: one step per op at each.",
)
@click.option("--seconds", default=5.0, show_default=True, help="Measured time per step.")
@click.option("--warmup", default=0.5, show_default=True, help="Uncounted time before each step.")
@click.option(
    "--ops", default=",".join(OPS), show_default=True, callback=_words,
    help="Which operations, comma-separated, run in this order.",
)
@click.option(
    "--reads-at", type=click.Choice(READS_AT), default="all", show_default=True,
    help="Spread reads over all endpoints, or send them to the leader.",
)
@click.option("--value-size", default=100, show_default=True, help="Bytes per value.")
@click.option("--keys", default=1000, show_default=True, help="Distinct keys.")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds per request.")
@click.option(
    "--token-file", type=click.Path(dir_okay=False, path_type=Path),
    help="liferaft: the file holding the bearer token.",
)
@click.option(
    "--etcd-prefix", default="auto", show_default=True,
    help="etcd's gateway prefix: auto (probe), /v3 or /v3beta.",
)
@click.option(
    "--json", "json_file", type=click.Path(dir_okay=False),
    help="Also write the result (every figure) to this file as JSON.  (Here --json takes "
    "a file; -w json prints the same document.)",
)
@write_out_options(alias=False)
def bench_kv(
    endpoints: str, system: str, connections: tuple[int, ...], seconds: float, warmup: float,
    ops: tuple[str, ...], reads_at: str, value_size: int, keys: int, timeout: float,
    token_file: Path | None, etcd_prefix: str, json_file: str | None, fmt: str,
) -> None:  # fmt: skip
    """HTTP load generator: writes/s, linearizable and stale reads/s at several
    concurrencies, with p50/p99 latency (liferaft-kv, or etcd v3 through its
    JSON gateway).  Exit 1 if a step had no success at all."""
    cfg = Config(
        connections=connections, seconds=seconds, warmup=warmup, ops=ops, reads_at=reads_at,
        keys=keys, request_timeout=timeout,
    )  # fmt: skip
    try:
        cfg.check()
        if not 1 <= value_size <= 1 << 20:
            raise ValueError("--value-size must be 1..1048576")
        token = load_token(token_file) if token_file is not None else None
        adapter = make_adapter(system, parse_endpoints(endpoints), value_size, token, etcd_prefix)
    except (ValueError, ServeError) as exc:
        raise click.UsageError(str(exc)) from exc
    # Progress lines go where they do not spoil a document on stdout.
    say = click.echo if fmt == "table" else (lambda line: click.echo(line, err=True))
    try:
        res = asyncio.run(run_bench(adapter, cfg, say=say))
    except BenchError as exc:
        raise CommandFailedError(str(exc)) from exc
    emit(_output(res), fmt)
    if json_file:
        with open(json_file, "w") as f:
            json.dump(res.to_json(), f, indent=1)
        click.echo(f"\nwrote {json_file}", err=fmt != "table")
    # Errors are in the table; only a step with no success at all fails the run.
    if any(s.ok == 0 for s in res.steps):
        raise CommandFailedError("a step had no successful request", ExitCode.ERROR)


@bench.command("trace")
@click.option("--writes", default=1000, show_default=True, help="Writes traced (one connection).")
@click.option("--rate", default=0.0, help="Writes per second (default: back to back).")
@click.option("--warmup", default=20, show_default=True, help="Writes before, not counted.")
@write_out_options()
def bench_trace(writes: int, rate: float, warmup: int, fmt: str) -> None:
    """Where a write's time goes: a local 3-node cluster with the per-write
    trace on (LIFERAFT_TRACE_WRITES), N writes at one connection, and the
    stage table (median and p90 µs per stage, CPU per write per node, the
    fdatasync + RTT yardstick).  docs/bench.md, "Tracing a write"."""
    from liferaft.harness.trace_bench import run as trace_run

    if writes < 1 or warmup < 0 or rate < 0:
        raise click.UsageError("--writes must be >= 1, --warmup and --rate >= 0")
    try:
        report = trace_run(writes, rate, warmup)
    except RuntimeError as exc:
        raise CommandFailedError(str(exc)) from exc
    rows = [
        (r.stage, f"{r.p50_us:.0f}", f"{r.p90_us:.0f}", "yes" if r.in_sum else "no")
        for r in [*report.rows, report.end_to_end]
    ]
    emit(Output(dataclasses.asdict(report), rows, line=report.table()), fmt)
