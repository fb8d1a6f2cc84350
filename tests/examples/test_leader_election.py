"""examples/leader_election.py as three real processes.

The elected worker (on the Raft leader) is first paused with SIGSTOP, the
way a long GC pause or a cut-off machine looks: another worker takes over
in a higher term, and when the old one wakes up its next record is fenced
off (it prints ``lost``).  Then the new worker's process is killed -9, and
a third term begins.  Through it all no term has two workers, terms only
grow along the replicated history, and every unit of work the cluster
acknowledged is in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cluster import IDS, ExampleCluster, example_cluster


def _elected(c: ExampleCluster) -> list[tuple[int, str]]:
    return sorted((e["term"], e["worker"]) for nid in IDS for e in c.events(nid, "elected"))


def _did(c: ExampleCluster, worker: str | None = None) -> list[tuple[int, str, int]]:
    return [(e["term"], e["worker"], e["unit"]) for nid in IDS for e in c.events(nid, "did")
            if worker in (None, e["worker"])]


def _successor(c: ExampleCluster, after: int) -> tuple[int, str] | None:
    """The worker elected in a term above ``after``, once it did 3 units of work."""
    later = [(t, w) for t, w in _elected(c) if t > after]
    return later[-1] if later and sum(d[0] == later[-1][0] for d in _did(c)) >= 3 else None


def test_a_paused_worker_is_fenced_off_and_a_killed_one_replaced(tmp_path: Path) -> None:
    with example_cluster("leader_election.py", tmp_path) as c:
        for nid in IDS:
            c.start(nid, "--ttl", "1.0", "--interval", "0.1")
        t1, w1 = c.wait("a first worker at work", lambda: _successor(c, 0))
        # The worker campaigns only while its node leads Raft: it is the leader.
        assert c.leader() == w1

        c.pause(w1)
        t2, w2 = c.wait("a second worker at work", lambda: _successor(c, t1))
        c.pause(w1, False)
        lost = c.wait("the old worker fenced off", lambda: c.events(w1, "lost") or None)
        assert lost[0]["term"] == t1

        assert c.leader() == w2
        c.kill(w2)
        t3, w3 = c.wait("a third worker at work", lambda: _successor(c, t2))
        assert w2 not in (w1, w3) and t1 < t2 < t3

        reader = w3
        c.stop(reader)
        (dump,) = c.events(reader, "history")
        history: list[Any] = dump["work"]

    records = [tuple(r) for r in history]
    # Units are numbered in log order: nothing lost, nothing recorded twice.
    assert [u for _, _, u in records] == list(range(1, len(records) + 1))
    workers_by_term: dict[int, set[str]] = {}
    for t, w, _ in records:
        workers_by_term.setdefault(t, set()).add(w)
    assert workers_by_term.keys() >= {t1, t2, t3}
    assert all(len(ws) == 1 for ws in workers_by_term.values()), workers_by_term
    # Terms only grow along the history: no worker recorded anything after
    # its successor began, the paused one included (the term fences it off).
    terms = [t for t, _, _ in records]
    assert terms == sorted(terms), records
    # Every unit the cluster acknowledged, by all three workers, is there.
    assert set(_did(c)) <= set(records)
    # Each term was granted to one worker only, in the logs as in the history.
    elected = _elected(c)
    assert len({t for t, _ in elected}) == len(elected), elected
