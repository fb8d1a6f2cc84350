"""Client and admin commands: ``kv``, ``status``, ``members``,
``transfer-leader`` and ``snapshot``.  All take ``--endpoints`` (any members'
client addresses; the leader is found automatically) and print in the
format of ``-w table|json|simple`` (:mod:`.output`); they exit with the
codes of :mod:`.exit_codes` (docs/operations.md, "Exit codes")."""

from __future__ import annotations

import asyncio
import inspect
import ssl
from collections.abc import Callable, Coroutine
from functools import wraps
from pathlib import Path
from typing import Any

import click

from liferaft.client import (
    DIAL_TIMEOUT,
    AsyncClient,
    ClientError,
    Item,
    NotFoundError,
    PreconditionFailedError,
)

from .exit_codes import ExitCode
from .output import Output, fail, write_out_options
from .output import emit as _emit

DEFAULT_ENDPOINTS = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
CONSISTENCY_OPTION = click.option(
    "--consistency",
    default="linearizable",
    show_default=True,
    type=click.Choice(["linearizable", "lease", "stale"]),
    help="linearizable (ReadIndex), lease (the leader's lease, if the cluster grants it) "
    "or stale (the node's own state).",
)


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
    f = click.option(
        "--timeout",
        default=10.0,
        show_default=True,
        type=click.FloatRange(min=0, min_open=True),
        help="Seconds for the whole command, retries included.",
    )(f)
    f = click.option(
        "--dial-timeout",
        default=DIAL_TIMEOUT,
        show_default=True,
        type=click.FloatRange(min=0, min_open=True),
        help="Seconds to connect to one endpoint (TCP and TLS) before trying the next.",
    )(f)
    return write_out_options()(f)


def _run(
    fn: Callable[..., Coroutine[Any, Any, Output | None]],
) -> Callable[..., None]:
    """Run ``fn(client, **kw)`` and print its result; errors are one line
    and an exit code by their kind.  A ``fn`` that takes ``fmt`` gets the
    output format, to print as it goes."""

    @wraps(fn)
    def wrapper(
        endpoints: str,
        token_file: Path | None,
        timeout: float,
        dial_timeout: float,
        fmt: str,
        tls_ca: str | None,
        tls_cert: str | None,
        tls_key: str | None,
        **kw: Any,
    ) -> None:
        token = None
        if token_file is not None:
            # Here, not at the top: liferaft.kv imports the whole server stack,
            # which a client command has no use for (liferaft/cli/__init__.py).
            from liferaft.kv.serve import ServeError, load_token

            try:
                token = load_token(token_file)  # refused if others can read it
            except ServeError as exc:
                raise click.ClickException(str(exc)) from exc

        tls = _tls_context(tls_ca, tls_cert, tls_key)

        if "fmt" in inspect.signature(fn).parameters:
            kw["fmt"] = fmt  # a command that prints as it goes (a stream)

        async def go() -> Output | None:
            async with AsyncClient(
                endpoints, token=token, timeout=timeout, ssl=tls, dial_timeout=dial_timeout
            ) as c:
                return await fn(c, **kw)

        try:
            out = asyncio.run(go())
        except PreconditionFailedError as exc:
            raise fail(exc, fmt, _item(exc.current)) from exc
        except ClientError as exc:
            raise fail(exc, fmt) from exc
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        if out is not None:
            _emit(out, fmt)

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


def _item(i: Item | None) -> dict[str, Any] | None:
    """A key as JSON: ``revision`` is its mod_revision (docs/kv.md, "Revisions")."""
    if i is None:
        return None
    return {
        "key": i.key, "value": i.value, "revision": i.revision,
        "create_revision": i.create_revision, "version": i.version, "lease": i.lease,
    }  # fmt: skip


class LeaseIdType(click.ParamType):  # type: ignore[type-arg]
    """A lease id: decimal, as the HTTP API and ``lease grant`` print it, or
    ``0x`` hexadecimal, as lock and election keys name it."""

    name = "lease_id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            n = int(str(value), 0)
        except ValueError:
            self.fail(f"{value!r} is not a lease id (a number; 0x... for hex)", param, ctx)
        if not 0 < n < 1 << 63:
            self.fail(f"{value!r} is not a lease id (1 .. 2^63-1)", param, ctx)
        return n


LEASE_ID = LeaseIdType()
REV_OPTION = click.option(
    "--rev",
    "revision",
    default=0,
    type=click.IntRange(min=0),
    help="Read as of this store revision (default: now; exit 1 if compacted).",
)


