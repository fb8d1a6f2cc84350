"""What ``liferaft cluster up`` checks and holds before it starts a node.

A node that dies at start (a port someone else holds, a token file with a
typo) used to leave ``up`` watching ``n1=down`` forever; so every mistake
``up`` can see from outside is refused here, in one line, before any
process exists.  And two ``up`` in one directory must not both start nodes
on the same data dirs, which a check of the pid registry alone cannot
promise (both may read "nothing runs" before either writes it): ``up``
holds an exclusive lock on DIR/cluster.lock for as long as it runs; the
kernel drops it when the process ends, however it ends, so it is never
stale.
"""

from __future__ import annotations

import fcntl
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO

import click

from liferaft.harness.ports import can_listen
from liferaft.harness.serve import ServeNode
from liferaft.kv.serve import ServeError, load_token

LOCK = "cluster.lock"


@contextmanager
def dir_lock(directory: Path) -> Iterator[IO[str]]:
    """Hold DIR/cluster.lock, or refuse: another ``cluster up`` runs there."""
    path = directory / LOCK
    try:
        f = open(path, "a")  # noqa: SIM115 (held for the with block)
    except OSError as exc:
        raise click.ClickException(f"--dir {directory}: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise click.ClickException(
                f"a cluster already runs on {directory} (another `cluster up` holds {path}); "
                f"stop it with `liferaft cluster down --dir {directory}`"
            ) from None
        yield f
    finally:
        f.close()  # closing the file drops the lock


def check_ports(nodes: list[ServeNode]) -> None:
    """Refuse, naming it, an address something already listens on."""
    for n in nodes:
        named = [("peer", n.peer), ("client", n.client), ("gRPC", n.grpc)]
        for what, addr in [(w, a) for w, a in named if a]:
            if not can_listen(int(addr.rsplit(":", 1)[1])):
                raise click.ClickException(
                    f"{addr} ({n.id}'s {what} address) is in use by another process; "
                    "choose another --base-port"
                )


def check_token_file(path: Path) -> None:
    """Refuse the token file every node would refuse (missing, empty, open
    to others), with the node's own words."""
    try:
        load_token(path)
    except ServeError as exc:
        raise click.ClickException(str(exc)) from exc


class StopSignalError(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived while ``up`` was not yet (or no longer)
    watching: unwind as Ctrl-C does, through the code that stops the nodes."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise StopSignalError(signal.Signals(signum).name)


# The nodes run in their own sessions (a terminal's Ctrl-C reaches only
# `up`), so a hangup or SIGTERM that ends `up` without its cleanup would
# leave them running, orphaned.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP unwind ``up`` (see :class:`StopSignalError`) within the
    block; every handler is as it was after it (``up`` may run in-process,
    under click's test runner)."""
    saved = {sig: signal.getsignal(sig) for sig in (*STOP_SIGNALS, signal.SIGINT)}
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def ignore_signals() -> None:
    """While the nodes are being stopped: an impatient second signal must
    not end ``up`` halfway (``cluster down`` escalates to SIGKILL anyway)."""
    for sig in (*STOP_SIGNALS, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
