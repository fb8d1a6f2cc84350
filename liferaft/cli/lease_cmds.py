"""``liferaft kv lease grant|keepalive|revoke|info|list``, ``kv lock`` and
``kv elect`` (docs/kv.md, "The CLI"): leases, and the client's Lock and
Election recipes (liferaft/client/concurrency.py) held from a shell, as
etcdctl's ``lease``, ``lock`` and ``elect``.

The holding commands (``lease keepalive``, ``lock``, ``elect``) run until
Ctrl-C or SIGTERM, then give back what they hold (docs/operations.md,
"Long-running commands"): Ctrl-C once it is held exits 0; before it is
held, 130 (nothing was done).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from typing import Any

import click

from liferaft.client import (
    AsyncClient,
    ClientError,
    Election,
    Lease,
    LeaseInfo,
    Lock,
    NoSuchLeaseError,
)

from .client_cmds import LEASE_ID, _options, _run
from .exit_codes import CommandFailedError, ExitCode
from .output import Output
from .stopping import StopRequestedError, emit_now, stop_on_signals, unless_stopped, until_set

#: The TTL ``lock`` and ``elect`` ask for unless told (the client's recipes').
RECIPE_TTL = 10
#: Seconds a command run under ``lock`` gets to exit after SIGTERM before SIGKILL.
CHILD_GRACE = 10.0

TTL_OPTION = click.option(
    "--ttl", default=RECIPE_TTL, show_default=True, type=click.IntRange(min=1),
    help="Seconds of the lease behind it: how long a holder that died keeps it "
    "(the cluster may raise it to its minimum).",
)  # fmt: skip


def _lease(lease: Lease, line: str) -> Output:
    return Output({"id": lease.id, "ttl": lease.ttl}, [[str(lease.id), str(lease.ttl)]], line=line)


@click.group("lease")
def lease() -> None:
    """Grant, keep alive, revoke and inspect leases (keys put with --lease
    ID are deleted when the lease ends)."""


@lease.command("grant")
@click.argument("ttl", type=click.IntRange(min=1))
@_options
@_run
async def lease_grant(c: AsyncClient, ttl: int) -> Output:
    """Grant a lease of TTL seconds; prints its id and the TTL granted (the
    cluster raises a TTL below its minimum)."""
    g = await c.lease_grant(ttl)
    return _lease(g, f"lease {g.id} granted with TTL {g.ttl}s")


@lease.command("keepalive")
@click.argument("lease_id", metavar="ID", type=LEASE_ID)
@click.option("--once", is_flag=True, help="Refresh it once and exit.")
@_options
@_run
async def lease_keepalive(c: AsyncClient, lease_id: int, once: bool, fmt: str) -> None:
    """Keep lease ID alive until Ctrl-C, refreshing it every third of its
    TTL and printing the TTL each time (exit 3 once it is gone)."""
    k = await c.lease_keepalive(lease_id)
    emit_now(_lease(k, f"lease {k.id} kept alive with TTL {k.ttl}s"), fmt)
    if once:
        return
    async with stop_on_signals() as stop:
        period = k.ttl / 3
        while True:
            try:
                await asyncio.wait_for(stop.wait(), period)
                return  # Ctrl-C: the lease runs out by its TTL
            except TimeoutError:
                pass
            try:
                k = await unless_stopped(stop, c.lease_keepalive(lease_id, timeout=period))
            except StopRequestedError:
                return
            except NoSuchLeaseError as exc:
                raise NoSuchLeaseError(f"lease {lease_id} expired or was revoked", exc.status,
                                       exc.code) from exc  # fmt: skip
            except ClientError as exc:
                # Not fatal yet: the lease lives until its TTL runs out.
                click.echo(f"keepalive of lease {lease_id} failed, retrying: {exc}", err=True)
                period = max(0.1, k.ttl / 9)
                continue
            period = k.ttl / 3
            emit_now(_lease(k, f"lease {k.id} kept alive with TTL {k.ttl}s"), fmt)


@lease.command("revoke")
@click.argument("lease_id", metavar="ID", type=LEASE_ID)
@_options
@_run
async def lease_revoke(c: AsyncClient, lease_id: int) -> Output:
    """End lease ID now and delete its keys; prints the store revision."""
    rev = await c.lease_revoke(lease_id)
    return Output({"id": lease_id, "revision": rev}, [[str(rev)]],
                  line=f"lease {lease_id} revoked (revision {rev})")  # fmt: skip


@lease.command("info")
@click.argument("lease_id", metavar="ID", type=LEASE_ID)
@click.option("--keys", is_flag=True, help="Also list the keys attached to it.")
@_options
@_run
async def lease_info(c: AsyncClient, lease_id: int, keys: bool) -> Output:
    """Lease ID's TTL and the seconds it has left (exit 3 if there is no such lease)."""
    i: LeaseInfo = await c.lease_info(lease_id, keys=keys)
    doc: dict[str, Any] = {"id": i.id, "ttl": i.ttl, "remaining": i.remaining}
    rows = [[str(i.id), str(i.ttl), f"{i.remaining:.1f}"]]
    line = f"lease {i.id}: TTL {i.ttl}s, {i.remaining:.1f}s left"
    if keys:
        doc["keys"] = i.keys or []
        rows += [[k] for k in doc["keys"]]
        line += f", keys: {', '.join(doc['keys']) or '(none)'}"
    return Output(doc, rows, line=line)