def _written(r: Any, line: str) -> Output:
    """A write's result: its revision (simple), and the value it replaced."""
    return Output({"revision": r.revision, "prev": _item(r.prev)}, [[str(r.revision)]], line=line)


# -- kv -----------------------------------------------------------------------------------

ITEM_COLUMNS = ("key", "value", "revision")


@click.group()
def kv() -> None:
    """Read and write keys."""


@kv.command("get")
@click.argument("key")
@REV_OPTION
@CONSISTENCY_OPTION
@_options
@_run
async def kv_get(c: AsyncClient, key: str, revision: int, consistency: str) -> Output:
    """Print KEY's value, now or at --rev (exit 3 if there is no such key)."""
    i = await c.get(key, consistency, revision=revision)
    if i is None:
        at = f" at revision {revision}" if revision else ""
        raise NotFoundError(f"key {key!r} not found{at}", 404, "not_found")
    return Output(_item(i), [[i.value]], line=i.value)


@kv.command("put")
@click.argument("key")
@click.argument("value")
@click.option("--if-value", default=None, help="Only if the current value is this.")
@click.option("--if-revision", default=None, type=int, help="Only at this revision (0: create).")
@click.option(
    "--lease", default=None, type=LEASE_ID,
    help="Attach to this lease: the key is deleted when it ends (exit 3 if there is none).",
)  # fmt: skip
@_options
@_run
async def kv_put(
    c: AsyncClient, key: str, value: str, if_value: str | None, if_revision: int | None,
    lease: int | None,
) -> Output:
    """Set KEY to VALUE; prints the write's revision."""
    r = await c.put(key, value, if_value=if_value, if_revision=if_revision, lease=lease or 0)
    return _written(r, f"OK revision {r.revision}")


@kv.command("del")
@click.argument("key")
@click.option("--if-value", default=None, help="Only if the current value is this.")
@click.option("--if-revision", default=None, type=int, help="Only at this revision.")
@_options
@_run
async def kv_del(c: AsyncClient, key: str, if_value: str | None, if_revision: int | None) -> Output:
    """Delete KEY (exit 3 if there is no such key)."""
    r = await c.delete(key, if_value=if_value, if_revision=if_revision)
    return _written(r, f"deleted (revision {r.revision})")


@kv.command("cas")
@click.argument("key")
@click.argument("old")
@click.argument("new")
@_options
@_run
async def kv_cas(c: AsyncClient, key: str, old: str, new: str) -> Output:
    """Set KEY to NEW only if it holds OLD (exit 4 if it does not)."""
    r = await c.cas(key, old, new)
    return _written(r, f"OK revision {r.revision}")


@kv.command("list")
@click.argument("prefix_arg", metavar="[PREFIX]", required=False)
@click.option("--prefix", default=None, help="Only keys that start with this (default: all).")
@click.option("--limit", default=None, type=click.IntRange(min=1), help="At most this many.")
@REV_OPTION
@click.option("--keys-only", is_flag=True, help="Keys and revisions, without values.")
@click.option("--count-only", is_flag=True, help="Only how many keys there are.")
@CONSISTENCY_OPTION
@_options
@_run
async def kv_list(
    c: AsyncClient, prefix_arg: str | None, prefix: str | None, limit: int | None, revision: int,
    keys_only: bool, count_only: bool, consistency: str,
) -> Output:
    """List keys under PREFIX (or --prefix; default: every key), now or at
    --rev, in key order: every page, one snapshot, unless --limit."""
    if prefix_arg is not None and prefix is not None and prefix_arg != prefix:
        raise click.UsageError("give the prefix once: as PREFIX or as --prefix")
    if keys_only and count_only:
        raise click.UsageError("--keys-only and --count-only exclude each other")
    p = await c.range(
        prefix=prefix_arg or prefix or "", revision=revision, limit=limit,
        keys_only=keys_only, count_only=count_only, consistency=consistency,
    )  # fmt: skip
    doc = {"items": [_item(i) for i in p.items], "revision": p.read_revision, "count": p.count}
    if count_only:
        noun = "key" if p.count == 1 else "keys"
        return Output(doc, [[str(p.count)]], line=f"{p.count} {noun} (store revision "
                                                  f"{p.read_revision})")  # fmt: skip
    if keys_only:
        rows = [[i.key, str(i.revision)] for i in p.items]
        return Output(doc, rows, ("key", "revision"), title=f"store revision {p.read_revision}")
    return Output(
        doc,
        [[i.key, i.value, str(i.revision)] for i in p.items],
        ITEM_COLUMNS,
        title=f"store revision {p.read_revision}",
    )


