"""``liferaft sim``: simulator runs for people.  ``view TRACE`` writes the
replay viewer of a trace (``python -m liferaft.sim --seed N --trace
run.json``) as one self-contained HTML file next to it (docs/console.md,
"Replay viewer").  The simulator itself stays ``python -m liferaft.sim``."""

from __future__ import annotations

import click

from .exit_codes import CommandFailedError, ExitCode
from .output import Output, emit, write_out_options


@click.group("sim")
def sim() -> None:
    """Look at deterministic simulator runs."""


@sim.command("view")
@click.argument("trace", type=click.Path(dir_okay=True, path_type=str))
@write_out_options()
def view(trace: str, fmt: str) -> None:
    """Write TRACE's replay viewer (run.json -> run.html) and print its path.

    The page works offline from file://: open it in a browser."""
    from liferaft.console.replay import TraceError, ViewerWriteError, write_viewer

    try:
        out = write_viewer(trace)
    except (TraceError, ViewerWriteError) as e:
        raise CommandFailedError(str(e), ExitCode.ERROR) from None
    path = str(out.resolve())
    emit(Output(data={"html": path, "trace": trace}, rows=[[path]], line=path), fmt)
