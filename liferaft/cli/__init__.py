"""The ``liferaft`` command: ``serve`` (a liferaft-kv node), ``cluster up``,
the client commands (``kv``, ``status``, ``members``, ...), ``inspect``,
``bench`` and ``sim view`` (a simulator trace's replay viewer).

Every subcommand is imported only when it runs (:class:`LazyGroup`): the
server stack (the runtime, aiohttp's server side, uvloop, prometheus) costs
a third of a second to import, and ``liferaft --version`` or ``liferaft kv
get`` have no use for it (docs/operations.md, "Scripting the CLI")."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from liferaft import __version__

# Subcommand -> "module:attribute" of its click command, imported on first use.
SUBCOMMANDS = {
    "bench": "liferaft.cli.bench:bench",
    "cluster": "liferaft.cli.cluster:cluster",
    "inspect": "liferaft.cli.inspect:inspect",
    "kv": "liferaft.cli.coord_cmds:kv",
    "members": "liferaft.cli.client_cmds:members",
    "serve": "liferaft.cli.serve:serve_cmd",
    "sim": "liferaft.cli.sim_cmds:sim",
    "snapshot": "liferaft.cli.snapshot_cmds:snapshot",
    "status": "liferaft.cli.client_cmds:status",
    "transfer-leader": "liferaft.cli.client_cmds:transfer_leader",
}


class LazyGroup(click.Group):
    """A group whose subcommands are named up front and imported when
    first looked up (click's documented "lazy loading" pattern)."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, attr = self.lazy[cmd_name].split(":")
            cmd = getattr(importlib.import_module(module), attr)
            if not isinstance(cmd, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            self.add_command(cmd, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    lazy=SUBCOMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(
    __version__, "--version", prog_name="liferaft", message="%(prog)s %(version)s"
)
def main() -> None:
    """liferaft: Raft consensus for Python.

    Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 precondition failed,
    5 unavailable (nothing applied), 6 outcome unknown (docs/operations.md)."""


def run() -> None:
    """Console entry point: every error is one line (``Error: ...``) and a
    non-zero exit, never a traceback or a usage screen (docs/kv.md, "liferaft serve")."""
    try:
        rv = main(standalone_mode=False, auto_envvar_prefix="LIFERAFT")
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        from .exit_codes import ExitCode

        click.echo("Aborted!", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:
        # A StorageError can come only from a command that imported the
        # storage layer; looking it up here keeps `liferaft --version` light.
        storage = sys.modules.get("liferaft.storage")
        if storage is None or not isinstance(exc, storage.StorageError):
            raise
        from .exit_codes import ExitCode

        click.echo(f"Error: {exc}", err=True)
        sys.exit(ExitCode.ERROR)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
