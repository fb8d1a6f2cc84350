"""A distributed lock with fencing tokens: three workers take turns writing to one resource.

Each worker is one process and one Raft node.  They contend for the named
lock ``ledger`` of a :class:`~liferaft.runtime.ReplicatedLockManager`; the
holder appends a line to a shared ledger file, passing its fencing token.
Needs only ``pip install liferaft``::

    PEERS=n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103
    python examples/lock_fencing.py --id n1 --peers $PEERS --ledger /tmp/ledger.txt
    python examples/lock_fencing.py --id n2 --peers $PEERS --ledger /tmp/ledger.txt
    python examples/lock_fencing.py --id n3 --peers $PEERS --ledger /tmp/ledger.txt

Kill any of them (``kill -9``, the Raft leader included): the other two go on
taking turns, and the tokens in the ledger keep growing.

Why fencing.  A lock is a lease: it ends ``--ttl`` seconds (of the Raft
leader's clock) after the holder last refreshed it, so a crashed holder
cannot block the others for ever.  But a holder that merely *paused* (GC,
swap, SIGSTOP, a slow network) past its lease wakes up still believing it
holds the lock, while someone else does.  The token stops its late write:
every grant's token is the log index of the granting entry, so it is higher
than any earlier grant's, and the resource (:class:`FencedLedger` here; in
real life your database or storage service) refuses a token lower than the
highest it has accepted.

Each line printed is JSON: ``leader`` (this node became the Raft leader),
``wrote`` / ``refused`` (a write to the ledger with its token), ``waiting``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import random
import signal
import sys
from pathlib import Path
from typing import Any

from liferaft.runtime import (
    Event,
    EventType,
    Node,
    NodeConfig,
    NodeError,
    ReplicatedLockManager,
)
from liferaft.storage import StorageError
from liferaft.transport import TcpTransport


def emit(kind: str, **fields: Any) -> None:
    """One JSON line on stdout (the test reads them back)."""
    print(json.dumps({"event": kind, **fields}), flush=True)


class FencedLedger:
    """The guarded resource: a file that refuses a token lower than the highest it took.

    Lines are ``token writer`` (a write) and ``token writer done`` (the
    holder's turn ended, just before it releases the lock): two turns that
    overlap show as a write between another writer's write and its
    ``done``.  A real resource keeps the highest token in the same
    transaction as the write; here an exclusive ``flock`` does.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.touch()

    def write(self, token: int, writer: str) -> bool:
        with open(self.path, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            lines = f.read().split("\n")
            highest = max((int(line.split()[0]) for line in lines if line.strip()), default=0)
            if token < highest:
                return False  # a stale holder: its lease ended, someone else wrote since
            f.write(f"{token} {writer}\n")
            f.flush()
            return True

    def finish(self, token: int, writer: str) -> None:
        """Record the end of ``writer``'s turn (for whoever checks the turns)."""
        with open(self.path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            f.write(f"{token} {writer} done\n")


async def work(args: argparse.Namespace) -> None:
    peers = dict(item.split("=", 1) for item in args.peers.split(","))
    locks = ReplicatedLockManager(ttl=args.ttl)
    tick = 0.05
    config = NodeConfig(
        id=args.id,  # the node id and cluster id are given once, here
        cluster_id="lock-demo",
        tick_interval=tick,
        election_ticks=max(4, round(args.election_timeout / tick)),
    )
    node = Node(
        config,
        [locks],  # a list: more replicated objects could sit beside the locks
        TcpTransport(listen_addr=peers[args.id]),
        data_dir=Path(args.data_dir),
        initial_members=peers,
    )

    def on_event(ev: Event) -> None:
        if ev.type is EventType.STATE_CHANGE and ev.value == "leader":
            emit("leader", node=args.id, term=ev.term)

    ledger = FencedLedger(Path(args.ledger))
    async with node:  # start() now, stop() on the way out, however it goes
        node.events.on(on_event)
        lock = locks.lock("ledger")
        while True:
            try:
                token = await lock.acquire(timeout=2 * args.ttl)
            except TimeoutError:
                emit("waiting", node=args.id)
                continue
            try:
                ok = ledger.write(token, args.id)
                emit("wrote" if ok else "refused", node=args.id, token=token)
                await asyncio.sleep(args.hold)
                if ok:
                    ledger.finish(token, args.id)
            finally:
                with contextlib.suppress(NodeError):
                    await lock.release()
            await asyncio.sleep(random.uniform(0, args.hold))  # let the others have a turn


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--id", required=True, help="this node's id, one of --peers")
    p.add_argument("--peers", required=True, help="id=host:port,... for every node")
    p.add_argument("--data-dir", help="where this node keeps its log (default: ./data-ID)")
    p.add_argument("--ledger", default="ledger.txt", help="the shared file the lock guards")
    p.add_argument("--ttl", type=float, default=2.0, help="lease length, seconds")
    p.add_argument("--hold", type=float, default=0.1, help="how long each turn lasts, seconds")
    p.add_argument("--election-timeout", type=float, default=1.0, help="seconds")
    args = p.parse_args(argv)
    if args.data_dir is None:
        args.data_dir = f"data-{args.id}"
    try:
        peers = dict(item.split("=", 1) for item in args.peers.split(","))
    except ValueError:
        p.error("--peers must be id=host:port,id=host:port,...")
    if args.id not in peers:
        p.error(f"--id {args.id!r} is not in --peers ({', '.join(peers)})")
    if args.ttl <= 0 or args.hold < 0 or args.election_timeout <= 0:
        p.error("--ttl and --election-timeout must be > 0, --hold >= 0")
    return args


def main() -> None:
    args = parse_args(sys.argv[1:])

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await work(args)

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run())
    except (OSError, ValueError, NodeError, StorageError) as exc:
        # A port in use, a data dir it cannot use or that holds another
        # program's state: one line and exit 1, not a traceback.
        sys.exit(f"error: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
