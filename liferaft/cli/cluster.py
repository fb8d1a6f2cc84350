"""``liferaft cluster up``: a local cluster of real ``liferaft serve``
processes on 127.0.0.1, with a live status table.  Ctrl-C (or ``liferaft
cluster down`` from another terminal) stops every process it started, by
PID; running it again resumes the same data.

The processes are a :class:`liferaft.harness.serve.ServeCluster`, the one
process harness.  ``up`` records its own PID and its nodes' in
DIR/cluster.pids (:mod:`liferaft.harness.pidfile`), which is how ``down``
finds exactly those processes and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from liferaft.harness import pidfile
from liferaft.harness.procs import tail
from liferaft.harness.serve import ServeCluster, ServeNode
from liferaft.transport.secret import SecretError, ensure_secret_file, read_secret_file

from . import cluster_preflight as preflight
from .output import Output, emit, write_out_options

# The name of the supervising `cluster up` process in the pid registry.
SUPERVISOR = "cluster-up"


@dataclass
class Member(ServeNode):
    """A node of ``cluster up``, and the cluster that runs it."""

    owner: ServeCluster | None = field(default=None, repr=False)


class _Nodes(ServeCluster):
    node_class = Member


def plan(nodes: int, base: Path, base_port: int) -> list[Member]:
    """Node i is n<i>, peers on base_port+i, clients on base_port+1000+i,
    etcd's gRPC API on base_port+2000+i.

    Own session for every node: the terminal's Ctrl-C reaches only us, and
    we stop the nodes in order (SIGTERM, then SIGKILL after a grace period)."""
    c = _Nodes(base, new_session=True, grpc=True)
    members = [m for m in c.add_nodes(nodes, base_port=base_port) if isinstance(m, Member)]
    for m in members:
        m.owner = c
    return members


def start(m: Member, cluster: str, extra: list[str]) -> None:
    """Start one node of the cluster ``cluster`` (n1=peer,...) with ``extra`` flags."""
    assert m.owner is not None
    m.mode = ["--initial-cluster", cluster]
    m.flags = list(extra)
    m.owner.start(m.id)


def stop(members: list[Member], grace: float = 10.0) -> None:
    """End every process the members' cluster started, by PID (SIGTERM,
    then SIGKILL after ``grace``)."""
    for owner in {id(m.owner): m.owner for m in members if m.owner is not None}.values():
        owner.close(grace)


async def _poll(http: aiohttp.ClientSession, m: Member) -> dict[str, Any] | None:
    try:
        async with http.get(f"http://{m.client}/v1/status") as r:
            if r.status == 200:
                data: dict[str, Any] = await r.json()
                return data
    except (aiohttp.ClientError, TimeoutError, ValueError):
        pass
    return None


def table(members: list[Member], status: dict[str, dict[str, Any] | None]) -> Table:
    t = Table(title="liferaft cluster (Ctrl-C stops it)")
    for col in ("node", "pid", "role", "term", "leader", "commit", "applied", "lag", "client"):
        t.add_column(col)
    leader_st = next(
        (s for s in status.values() if s is not None and s.get("role") == "leader"), None
    )
    for m in members:
        s = status.get(m.id)
        pid = str(m.proc.pid) if m.proc else "-"
        if m.proc is not None and m.proc.poll() is not None:
            t.add_row(
                m.id, pid, Text(f"exited ({m.proc.returncode})", style="red"), *["-"] * 5, m.client
            )
            continue
        if s is None:
            t.add_row(m.id, pid, Text("starting", style="yellow"), *["-"] * 5, m.client)
            continue
        lag = "-"
        if leader_st is not None:
            p = leader_st.get("peers", {}).get(m.id)
            if p is not None:
                lag = str(p["lag"])
        role = s["role"]
        style = {"leader": "bold green", "follower": "cyan"}.get(role, "yellow")
        t.add_row(
            m.id,
            pid,
            Text(role, style=style),
            str(s["term"]),
            str(s["leader"] or "-"),
            str(s["commit_index"]),
            str(s["applied_index"]),
            lag,
            m.client,
        )
    return t


def exits(members: list[Member], reported: set[str]) -> list[str]:
    """One message for each node that exited since the last call and not
    at our asking (a bad flag, a port taken meanwhile, a crash, a kill -9):
    its status and the end of its log, which says why.  The table alone
    showed "exited"; the plain lines only "down"."""
    out = []
    for m in members:
        if m.proc is None or m.proc.poll() is None or m.expected_exit or m.id in reported:
            continue
        reported.add(m.id)
        out.append(
            f"{m.id} (pid {m.pid}) exited with {m.proc.returncode}; the end of its log "
            f"{m.log}:\n{tail(m.log, 10)}"
        )
    return out


def console_url(members: list[Member], status: dict[str, dict[str, Any] | None]) -> str | None:
    """The web console on the first member that answers (every node serves
    /ui/ on its client port; n1 unless it failed to start).  No token in
    it: the page asks for one."""
    for m in members:
        if status.get(m.id) is not None:
            return f"http://{m.client}/ui/"
    return None


async def watch(members: list[Member], console: Console, live_table: bool) -> None:
    stop_ev = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, *preflight.STOP_SIGNALS):
        loop.add_signal_handler(sig, stop_ev.set)
    hint = Text.from_markup(
        f"Try, in another terminal:  [bold]liferaft kv put greeting hello "
        f"--endpoints {','.join(m.client for m in members)}[/]\n"
        f"or with etcdctl:  [bold]etcdctl --endpoints {members[0].grpc} get greeting[/]\n"
        f"Logs and data: {members[0].data.parent}"
    )
    timeout = aiohttp.ClientTimeout(total=0.5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        status: dict[str, dict[str, Any] | None] = {}
        ctx = Live(console=console, auto_refresh=False) if live_table else contextlib.nullcontext()
        with ctx as live:
            last_line = ""
            url: str | None = None
            reported: set[str] = set()
            while not stop_ev.is_set():
                for text in exits(members, reported):
                    console.print(text)
                got = await asyncio.gather(*(_poll(http, m) for m in members))
                status = {m.id: s for m, s in zip(members, got, strict=True)}
                if url is None and (url := console_url(members, status)) is not None:
                    # Once, when a node first answers: before, there is no page.
                    hint.append(f"\nconsole: {url}", style="bold")
                    if live is None:
                        console.print(f"console: {url}", soft_wrap=True)
                if live is not None:
                    live.update(Group(table(members, status), hint), refresh=True)
                else:
                    line = " ".join(
                        f"{nid}={(s or {}).get('role', 'down')}" for nid, s in status.items()
                    )
                    if line != last_line:
                        console.print(line)
                        last_line = line
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_ev.wait(), 0.5)


def _peer_secret(directory: Path) -> Path:
    """The cluster's secret file in ``directory``: made on the first run,
    reused on every later one (a restarted node must prove the same secret)."""
    try:
        path = ensure_secret_file(directory)
        read_secret_file(path)  # refuse one that others can read, before any node starts
    except SecretError as exc:
        raise click.ClickException(str(exc)) from exc
    return path


# The cluster's directory: data, logs, the peer secret and the pid registry.
DIR_OPTION = click.option(
    "--dir",
    "directory",
    default="./liferaft-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The cluster's directory: data, logs, the peer secret and the pid registry.",
)


@click.group()
def cluster() -> None:
    """A local cluster of real processes."""


@cluster.command("up")
@click.option(
    "--nodes", default=3, show_default=True, type=click.IntRange(1, 9), help="How many nodes."
)
@DIR_OPTION
@click.option(
    "--base-port",
    default=7000,
    show_default=True,
    type=click.IntRange(1024, 60000),
    help="Node i: peers on BASE+i, clients on BASE+1000+i, etcd gRPC on BASE+2000+i.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="Passed to every node (checked first: missing, empty or open to others is refused).",
)
@click.option("--no-table", is_flag=True, help="Plain lines instead of the live table.")
def up(nodes: int, directory: Path, base_port: int, token_file: str | None, no_table: bool) -> None:
    """Start NODES `liferaft serve` processes on 127.0.0.1 and watch them.

    Peers authenticate with a cluster secret kept in DIR/peer-secret (made on
    the first run, mode 0600); the client API needs a token only with
    --token-file."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"--dir {directory}: {exc.strerror or exc}") from exc
    with preflight.dir_lock(directory.resolve()), preflight.stop_on_signals():
        _up(nodes, directory, base_port, token_file, no_table)


