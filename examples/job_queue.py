"""A replicated job queue: enqueue, claim with a lease, ack.  A job whose
worker dies before its ack is handed out again once the lease runs out.
One process per node; each node runs a worker, and ``--enqueue N`` makes
it add N jobs too.  Needs only ``pip install liferaft``::

    PEERS=n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103
    python examples/job_queue.py --id n1 --peers $PEERS --enqueue 10
    python examples/job_queue.py --id n2 --peers $PEERS
    python examples/job_queue.py --id n3 --peers $PEERS

kill -9 any of them (the Raft leader too) mid-job: its claimed job goes to
another worker after ``--lease`` seconds, and every job whose enqueue was
acknowledged is done.

Delivery is at least once: a worker that is slow past its lease may find
its job handed to another, and its ack refused (``ok: false``); make the
work idempotent, or fence it with the job's ``attempt``.  Enqueue takes
the caller's job id, so retrying an enqueue whose outcome is unknown
(``NodeTimeoutError``) never adds the job twice; ack is idempotent too.
Lease time is the Raft leader's clock stamped on each entry, made
monotonic, so a new leader never shortens or revives a lease.

Each line printed is JSON: ``enqueued``, ``claimed``, ``acked``; on
SIGTERM ``jobs``, the whole queue (read linearizably).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from peer_node import emit, main, make_node, parse_args, serve

from liferaft.runtime import NodeError, Replicated, command, query

PENDING, CLAIMED, DONE = "pending", "claimed", "done"


class JobQueue(Replicated):
    """Jobs by id, in enqueue order: payload, state, worker, lease end, attempts.

    claim() scans from the oldest job, which is fine for an example; a large
    queue would keep the pending ids and the lease ends in their own order."""

    __state__ = ("_jobs", "_now")

    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, dict[str, Any]] = {}
        self._now = 0.0  # the highest leader time applied: never runs backwards

    def _clock(self) -> float:
        self._now = max(self._now, self.leader_time)
        return self._now

    @command
    def enqueue(self, job_id: str, payload: Any) -> bool:
        """Add a job; False if ``job_id`` exists (a retried enqueue that had landed)."""
        if job_id in self._jobs:
            return False
        self._jobs[job_id] = {"payload": payload, "state": PENDING, "worker": None,
                              "lease_until": 0.0, "attempts": 0}
        return True

    @command
    def claim(self, worker: str, lease: float) -> dict[str, Any] | None:
        """The oldest job that is pending or whose lease ran out, now ``worker``'s
        for ``lease`` seconds; None if there is none."""
        now = self._clock()
        for job_id, job in self._jobs.items():
            if job["state"] == PENDING or (job["state"] == CLAIMED and now >= job["lease_until"]):
                # Replace, never mutate: a snapshot may share the old dict.
                self._jobs[job_id] = {**job, "state": CLAIMED, "worker": worker,
                                      "lease_until": now + lease, "attempts": job["attempts"] + 1}
                return {"id": job_id, "payload": job["payload"], "attempt": job["attempts"] + 1}
        return None

    @command
    def ack(self, worker: str, job_id: str) -> bool:
        """Mark ``worker``'s job done; False if it is not ``worker``'s (handed to
        another after the lease ran out) or unknown.  Acking twice is fine."""
        job = self._jobs.get(job_id)
        if job is None or job["worker"] != worker or job["state"] == PENDING:
            return False
        self._jobs[job_id] = {**job, "state": DONE}
        return True

    @query
    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every job by id (copies), in enqueue order."""
        return {k: dict(v) for k, v in self._jobs.items()}


async def retry(what: str, call: Any, *args: Any) -> Any:
    """``call(*args)`` until the cluster answers: safe for idempotent commands only."""
    while True:
        try:
            return await call(*args)
        except NodeError as exc:  # no leader right now, or the outcome is unknown
            emit("retry", call=what, error=type(exc).__name__)
            await asyncio.sleep(0.2)


async def produce(queue: JobQueue, args: argparse.Namespace) -> None:
    for n in range(1, args.enqueue + 1):
        job_id = f"{args.id}-{n}"
        await retry("enqueue", queue.enqueue, job_id, {"n": n})
        emit("enqueued", job=job_id)


async def work(queue: JobQueue, args: argparse.Namespace, stopping: asyncio.Event) -> None:
    producer = asyncio.create_task(produce(queue, args))
    try:
        while not stopping.is_set():
            try:
                job = await queue.claim(args.id, args.lease)
            except NodeError as exc:  # unknown outcome: if it landed, the lease frees it
                emit("retry", call="claim", error=type(exc).__name__)
                job = None
            if job is None:
                await asyncio.sleep(0.1)
                continue
            emit("claimed", worker=args.id, job=job["id"], attempt=job["attempt"],
                 at=time.time())
            await asyncio.sleep(args.work_time)  # the work goes here
            ok = await retry("ack", queue.ack, args.id, job["id"])
            emit("acked", worker=args.id, job=job["id"], ok=ok)
    finally:
        producer.cancel()
    try:
        emit("jobs", worker=args.id, jobs=await queue.jobs())
    except NodeError as exc:
        emit("jobs", worker=args.id, error=type(exc).__name__)


def _flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--enqueue", type=int, default=0, help="jobs this node adds (default 0)")
    p.add_argument("--lease", type=float, default=5.0, help="claim lease, seconds (default 5)")
    p.add_argument("--work-time", type=float, default=0.5,
                   help="seconds one job takes (default 0.5); keep it under --lease")


async def run(args: argparse.Namespace) -> None:
    if not 0 <= args.work_time < args.lease or args.enqueue < 0:
        raise SystemExit("error: need 0 <= --work-time < --lease and --enqueue >= 0")
    queue = JobQueue()
    node = make_node(args, queue)
    await serve(node, lambda stopping: work(queue, args, stopping))


if __name__ == "__main__":
    main(run(parse_args(__doc__.splitlines()[0], _flags)))
