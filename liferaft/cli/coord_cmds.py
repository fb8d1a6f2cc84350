"""The coordination commands of ``liferaft kv`` over the MVCC store:
``watch``, ``txn`` and ``compact`` here; ``lease``, ``lock`` and ``elect`` in
:mod:`.lease_cmds` (docs/kv.md, "The CLI").  This module assembles the whole
``kv`` group: the key commands of :mod:`.client_cmds` plus these.

They print in ``-w table|json|simple`` like every client command; a stream
(``watch``) prints one item per line as it comes, in the same formats
(json: one object per line).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from liferaft.client import (
    AsyncClient,
    Cmp,
    Deleted,
    Event,
    Op,
    Page,
    TxnResult,
    WriteResult,
)

from .client_cmds import _item, _options, _run, kv
from .lease_cmds import elect, lease, lock
from .output import Output
from .stopping import StopRequestedError, emit_now, stop_on_signals, unless_stopped

# -- watch --------------------------------------------------------------------------------


def event_output(ev: Event, prev_kv: bool) -> Output:
    """One watch event in the three formats: ``REV PUT key value`` (table,
    space-separated; simple, tab-separated), ``REV DELETE key``; with
    ``--prev-kv`` every row also has the value before it (empty if none)."""
    kind = ev.type.upper()
    prev = ev.prev.value if ev.prev is not None else ""
    row = [str(ev.revision), kind, ev.key, ev.value if ev.type == "put" else ""]
    line = " ".join(row[:3] if ev.type == "delete" else row)
    doc: dict[str, Any] = {**(_item(ev) or {}), "type": ev.type}
    if prev_kv:
        row.append(prev)
        line += f" (was {prev!r})" if ev.prev is not None else " (was absent)"
        doc["prev"] = _item(ev.prev)
    elif ev.type == "delete":
        row.pop()  # no value column unless --prev-kv needs the column after it
    return Output(doc, [row], line=line)


@click.command("watch")
@click.argument("key")
@click.option("--prefix", "is_prefix", is_flag=True, help="Watch every key that starts with KEY.")
@click.option("--rev", "start", default=0, type=click.IntRange(min=0),
              help="Start at this store revision (default: the next change).")  # fmt: skip
@click.option("--prev-kv", is_flag=True, help="Also print each key's value before the change.")
@_options
@_run
async def watch(
    c: AsyncClient, key: str, is_prefix: bool, start: int, prev_kv: bool, fmt: str
) -> None:
    """Print every change to KEY (or under it, with --prefix) as it is made,
    once each and in revision order, until Ctrl-C (exit 0).  A dropped
    connection resumes by itself from the last revision printed; a --rev
    that compaction removed is an error naming where history starts."""
    if is_prefix:
        stream = c.watch(prefix=key, start_revision=start, prev_kv=prev_kv)
    else:
        stream = c.watch(key, start_revision=start, prev_kv=prev_kv)
    async with stop_on_signals() as stop, stream:
        it = aiter(stream)
        while True:
            try:
                ev = await unless_stopped(stop, anext(it))
            except StopRequestedError:
                return
            if isinstance(ev, Event):
                emit_now(event_output(ev, prev_kv), fmt)


# -- txn ----------------------------------------------------------------------------------

OP_KINDS = ("put", "delete", "range")


def parse_txn(text: str, where: str) -> tuple[list[Cmp], list[Op], list[Op]]:
    """A transaction in the JSON shape of ``POST /v1/txn`` (docs/kv.md,
    "Transactions"): ``{"compare": [...], "success": [...], "failure": [...]}``.
    Only the shape is checked here, with a message naming the bad part; the
    server checks the rest (keys, targets, operators)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"{where}: not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise click.ClickException(f"{where}: a txn is a JSON object with compare, success, "
                                   "failure")  # fmt: skip
    unknown = sorted(set(doc) - {"compare", "success", "failure"})
    if unknown:
        raise click.ClickException(f"{where}: unknown field {unknown[0]!r} (compare, success, "
                                   "failure)")  # fmt: skip
    lists = {}
    for name in ("compare", "success", "failure"):
        got = doc.get(name, [])
        if not isinstance(got, list) or not all(isinstance(x, dict) for x in got):
            raise click.ClickException(f"{where}: {name} must be a list of objects")
        lists[name] = got
    cmps = []
    for n, c in enumerate(lists["compare"]):
        if set(c) != {"key", "target", "op", "value"}:
            raise click.ClickException(
                f"{where}: compare[{n}] needs exactly key, target, op and value"
            )
        cmps.append(Cmp(c["key"], c["target"], c["op"], c["value"]))
    branches = []
    for name in ("success", "failure"):
        ops = []
        for n, o in enumerate(lists[name]):
            if len(o) != 1 or next(iter(o)) not in OP_KINDS or not isinstance(
                next(iter(o.values())), dict
            ):
                raise click.ClickException(
                    f"{where}: {name}[{n}] must be one of {{\"put\": {{...}}}}, "
                    '{"delete": {...}}, {"range": {...}}'
                )
            ((kind, body),) = o.items()
            ops.append(Op(kind, body))
        branches.append(ops)
    return cmps, branches[0], branches[1]


