"""Leader election for a worker pool: of the workers, one at a time does the
work; when it dies, another takes over.  One process per worker, each a
Raft node.  Needs only ``pip install liferaft``::

    PEERS=n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103
    python examples/leader_election.py --id n1 --peers $PEERS
    python examples/leader_election.py --id n2 --peers $PEERS
    python examples/leader_election.py --id n3 --peers $PEERS

How it works.  The pool's leadership is a lease in a replicated state
machine (:class:`Pool`), granted with a *term*: a number that grows by one
with every grant.  A worker campaigns while its own node is the Raft
leader (so the elected worker usually sits next to the log); it is elected
once no other worker holds an unexpired lease.  The elected worker then
does one unit of work at a time and records it with its term; the record
also renews the lease.  A record with a term that is not the latest, or
whose lease ran out, is refused, so a worker that was paused or cut off
(and does not know it lost) cannot record work after its successor began:
the term is a fencing token (docs/statemachine.md).  Pass it to whatever
the work touches, and have that refuse a lower one.

Lease time is the Raft leader's clock stamped on each entry
(``Replicated.leader_time``), made monotonic, so a new leader with a
lagging clock never extends a dead worker's lease.

Each line printed is JSON: ``elected``, ``did`` (one unit of work,
acknowledged by the cluster), ``lost``; on SIGTERM a ``history`` of every
recorded unit (read linearizably).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from peer_node import emit, main, make_node, parse_args, serve

from liferaft.runtime import Node, NodeError, Replicated, command, query


class Pool(Replicated):
    """Who leads the pool (worker, term, lease end) and the work it recorded."""

    __state__ = ("_leader", "_term", "_expires_at", "_now", "_work")

    def __init__(self) -> None:
        super().__init__()
        self._leader: str | None = None
        self._term = 0  # the latest term granted; the fencing token
        self._expires_at = 0.0  # leader time at which the lease ends
        self._now = 0.0  # the highest leader time applied: never runs backwards
        self._work: list[list[Any]] = []  # [term, worker, unit], in log order

    def _clock(self) -> float:
        self._now = max(self._now, self.leader_time)
        return self._now

    @command
    def campaign(self, worker: str, ttl: float) -> int | None:
        """Lead for ``ttl`` seconds: the new term, or None while another's lease runs."""
        now = self._clock()
        if self._leader not in (None, worker) and now < self._expires_at:
            return None
        self._term += 1
        self._leader, self._expires_at = worker, now + ttl
        return self._term

    @command
    def record(self, worker: str, term: int, ttl: float) -> int | None:
        """Record the next unit of work done in ``term`` and renew the lease;
        the unit's number, or None if ``term`` no longer leads (fenced off)."""
        now = self._clock()
        if self._leader != worker or term != self._term or now >= self._expires_at:
            return None
        self._expires_at = now + ttl
        self._work.append([term, worker, len(self._work) + 1])
        return len(self._work)

    @query
    def history(self) -> list[list[Any]]:
        """Every recorded unit: ``[term, worker, unit]``, in the order recorded."""
        return [list(w) for w in self._work]


async def work_loop(node: Node, pool: Pool, args: argparse.Namespace,
                    stopping: asyncio.Event) -> None:
    """Campaign while this node leads Raft; once elected, work until fenced off."""
    me, term = args.id, None
    while not stopping.is_set():
        try:
            if term is None:
                if node.is_leader:
                    term = await pool.campaign(me, args.ttl)
                    if term is not None:
                        emit("elected", worker=me, term=term)
            else:
                # The work itself goes here (guard what it touches with `term`).
                unit = await pool.record(me, term, args.ttl)
                if unit is None:
                    emit("lost", worker=me, term=term)
                    term = None
                else:
                    emit("did", worker=me, term=term, unit=unit)
        except NodeError as exc:  # no leader for now, or the outcome is unknown: try again
            emit("retry", worker=me, error=type(exc).__name__)
        pause = args.interval if term is not None else args.ttl / 4
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), pause)
    try:
        emit("history", worker=me, work=await pool.history())
    except NodeError as exc:
        emit("history", worker=me, error=type(exc).__name__)


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ttl", type=float, default=2.0, help="lease, seconds (default 2)")
    p.add_argument("--interval", type=float, default=0.2,
                   help="seconds between units of work (default 0.2); keep it well under --ttl")


async def run(args: argparse.Namespace) -> None:
    if not 0 < args.interval < args.ttl:
        raise SystemExit("error: need 0 < --interval < --ttl")
    pool = Pool()
    node = make_node(args, pool)
    await serve(node, lambda stopping: work_loop(node, pool, args, stopping))


if __name__ == "__main__":
    main(run(parse_args(__doc__.splitlines()[0], _flags)))
