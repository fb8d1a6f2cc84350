"""The ``liferaft`` command: ``serve`` (a liferaft-kv node), ``cluster up``,
the client commands (``kv``, ``status``, ``members``, ...), ``inspect`` and
``bench``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from liferaft.core import HardState
from liferaft.storage import WAL, CorruptionError, SnapshotStore, StorageError
from liferaft.storage.hardstate import NAME as HS_NAME
from liferaft.storage.hardstate import decode as decode_hs


@click.group()
def main() -> None:
    """liferaft: Raft consensus for Python."""


@main.command()
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--repair", is_flag=True, help="Cut the WAL at the first corrupt record.")
def inspect(data_dir: Path, repair: bool) -> None:
    """Print and verify what DATA_DIR holds: hard state, WAL segments, snapshots.

    Every CRC is checked; the exit status is 1 on corruption.  Nothing is
    changed unless --repair is given: then the WAL is truncated at the first
    corrupt record (or torn tail) and what was dropped is printed; nothing is
    ever skipped silently.
    """
    if not data_dir.is_dir():
        raise click.ClickException(f"{data_dir} is not a directory")
    bad = False

    try:
        hs_path = data_dir / HS_NAME
        hs = decode_hs(hs_path.read_bytes(), hs_path) if hs_path.exists() else HardState()
        click.echo(f"hard state: term={hs.term} vote={hs.vote or '-'} commit={hs.commit}")
    except CorruptionError as exc:
        click.echo(f"CORRUPT hard state: {exc}", err=True)
        bad = True

    wal_dir = data_dir / "wal"
    if wal_dir.is_dir():
        try:
            w = WAL(wal_dir, repair=repair, read_only=True)
            for line in w.report.repaired:
                click.echo(f"repaired: {line}")
            for seg in w.segments:
                rng = f"{seg.first}..{seg.last}" if len(seg.offsets) else "empty"
                click.echo(f"segment {seg.path.name}: entries {rng} ({seg.size} bytes)")
            click.echo(f"wal: entries {w.first_index}..{w.last_index}")
            if w.report.torn_tail_bytes:
                verb = "truncated" if repair else "found (a node truncates it on start)"
                click.echo(f"wal: {verb} a torn tail of {w.report.torn_tail_bytes} bytes")
            w.close()
        except CorruptionError as exc:
            click.echo(f"CORRUPT wal: {exc.path} at offset {exc.offset}: {exc.reason}", err=True)
            bad = True
    else:
        click.echo("wal: none")

    snap_dir = data_dir / "snap"
    if snap_dir.is_dir():
        store = SnapshotStore(snap_dir, keep=1 << 30, cleanup=False)
        try:
            metas = store.list()
        except CorruptionError as exc:
            click.echo(f"CORRUPT snapshot: {exc}", err=True)
            metas, bad = [], True
        for meta in metas:
            try:
                store.verify(meta)
                status = "ok"
            except CorruptionError as exc:
                status = f"CORRUPT at offset {exc.offset}: {exc.reason}"
                bad = True
            click.echo(f"snapshot index={meta.index} term={meta.term}: {status}")
        if metas:
            cs = metas[-1].conf_state
            click.echo(
                f"membership (newest snapshot): voters={sorted(cs.voters)} "
                f"learners={sorted(cs.learners)}"
                + (f" outgoing={sorted(cs.voters_outgoing)}" if cs.voters_outgoing else "")
            )
    else:
        click.echo("snapshots: none")
    if bad:
        sys.exit(1)


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
    from .serve import serve_cmd

    main.add_command(cluster)
    main.add_command(serve_cmd, "serve")
    for cmd in COMMANDS:
        main.add_command(cmd)


_register()


def run() -> None:
    """Console entry point: every error is one line (``Error: ...``) and a
    non-zero exit, never a traceback or a usage screen (DESIGN.md, cli)."""
    try:
        rv = main(standalone_mode=False)
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