def _up(
    nodes: int, directory: Path, base_port: int, token_file: str | None, no_table: bool
) -> None:
    """``up`` once it holds DIR's lock, SIGTERM and SIGHUP unwinding it."""
    registry = directory.resolve() / pidfile.NAME
    try:
        already = [e for e in pidfile.read(registry) if e.running()]
    except pidfile.PidfileError as exc:
        raise click.ClickException(str(exc)) from exc
    if already:  # e.g. nodes a killed `up` left behind: they hold the data dirs
        names = ", ".join(f"{e.name} (pid {e.pid})" for e in already)
        raise click.ClickException(
            f"a cluster already runs on {directory}: {names}; stop it with "
            f"`liferaft cluster down --dir {directory}`"
        )
    members = plan(nodes, directory.resolve(), base_port)
    preflight.check_ports(list(members))
    if token_file:
        preflight.check_token_file(Path(token_file))
    spec = ",".join(f"{m.id}={m.peer}" for m in members)
    extra = ["--peer-secret-file", str(_peer_secret(directory.resolve()))]
    if token_file:
        extra += ["--token-file", os.path.abspath(token_file)]
    console = Console()
    # Recorded before the first node starts and again after each: a `down`
    # at any moment finds `up` (whose cleanup stops what it started) and
    # every node started so far.
    pids: dict[str, int] = {SUPERVISOR: os.getpid()}
    try:
        pidfile.write(registry, pids)
        for m in members:
            start(m, spec, extra)
            if m.child is not None:
                pids[m.id] = m.pid
                pidfile.write(registry, pids)
        asyncio.run(watch(members, console, live_table=not no_table and console.is_terminal))
    finally:
        preflight.ignore_signals()
        console.print("stopping the nodes...")
        stop(members)
        with contextlib.suppress(OSError):
            registry.unlink()
        console.print(
            "stopped: "
            + ", ".join(
                f"{m.id} (pid {m.pid}, exit {m.proc.returncode})" for m in members if m.proc
            )
        )


