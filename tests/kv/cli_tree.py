"""The `liferaft` command tree, walked once for the tests that check every
command (help texts, -w, environment variables)."""

from __future__ import annotations

import click

from liferaft.cli import main

Path = tuple[str, ...]


def walk(cmd: click.Command = main, path: Path = ()) -> list[tuple[Path, click.Command]]:
    """Every command under ``cmd``, groups too, parents before children."""
    out = [(path, cmd)]
    if isinstance(cmd, click.Group):
        # list_commands/get_command, not .commands: the top group is lazy.
        ctx = click.Context(cmd, info_name=path[-1] if path else "liferaft")
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None, f"{' '.join((*path, name))} does not load"
            out += walk(sub, (*path, name))
    return out


def env_var(path: Path, option: click.Option) -> str:
    """The variable click's auto_envvar_prefix="LIFERAFT" reads for
    ``option`` of the command at ``path``: from the parameter's name, which
    is not always the flag's (``--json`` reads ``..._AS_JSON``)."""
    words = ["LIFERAFT", *(w.upper().replace("-", "_") for w in path), str(option.name).upper()]
    return "_".join(words)
