"""The ``liferaft`` command: ``serve`` (a liferaft-kv node), ``cluster up``,
the client commands (``kv``, ``status``, ``members``, ...), ``inspect`` and
``bench``."""

from __future__ import annotations

import sys

import click

from liferaft import __version__
from liferaft.storage import StorageError

from .exit_codes import ExitCode


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "--version", prog_name="liferaft", message="%(prog)s %(version)s"
)
def main() -> None:
    """liferaft: Raft consensus for Python.

    Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 precondition failed,
    5 unavailable (nothing applied), 6 outcome unknown (docs/operations.md)."""


def _register() -> None:
    from .bench import bench
    from .client_cmds import COMMANDS
    from .cluster import cluster
    from .inspect import inspect
    from .serve import serve_cmd

    main.add_command(bench)
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
        rv = main(standalone_mode=False)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except StorageError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(ExitCode.ERROR)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
