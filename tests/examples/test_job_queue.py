"""examples/job_queue.py as three real processes, each a worker, through a
kill -9 of the Raft leader while its worker holds a job: that job is handed
out again and done by another worker, every acknowledged enqueue is done,
and no job is acked by two workers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .cluster import IDS, ExampleCluster, example_cluster

LEASE = 1.5
WORK = 0.4


def _acked(c: ExampleCluster) -> dict[str, list[str]]:
    """job -> the workers whose ack the cluster accepted."""
    out: dict[str, list[str]] = {}
    for nid in IDS:
        for e in c.events(nid, "acked"):
            if e["ok"]:
                out.setdefault(e["job"], []).append(e["worker"])
    return out


def _in_flight(c: ExampleCluster, nid: str) -> dict[str, Any] | None:
    """``nid``'s latest claim if not acked yet and young enough that the ack
    cannot come within the next WORK / 2 seconds."""
    claims = c.events(nid, "claimed")
    if not claims or claims[-1]["job"] in _acked(c):
        return None
    return claims[-1] if time.time() - claims[-1]["at"] < WORK / 2 else None


def test_a_dead_workers_job_is_handed_out_again(tmp_path: Path) -> None:
    with example_cluster("job_queue.py", tmp_path) as c:
        for nid in IDS:
            c.start(nid, "--enqueue", "5", "--lease", str(LEASE), "--work-time", str(WORK))
        leader = c.wait("a leader", c.leader)
        held = c.wait("a job in the leader's hands", lambda: _in_flight(c, leader))
        c.kill(leader)
        enqueued = {e["job"] for nid in IDS for e in c.events(nid, "enqueued")}
        assert held["job"] not in _acked(c)

        c.wait("every acknowledged job done", lambda: enqueued <= set(_acked(c)) or None)
        reader = next(nid for nid in IDS if nid != leader)
        c.stop(reader)
        (dump,) = c.events(reader, "jobs")
        jobs: dict[str, Any] = dump["jobs"]
        claims = {(e["job"], e["worker"], e["attempt"])
                  for nid in IDS for e in c.events(nid, "claimed")}

    assert len(enqueued) >= 5  # at least the survivors' own jobs went in
    assert all(jobs[j]["state"] == "done" for j in enqueued), jobs
    # The job the dead worker held went to a survivor after its lease.
    again = jobs[held["job"]]
    assert again["attempts"] >= 2 and again["worker"] != leader
    assert (held["job"], again["worker"], again["attempts"]) in claims
    # Exactly one accepted ack per job, by the worker the queue records.
    acked = _acked(c)
    assert all(len(ws) == 1 and ws[0] == jobs[j]["worker"] for j, ws in acked.items()), acked