def txn_output(r: TxnResult) -> Output:
    """Which branch ran and each result.  simple: ``SUCCESS|FAILURE REV``,
    then per operation ``put REV``, ``delete COUNT`` or ``range COUNT``
    followed by one ``item KEY VALUE REV`` line per key it read."""
    branch = "SUCCESS" if r.succeeded else "FAILURE"
    rows = [[branch, str(r.revision)]]
    lines = [f"{branch} (revision {r.revision})"]
    docs: list[dict[str, Any]] = []
    for res in r.results:
        if isinstance(res, WriteResult):
            rows.append(["put", str(res.revision)])
            lines.append(f"put: OK revision {res.revision}")
            docs.append({"put": {"revision": res.revision, "prev": _item(res.prev)}})
        elif isinstance(res, Deleted):
            rows.append(["delete", str(res.deleted)])
            lines.append(f"delete: {res.deleted} deleted")
            docs.append({"delete": {"revision": res.revision, "deleted": res.deleted,
                                    "prev": [_item(i) for i in res.prev]}})  # fmt: skip
        else:
            assert isinstance(res, Page)
            rows.append(["range", str(res.count)])
            rows += [["item", i.key, i.value, str(i.revision)] for i in res.items]
            lines.append(f"range: {res.count} keys")
            lines += [f"  {i.key} = {i.value} (revision {i.revision})" for i in res.items]
            docs.append({"range": {"items": [_item(i) for i in res.items], "count": res.count,
                                   "revision": res.revision}})  # fmt: skip
    doc = {"succeeded": r.succeeded, "revision": r.revision, "results": docs}
    return Output(doc, rows, line="\n".join(lines))


@click.command("txn")
@click.option(
    "--file", "path", type=click.Path(dir_okay=False, path_type=Path),
    help="Read the transaction from this file (default: stdin; - is stdin).",
)  # fmt: skip
@_options
@_run
async def txn(c: AsyncClient, path: Path | None) -> Output:
    """Apply a transaction atomically, at one revision: if every compare
    holds, its success operations run, else its failure ones.  Input is
    the JSON body of POST /v1/txn.  Prints which branch ran (exit 0 either
    way) and each operation's result."""
    if path is None or str(path) == "-":
        if sys.stdin.isatty():
            click.echo("reading the txn as JSON from stdin (Ctrl-D ends it)", err=True)
        text, where = sys.stdin.read(), "stdin"
    else:
        try:
            text, where = path.read_text(), str(path)
        except OSError as exc:
            raise click.ClickException(f"--file: {exc.strerror}: {path}") from exc
    compare, success, failure = parse_txn(text, where)
    return txn_output(await c.txn(compare, success, failure))


# -- compact ------------------------------------------------------------------------------


@click.command("compact")
@click.argument("revision", type=click.IntRange(min=1))
@_options
@_run
async def compact(c: AsyncClient, revision: int) -> Output:
    """Drop the history below REVISION on every replica: reads and watches
    before it fail from then on (the current values stay)."""
    now = await c.compact(revision)
    return Output({"compact_revision": revision, "revision": now}, [[str(revision)]],
                  line=f"compacted at revision {revision} (store revision {now})")  # fmt: skip


for _cmd in (watch, txn, compact, lease, lock, elect):
    kv.add_command(_cmd)
