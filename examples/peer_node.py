"""What the one-process-per-node examples share: the command line of one
node, starting it, printing what it does, and stopping it on SIGTERM.

Each example (config_service.py, leader_election.py, job_queue.py) runs as
one process per node, started the same way on every machine::

    python examples/job_queue.py --id n1 \
        --peers n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103

``--peers`` names every member of the cluster and its peer address (the
same string on every node); ``--data-dir`` is where this node keeps its log
(default ``./data-<id>``): restart a node with the same one and it resumes.

The peer port here has no secret: keep it on loopback, or give every node a
``TcpTransport(..., peer_secret=...)`` or mutual TLS (docs/transport.md).

Every line a node prints is one JSON object (``emit``), so a program (or
the tests in tests/examples/) can follow what happened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from liferaft.runtime import EventType, Node, NodeConfig, NodeError, StateMachine
from liferaft.storage import StorageError
from liferaft.transport import TcpTransport

#: The election timeout in seconds (ticks of NodeConfig.tick_interval).
TICK = 0.05


def emit(event: str, **fields: Any) -> None:
    """Print one JSON line and flush it (stdout may be a pipe or a file)."""
    print(json.dumps({"event": event, **fields}), flush=True)


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None,
               argv: list[str] | None = None) -> argparse.Namespace:
    """``--id``, ``--peers``, ``--data-dir``, ``--election-timeout``, plus the
    example's own flags (``extra``); a bad value exits 2 with one line."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--id", required=True, help="this node's id, one of --peers")
    p.add_argument("--peers", required=True, help="id=host:port,... for every member")
    p.add_argument("--data-dir", help="where this node keeps its log (default ./data-ID)")
    p.add_argument("--election-timeout", type=float, default=1.0,
                   help="seconds without a leader before an election (default 1.0)")
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    peers = {}
    for item in args.peers.split(","):
        nid, sep, addr = item.strip().partition("=")
        if not sep or not nid or ":" not in addr:
            p.error(f"--peers: {item!r} is not id=host:port")
        peers[nid] = addr
    if args.id not in peers:
        p.error(f"--id {args.id!r} is not one of --peers ({', '.join(peers)})")
    if args.election_timeout < 3 * TICK:
        p.error(f"--election-timeout must be at least {3 * TICK} s")
    args.peers = peers
    args.data_dir = args.data_dir or f"data-{args.id}"
    return args


def make_node(args: argparse.Namespace, state_machine: StateMachine) -> Node:
    """A node for ``args`` over TCP; it prints a ``role`` line at every change."""
    config = NodeConfig(id=args.id, tick_interval=TICK,
                        election_ticks=max(3, round(args.election_timeout / TICK)))
    transport = TcpTransport(args.id, "examples", args.peers[args.id])
    node = Node(config, state_machine, transport, data_dir=args.data_dir,
                initial_members=args.peers)

    def on_event(ev: Any) -> None:
        if ev.type is EventType.STATE_CHANGE:
            emit("role", node=args.id, role=ev.value, term=ev.term)

    node.events.on(on_event)
    return node


async def serve(node: Node, work: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Start ``node``, run ``work(stopping)`` until SIGTERM or SIGINT sets
    ``stopping``, then stop the node (pending calls fail with StoppedError)."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await node.start()
    emit("started", node=node.id)
    task = asyncio.create_task(work(stopping))
    try:
        await stopping.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), 5.0)  # let it finish its turn
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await node.stop()
        emit("stopped", node=node.id)


def main(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro``; a startup error is one line and exit 1: a port in use, a
    data dir that is unreadable or holds another program's state (its
    snapshot is refused with a ValueError before anything is touched)."""
    try:
        asyncio.run(coro)
    except (OSError, ValueError, NodeError, StorageError) as exc:
        sys.exit(f"error: {type(exc).__name__}: {exc}")