@cluster.command("down")
@DIR_OPTION
@click.option("--grace", default=15.0, show_default=True, help="Seconds before SIGKILL.")
@write_out_options()
def down(directory: Path, grace: float, fmt: str) -> None:
    """Stop the cluster `cluster up --dir DIR` runs (from another terminal).

    Signals only the processes recorded in DIR/cluster.pids that still run
    (a PID the kernel reused for another process is told apart by its start
    time): first `cluster up` itself, which stops its nodes in order, then
    any node left over (say, after `cluster up` was killed).  -w simple
    prints one line per process stopped: its name and PID."""
    registry = directory.resolve() / pidfile.NAME
    try:
        entries = pidfile.read(registry)
    except pidfile.PidfileError as exc:
        raise click.ClickException(str(exc)) from exc
    stopped = [e for e in entries if e.running()]
    pidfile.stop([e for e in entries if e.name == SUPERVISOR], grace)
    pidfile.stop([e for e in entries if e.name != SUPERVISOR], grace)
    with contextlib.suppress(OSError):
        registry.unlink()
    line = (
        "stopped: " + ", ".join(f"{e.name} (pid {e.pid})" for e in stopped)
        if stopped
        else f"no cluster runs on {directory}"
    )
    data = {"dir": str(directory), "stopped": [{"name": e.name, "pid": e.pid} for e in stopped]}
    emit(Output(data, [[e.name, str(e.pid)] for e in stopped], line=line), fmt)