@lease.command("list")
@_options
@_run
async def lease_list(c: AsyncClient) -> Output:
    """Every live lease: its id and TTL."""
    ls = await c.leases()
    return Output([{"id": x.id, "ttl": x.ttl} for x in ls],
                  [[str(x.id), str(x.ttl)] for x in ls], ("id", "ttl"))  # fmt: skip


# -- lock and elect ---------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it if ``liferaft kv lock`` dies
    (kill -9), so the command never runs on after the lock was given up
    (Linux's PR_SET_PDEATHSIG; elsewhere it only runs until it ends)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


async def _run_child(command: tuple[str, ...], env: dict[str, str], stop: asyncio.Event,
                     lost: asyncio.Event) -> int:  # fmt: skip
    """Run ``command`` to its end; on ``stop`` or ``lost`` SIGTERM it (then
    SIGKILL after CHILD_GRACE).  Its exit status, 128+N if signal N ended it."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, preexec_fn=_die_with_parent, stdin=None
        )
    except OSError as exc:
        raise click.ClickException(f"cannot run {command[0]!r}: {exc.strerror}") from exc
    ended = asyncio.create_task(proc.wait())
    with contextlib.suppress(StopRequestedError):
        await unless_stopped(stop, unless_stopped(lost, asyncio.shield(ended)))
    if not ended.done():
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(ended), CHILD_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    rc = await ended
    return 128 - rc if rc < 0 else rc


@click.command("lock", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@TTL_OPTION
@_options
@_run
async def lock(c: AsyncClient, name: str, command: tuple[str, ...], ttl: int, fmt: str) -> None:
    """Wait for the lock NAME and hold it: while COMMAND runs (after --; exit
    with its status), or until Ctrl-C.  The command sees the lock's key and
    revision in LIFERAFT_LOCK_KEY and LIFERAFT_LOCK_REVISION (a fencing
    token).  A holder that dies loses the lock after --ttl seconds."""
    mutex = Lock(c, name, ttl=ttl)
    async with stop_on_signals() as stop:
        try:
            await unless_stopped(stop, mutex.acquire())
        except StopRequestedError:
            raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
        try:
            if command:
                env = {**os.environ, "LIFERAFT_LOCK_KEY": mutex.key,
                       "LIFERAFT_LOCK_REVISION": str(mutex.revision)}  # fmt: skip
                rc = await _run_child(command, env, stop, mutex.lost)
            else:
                doc = {"name": name, "key": mutex.key, "revision": mutex.revision}
                emit_now(Output(doc, [[mutex.key, str(mutex.revision)]],
                                line=f"holding {name} (key {mutex.key})"), fmt)  # fmt: skip
                await until_set(stop, mutex.lost)
                rc = 0
            lost = mutex.lost.is_set() and mutex.lease is not None
            reason = mutex.lease.reason if mutex.lease is not None else ""
        finally:
            await mutex.release()
    if lost:
        raise CommandFailedError(f"lost the lock {name}: {reason}")
    if rc:
        raise click.exceptions.Exit(rc)


@click.command("elect")
@click.argument("name")
@click.argument("value", required=False)
@click.option("--listen", "-l", is_flag=True, help="Print the leader's value each time it "
              "changes, without campaigning.")  # fmt: skip
@TTL_OPTION
@_options
@_run
async def elect(
    c: AsyncClient, name: str, value: str | None, listen: bool, ttl: int, fmt: str
) -> None:
    """Campaign in election NAME with VALUE and lead until Ctrl-C (then
    resign); or, with --listen, print who leads as it changes."""
    if listen == (value is not None):
        raise click.UsageError("give a VALUE to campaign, or --listen without one")
    e = Election(c, name, ttl=ttl)
    async with stop_on_signals() as stop:
        if listen:
            leaders = aiter(e.observe())
            while True:
                try:
                    v = await unless_stopped(stop, anext(leaders))
                except StopRequestedError:
                    return
                emit_now(Output({"name": name, "leader": v}, [[v]], line=v), fmt)
        assert value is not None
        try:
            await unless_stopped(stop, e.campaign(value))
        except StopRequestedError:
            raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
        try:
            doc = {"name": name, "key": e.key, "value": value, "revision": e.revision}
            emit_now(Output(doc, [[e.key, value, str(e.revision)]],
                            line=f"leading {name} as {value!r} (key {e.key})"), fmt)  # fmt: skip
            await until_set(stop, e.lost)
            reason = e.lease.reason if e.lost.is_set() and e.lease is not None else ""
        finally:
            await e.resign()
    if reason:
        raise CommandFailedError(f"lost the leadership of {name}: {reason}")


__all__ = ["elect", "lease", "lock"]
