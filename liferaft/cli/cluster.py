"""``liferaft cluster up``: a local cluster of real ``liferaft serve``
processes on 127.0.0.1, with a live status table.  Ctrl-C stops every
process it started (by PID); running it again resumes the same data."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from liferaft.kv.serve import serve_argv
from liferaft.transport.secret import SecretError, ensure_secret_file, read_secret_file


@dataclass
class Member:
    id: str
    peer: str
    client: str
    data: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    logf: IO[bytes] | None = None


def plan(nodes: int, base: Path, base_port: int) -> list[Member]:
    """Node i is n<i>, peers on base_port+i, clients on base_port+1000+i."""
    return [
        Member(
            f"n{i}",
            f"127.0.0.1:{base_port + i}",
            f"127.0.0.1:{base_port + 1000 + i}",
            base / f"n{i}",
            base / f"n{i}.log",
        )
        for i in range(1, nodes + 1)
    ]


def start(m: Member, cluster: str, extra: list[str]) -> None:
    m.data.mkdir(parents=True, exist_ok=True)
    m.logf = open(m.log, "ab")  # noqa: SIM115 (closed in stop())
    cmd = serve_argv(m.id, m.data, m.peer, m.client, "--initial-cluster", cluster, *extra)
    # Own process group: the terminal's Ctrl-C reaches only us, and we stop
    # the nodes in order (SIGTERM, then SIGKILL after a grace period).
    m.proc = subprocess.Popen(
        cmd,
        stdout=m.logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(members: list[Member], grace: float = 10.0) -> None:
    for m in members:
        if m.proc is not None and m.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                m.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for m in members:
        if m.proc is None:
            continue
        try:
            m.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                m.proc.kill()
            m.proc.wait()
        if m.logf is not None:
            m.logf.close()


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


async def watch(members: list[Member], console: Console, live_table: bool) -> None:
    stop_ev = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_ev.set)
    hint = Text.from_markup(
        f"Try, in another terminal:  [bold]liferaft kv put greeting hello "
        f"--endpoints {','.join(m.client for m in members)}[/]\n"
        f"Logs and data: {members[0].data.parent}"
    )
    timeout = aiohttp.ClientTimeout(total=0.5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        status: dict[str, dict[str, Any] | None] = {}
        ctx = Live(console=console, auto_refresh=False) if live_table else contextlib.nullcontext()
        with ctx as live:
            last_line = ""
            while not stop_ev.is_set():
                got = await asyncio.gather(*(_poll(http, m) for m in members))
                status = {m.id: s for m, s in zip(members, got, strict=True)}
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


@click.group()
def cluster() -> None:
    """A local cluster of real processes."""


@cluster.command("up")
@click.option("--nodes", default=3, show_default=True, type=click.IntRange(1, 9))
@click.option(
    "--dir",
    "directory",
    default="./liferaft-data",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option(
    "--base-port",
    default=7000,
    show_default=True,
    type=click.IntRange(1024, 60000),
    help="Node i: peers on BASE+i, clients on BASE+1000+i.",
)
@click.option("--token-file", type=click.Path(dir_okay=False), help="Passed to every node.")
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
    members = plan(nodes, directory.resolve(), base_port)
    spec = ",".join(f"{m.id}={m.peer}" for m in members)
    extra = ["--peer-secret-file", str(_peer_secret(directory.resolve()))]
    if token_file:
        extra += ["--token-file", os.path.abspath(token_file)]
    console = Console()
    try:
        for m in members:
            start(m, spec, extra)
        asyncio.run(watch(members, console, live_table=not no_table and console.is_terminal))
    finally:
        console.print("stopping the nodes...")
        stop(members)
        console.print(
            "stopped: "
            + ", ".join(
                f"{m.id} (pid {m.proc.pid}, exit {m.proc.returncode})" for m in members if m.proc
            )
        )
