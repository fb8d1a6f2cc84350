"""What the ``liferaft`` commands print, in the three formats of
``-w/--write-out`` (as etcdctl's): the one place they are defined
(docs/operations.md, "Scripting the CLI").

* ``table`` (the default): for people.  A result that is one thing is one
  line (``OK revision 6``, a key's value as it is); rows are a table.
* ``json``: one JSON document on stdout, keys sorted; on an error too
  (``{"error": CODE, "message": ...}``), besides the line on stderr.
* ``simple``: for ``cut``, ``read`` and ``awk``: one line per row, its
  fields separated by a tab, no header and no decoration.  A tab, newline,
  carriage return or backslash inside a field is written ``\\t``, ``\\n``,
  ``\\r``, ``\\\\``, so a row is always one line.

``--json`` is an alias of ``-w json``.  When stdout is not a terminal, a
table is printed at its full width (nothing is cut or ended with "…") and
without colour; on a terminal it fits the terminal, as rich does.  Cells
are text, never rich markup: committed data such as ``[/]`` prints as is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from liferaft.client import ClientError, PreconditionFailedError, RevisionCompactedError

from .exit_codes import CommandFailedError, ExitCode, for_error

FORMATS = ("table", "json", "simple")
# Wide enough for any row: rich lays a table out at its natural width
# (no padding to the console's), so this only lifts the cap.
UNLIMITED_WIDTH = 1 << 20
_SIMPLE_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(frozen=True)
class Output:
    """One command's result, ready for every format.

    ``data`` is the JSON document; ``rows`` the fields of each row (simple,
    and the table's body); ``columns`` the table's header; ``line``, when
    set, is the table form instead of a table.  ``failure``, when set,
    makes the command exit with that code and message after printing
    (``status`` with an endpoint down)."""

    data: Any
    rows: Sequence[Sequence[str]]
    columns: Sequence[str] = ()
    line: str | None = None
    title: str | None = None
    failure: tuple[ExitCode, str] | None = field(default=None)


def resolve_format(write_out: str | None, as_json: bool) -> str:
    """The format from ``-w`` and its alias ``--json``."""
    if as_json:
        if write_out not in (None, "json"):
            raise click.UsageError(f"--json is -w json; it contradicts -w {write_out}")
        return "json"
    return write_out or "table"


def write_out_options(
    *, alias: bool = True
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding ``-w/--write-out`` (and, with ``alias``,
    ``--json``) to a command, which gets ``fmt`` instead.  ``bench kv``
    takes ``alias=False``: its ``--json`` names a file."""
    return lambda f: _add_write_out(f, alias)


def _add_write_out(f: Callable[..., Any], alias: bool) -> Callable[..., Any]:
    @wraps(f)
    def wrapper(*args: Any, write_out: str | None, as_json: bool = False, **kw: Any) -> Any:
        return f(*args, fmt=resolve_format(write_out, as_json), **kw)

    if alias:
        wrapper = click.option(
            "--json", "as_json", is_flag=True, help="The same as -w json."
        )(wrapper)
    return click.option(
        "-w",
        "--write-out",
        type=click.Choice(FORMATS),
        default=None,
        help="Output format: table (default; for people), json (one document) or simple "
        "(one tab-separated line per row).",
    )(wrapper)


def console() -> Console:
    """A console on stdout; off a terminal, one that never cuts a row."""
    c = Console()
    if c.is_terminal:
        return c
    return Console(width=UNLIMITED_WIDTH, no_color=True, highlight=False)


def simple_line(fields: Sequence[str]) -> str:
    """One row in the simple format."""
    return "\t".join(str(f).translate(_SIMPLE_ESCAPES) for f in fields)


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None) -> Table:
    """A rich table of plain-text cells (no markup is parsed in them)."""
    t = Table(*columns, title=title)
    for row in rows:
        t.add_row(*(Text(str(c)) for c in row))
    return t


def emit(out: Output, fmt: str) -> None:
    """Print ``out`` in ``fmt``; then fail with its ``failure``, if any."""
    if fmt == "json":
        click.echo(json.dumps(out.data, sort_keys=True))
    elif fmt == "simple":
        for row in out.rows:
            click.echo(simple_line(row))
    elif out.line is not None:
        click.echo(out.line)
    else:
        console().print(table(out.columns, out.rows, out.title))
    if out.failure is not None:
        code, message = out.failure
        raise CommandFailedError(message, code)


def fail(exc: ClientError, fmt: str, current: Any = None) -> CommandFailedError:
    """The error to raise for ``exc`` (exit code by its kind), after printing
    it as JSON on stdout in the json format.  ``current``: the key's value
    now, as data, for a failed precondition; a compacted revision names the
    first one still readable (``compact_revision``)."""
    message = str(exc)
    if isinstance(exc, PreconditionFailedError):
        now = exc.current
        shown = "(none)" if now is None else f"{now.value!r} (revision {now.revision})"
        message = f"precondition failed; current: {shown}"
    elif isinstance(exc, RevisionCompactedError):
        message += f"; use --rev {exc.compact_revision} or later"
    if fmt == "json":
        doc: dict[str, Any] = {"error": exc.code or "error", "message": message}
        if isinstance(exc, PreconditionFailedError):
            doc["current"] = current
        if isinstance(exc, RevisionCompactedError):
            doc["compact_revision"] = exc.compact_revision
        click.echo(json.dumps(doc, sort_keys=True))
    return CommandFailedError(message, for_error(exc))
