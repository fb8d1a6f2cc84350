"""Client and admin commands: ``kv``, ``status``, ``members``,
``transfer-leader`` and ``snapshot``.  All take ``--endpoints`` (any members'
client addresses; the leader is found automatically), human output by
default and ``--json`` for scripts."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from liferaft.client import AsyncClient, ClientError, Item, PreconditionFailedError
from liferaft.kv.serve import ServeError, load_token

DEFAULT_ENDPOINTS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--endpoints",
        default=DEFAULT_ENDPOINTS,
        show_default=True,
        envvar="LIFERAFT_ENDPOINTS",
        help="Comma-separated client addresses of members.",
    )(f)
    f = click.option(
        "--token-file", type=click.Path(dir_okay=False, path_type=Path), help="Bearer token."
    )(f)
    # (tls_*: "key" is already the kv commands' KEY argument)
    for flag, name, what in (
        ("--cacert", "tls_ca", "CA bundle that signs the servers' certificates (https)."),
        ("--cert", "tls_cert", "Client certificate, for servers that require one (https)."),
        ("--key", "tls_key", "Its private key."),
    ):
        f = click.option(flag, name, type=click.Path(dir_okay=False), help=what)(f)
    f = click.option("--timeout", default=10.0, show_default=True, help="Seconds.")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)
    return f


def _run(
    fn: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., None]:
    """Run ``fn(client, **kw)`` and print its result; errors are one line."""

    @wraps(fn)
    def wrapper(
        endpoints: str,
        token_file: Path | None,
        timeout: float,
        as_json: bool,
        tls_ca: str | None,
        tls_cert: str | None,
        tls_key: str | None,
        **kw: Any,
    ) -> None:
        token = None
        if token_file is not None:
            try:
                token = load_token(token_file)  # refused if others can read it
            except ServeError as exc:
                raise click.ClickException(str(exc)) from exc

        tls = _tls_context(tls_ca, tls_cert, tls_key)

        async def go() -> Any:
            async with AsyncClient(endpoints, token=token, timeout=timeout, ssl=tls) as c:
                return await fn(c, **kw)

        try:
            out = asyncio.run(go())
        except PreconditionFailedError as exc:
            _emit(
                {"error": "precondition_failed", "current": _item(exc.current)},
                as_json,
                f"precondition failed; current: {_human_item(exc.current)}",
            )
            sys.exit(1)
        except ClientError as exc:
            if as_json:
                click.echo(json.dumps({"error": exc.code or "error", "message": str(exc)}))
            else:
                click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        if out is not None:
            data, human = out
            _emit(data, as_json, human)

    return wrapper


def _tls_context(cacert: str | None, cert: str | None, key: str | None) -> ssl.SSLContext | None:
    """The client's TLS settings, or None (then only ``https://`` endpoints
    use TLS, checked against the system's CAs)."""
    if not (cacert or cert or key):
        return None
    if bool(cert) != bool(key):
        raise click.UsageError("--cert and --key go together")
    try:
        ctx = ssl.create_default_context(cafile=cacert)
        if cert:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise click.ClickException(f"TLS: {exc}") from exc
    return ctx


def _emit(data: Any, as_json: bool, human: Any) -> None:
    if as_json:
        click.echo(json.dumps(data, sort_keys=True))
    elif isinstance(human, Table):
        Console().print(human)
    else:
        click.echo(human)


def _item(i: Item | None) -> dict[str, Any] | None:
    return None if i is None else {"key": i.key, "value": i.value, "revision": i.revision}


def _human_item(i: Item | None) -> str:
    return "(none)" if i is None else f"{i.value!r} (revision {i.revision})"


# -- kv -----------------------------------------------------------------------------------


@click.group()
def kv() -> None:
    """Read and write keys."""


@kv.command("get")
@click.argument("key")
@click.option(
    "--consistency",
    default="linearizable",
    show_default=True,
    type=click.Choice(["linearizable", "lease", "stale"]),
)
@_options
@_run
async def kv_get(c: AsyncClient, key: str, consistency: str) -> Any:
    """Print KEY's value."""
    i = await c.get(key, consistency)
    if i is None:
        raise ClientError(f"key {key!r} not found", 404, "not_found")
    return _item(i), i.value


@kv.command("put")
@click.argument("key")
@click.argument("value")
@click.option("--if-value", default=None, help="Only if the current value is this.")
@click.option("--if-revision", default=None, type=int, help="Only at this revision (0: create).")
@_options
@_run
async def kv_put(
    c: AsyncClient, key: str, value: str, if_value: str | None, if_revision: int | None
) -> Any:
    """Set KEY to VALUE."""
    r = await c.put(key, value, if_value=if_value, if_revision=if_revision)
    return {"revision": r.revision, "prev": _item(r.prev)}, f"OK revision {r.revision}"


