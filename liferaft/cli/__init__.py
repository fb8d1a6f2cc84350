"""The ``liferaft`` command: ``serve`` (a liferaft-kv node), ``cluster up``,
the client commands (``kv``, ``status``, ``members``, ...), ``inspect`` and
``bench``."""

from __future__ import annotations

import sys

import click

from liferaft.storage import StorageError


@click.group()
def main() -> None:
    """liferaft: Raft consensus for Python."""


@main.group()
def bench() -> None:
    """Benchmarks (figures go to BENCHMARKS.md)."""


@bench.command("wal")
@click.option("--dir", "directory", default=None, help="Directory on the file system to test.")
@click.option("--entries", default=1_000_000, show_default=True, help="Log size for reopen.")
@click.option("--seconds", default=2.0, show_default=True, help="Duration of each measurement.")
def bench_wal(directory: str | None, entries: int, seconds: float) -> None:
    """WAL throughput with and without sync, next to the raw fdatasync rate."""
    from liferaft.storage.bench import main as wal_bench

    args = ["--entries", str(entries), "--seconds", str(seconds)]
    if directory:
        args += ["--dir", directory]
    sys.exit(wal_bench(args))


@bench.command(
    "kv",
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench_kv(args: tuple[str, ...]) -> None:
    """HTTP load generator: writes/s, linearizable and stale reads/s, p50/p99
    (liferaft-kv, or etcd through its JSON gateway).  --help lists the flags."""
    from liferaft.kv.bench import main as kv_bench

    sys.exit(kv_bench(list(args)))


def _register() -> None:
    from .client_cmds import COMMANDS
    from .cluster import cluster
    from .inspect import inspect
    from .serve import serve_cmd

    main.add_command(cluster)
    main.add_command(inspect)
    main.add_command(serve_cmd, "serve")
    for cmd in COMMANDS:
        main.add_command(cmd)


_register()


def run() -> None:
    """Console entry point: every error is one line (``Error: ...``) and a
    non-zero exit, never a traceback or a usage screen (docs/kv.md, "liferaft serve")."""
    try:
        rv = main(standalone_mode=False, auto_envvar_prefix="LIFERAFT")
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(130)
    except StorageError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