# -- cluster ------------------------------------------------------------------------------

STATUS_COLUMNS = (
    "endpoint", "id", "role", "term", "leader", "commit", "applied", "last", "snapshot",
)  # fmt: skip
STATUS_FIELDS = (
    "id", "role", "term", "leader", "commit_index", "applied_index", "last_log_index",
    "snapshot_index",
)  # fmt: skip


@click.command("status")
@_options
@_run
async def status(c: AsyncClient) -> Output:
    """Every endpoint's view: role, term, leader, indices.

    An endpoint that does not answer is a row "unreachable"; the others are
    printed all the same, and the exit status is then 1 (5 if none answered)."""

    async def one(ep: str) -> dict[str, Any]:
        try:
            return {"endpoint": ep, **await c.status(endpoint=ep, timeout=min(c.timeout, 2.0))}
        except ClientError as exc:
            return {"endpoint": ep, "error": str(exc)}

    # All at once: a node that is down costs its own timeout, not everyone's.
    rows = list(await asyncio.gather(*(one(ep) for ep in c.endpoints)))
    cells = [
        [r["endpoint"], "-", "unreachable", *["-"] * 6]
        if "error" in r
        else [r["endpoint"], *(str(r[f] or "-") if f == "leader" else str(r[f])
                               for f in STATUS_FIELDS)]
        for r in rows
    ]  # fmt: skip
    down = [r for r in rows if "error" in r]
    failure = None
    if down:
        what = "; ".join(f"{r['endpoint']}: {r['error']}" for r in down)
        code = ExitCode.UNAVAILABLE if len(down) == len(rows) else ExitCode.ERROR
        failure = (code, f"{len(down)} of {len(rows)} endpoints unreachable ({what})")
    return Output(rows, cells, STATUS_COLUMNS, failure=failure)


MEMBER_COLUMNS = ("id", "role", "peer address", "client address")


def _members(ms: list[dict[str, Any]]) -> Output:
    rows = [
        [str(m["id"]), "voter" if m["voter"] else "learner", str(m["peer_addr"]),
         str(m["client_addr"])]
        for m in ms
    ]  # fmt: skip
    return Output(ms, rows, MEMBER_COLUMNS)


@click.group()
def members() -> None:
    """List and change the membership."""


@members.command("list")
@_options
@_run
async def members_list(c: AsyncClient) -> Output:
    """List the members: id, voter or learner, peer and client address."""
    return _members(await c.members())


@members.command("add")
@click.argument("node_id")
@click.argument("peer_addr")
@click.option(
    "--client-addr", default="", help="Its client address, HOST:PORT (shown to clients)."
)
@click.option("--learner", is_flag=True, help="Add as a non-voting learner.")
@_options
@_run
async def members_add(
    c: AsyncClient, node_id: str, peer_addr: str, client_addr: str, learner: bool
) -> Output:
    """Add NODE_ID at PEER_ADDR (a voter once it has caught up)."""
    return _members(await c.add_member(node_id, peer_addr, client_addr, voter=not learner))


@members.command("remove")
@click.argument("node_id")
@_options
@_run
async def members_remove(c: AsyncClient, node_id: str) -> Output:
    """Remove NODE_ID from the cluster; prints the members left."""
    return _members(await c.remove_member(node_id))


@members.command("promote")
@click.argument("node_id")
@_options
@_run
async def members_promote(c: AsyncClient, node_id: str) -> Output:
    """Make learner NODE_ID a voter (once it has caught up)."""
    return _members(await c.promote(node_id))


@click.command("transfer-leader")
@click.option("--to", default=None, help="Target node id (default: the most caught-up voter).")
@_options
@_run
async def transfer_leader(c: AsyncClient, to: str | None) -> Output:
    """Hand leadership to another voter; prints the new leader's id."""
    new = await c.transfer_leader(to)
    return Output({"leader": new}, [[new]], line=f"leader is now {new}")


@click.command("snapshot")
@click.option("--endpoint", default=None, help="The node to snapshot (default: the first).")
@_options
@_run
async def snapshot(c: AsyncClient, endpoint: str | None) -> Output:
    """Take a snapshot now on one node; prints its index."""
    idx = await c.snapshot(endpoint or c.endpoints[0])
    return Output({"index": idx}, [[str(idx)]], line=f"snapshot at index {idx}")


COMMANDS = [kv, status, members, transfer_leader, snapshot]