@kv.command("del")
@click.argument("key")
@click.option("--if-value", default=None)
@click.option("--if-revision", default=None, type=int)
@_options
@_run
async def kv_del(c: AsyncClient, key: str, if_value: str | None, if_revision: int | None) -> Any:
    """Delete KEY."""
    r = await c.delete(key, if_value=if_value, if_revision=if_revision)
    return {"revision": r.revision, "prev": _item(r.prev)}, f"deleted (revision {r.revision})"


@kv.command("cas")
@click.argument("key")
@click.argument("old")
@click.argument("new")
@_options
@_run
async def kv_cas(c: AsyncClient, key: str, old: str, new: str) -> Any:
    """Set KEY to NEW only if it holds OLD."""
    r = await c.cas(key, old, new)
    return {"revision": r.revision, "prev": _item(r.prev)}, f"OK revision {r.revision}"


@kv.command("list")
@click.option("--prefix", default="")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="At most this many.")
@click.option(
    "--consistency", default="linearizable", type=click.Choice(["linearizable", "lease", "stale"])
)
@_options
@_run
async def kv_list(c: AsyncClient, prefix: str, limit: int | None, consistency: str) -> Any:
    """List keys under a prefix (every page, unless --limit)."""
    items, rev = await c.list(prefix, limit, consistency)
    t = Table("key", "value", "revision", title=f"store revision {rev}")
    for i in items:
        t.add_row(i.key, i.value, str(i.revision))
    return {"items": [_item(i) for i in items], "revision": rev}, t


# -- cluster ------------------------------------------------------------------------------


@click.command("status")
@_options
@_run
async def status(c: AsyncClient) -> Any:
    """Every endpoint's view: role, term, leader, indices."""
    rows = []
    for ep in c.endpoints:
        try:
            st = await c.status(endpoint=ep, timeout=min(c.timeout, 2.0))
            rows.append({"endpoint": ep, **st})
        except ClientError as exc:
            rows.append({"endpoint": ep, "error": str(exc)})
    t = Table("endpoint", "id", "role", "term", "leader", "commit", "applied", "last", "snapshot")
    for r in rows:
        if "error" in r:
            t.add_row(r["endpoint"], "-", "[red]unreachable[/]", *["-"] * 6)
            continue
        t.add_row(
            r["endpoint"],
            escape(str(r["id"])),
            r["role"],
            str(r["term"]),
            escape(str(r["leader"] or "-")),
            str(r["commit_index"]),
            str(r["applied_index"]),
            str(r["last_log_index"]),
            str(r["snapshot_index"]),
        )
    return rows, t


def _members_table(ms: list[dict[str, Any]]) -> Table:
    t = Table("id", "role", "peer address", "client address")
    for m in ms:
        # Committed data, shown as text: "[/]" in an address is not markup.
        t.add_row(
            escape(str(m["id"])),
            "voter" if m["voter"] else "learner",
            escape(str(m["peer_addr"])),
            escape(str(m["client_addr"])),
        )
    return t


@click.group()
def members() -> None:
    """List and change the membership."""


@members.command("list")
@_options
@_run
async def members_list(c: AsyncClient) -> Any:
    ms = await c.members()
    return ms, _members_table(ms)


@members.command("add")
@click.argument("node_id")
@click.argument("peer_addr")
@click.option("--client-addr", default="")
@click.option("--learner", is_flag=True, help="Add as a non-voting learner.")
@_options
@_run
async def members_add(
    c: AsyncClient, node_id: str, peer_addr: str, client_addr: str, learner: bool
) -> Any:
    """Add NODE_ID at PEER_ADDR (a voter once it has caught up)."""
    ms = await c.add_member(node_id, peer_addr, client_addr, voter=not learner)
    return ms, _members_table(ms)


@members.command("remove")
@click.argument("node_id")
@_options
@_run
async def members_remove(c: AsyncClient, node_id: str) -> Any:
    ms = await c.remove_member(node_id)
    return ms, _members_table(ms)


@members.command("promote")
@click.argument("node_id")
@_options
@_run
async def members_promote(c: AsyncClient, node_id: str) -> Any:
    ms = await c.promote(node_id)
    return ms, _members_table(ms)


@click.command("transfer-leader")
@click.option("--to", default=None, help="Target node id (default: the most caught-up voter).")
@_options
@_run
async def transfer_leader(c: AsyncClient, to: str | None) -> Any:
    """Hand leadership to another voter."""
    new = await c.transfer_leader(to)
    return {"leader": new}, f"leader is now {new}"


@click.command("snapshot")
@click.option("--endpoint", default=None, help="The node to snapshot (default: the first).")
@_options
@_run
async def snapshot(c: AsyncClient, endpoint: str | None) -> Any:
    """Take a snapshot now on one node."""
    idx = await c.snapshot(endpoint or c.endpoints[0])
    return {"index": idx}, f"snapshot at index {idx}"


COMMANDS = [kv, status, members, transfer_leader, snapshot]
