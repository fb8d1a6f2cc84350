"""The coordination half of a soak: its clients, its watchers, its verdict.

:class:`Coordination` runs the transaction clients and lease holders of
:mod:`.coord` and the watchers of :mod:`.streams` beside the register and
set workloads (which record into the same revisioned history), and after
the run checks (docs/chaos.md, "Revisions, watches and leases"):

- the whole revisioned history with the revision-order checker, the values
  the watches saw helping to place indeterminate writes
  (:func:`liferaft.verify.check_revisions`);
- every watch stream against what each revision did
  (:func:`liferaft.verify.check_watches`);
- every lease against its keep-alives, with the nemesis's leaderless
  intervals (:func:`liferaft.verify.check_leases`).

A watcher has the end of the run to catch up with the final revision, so
its stream is checked up to there.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from liferaft.verify import (
    LeaseRecord,
    LeaseReport,
    RevReport,
    WatchReport,
    check_leases,
    check_revisions,
    check_watches,
    seen_from,
)
from liferaft.verify.rev_history import rev_to_json

from .api import Query
from .cluster import ChaosCluster
from .coord import LEASE_PREFIX, TXN_PREFIX, LeaseHolder, RevLog, lease_records, rev_client
from .streams import Watcher


@dataclass
class CoordVerdict:
    """The three reports, and what else went wrong (a watch ended by
    compaction, a watcher that never caught up, an answer the contract
    does not allow)."""

    rev: RevReport
    watch: WatchReport
    lease: LeaseReport
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rev.ok and self.watch.ok and self.lease.ok and not self.problems

    def messages(self, most: int = 20) -> list[str]:
        out = self.rev.violations[:most] + self.watch.messages[:most] + self.lease.messages[:most]
        return out + self.problems


class Coordination:
    """The coordination clients of one soak (module docstring)."""

    def __init__(
        self,
        c: ChaosCluster,
        rng: random.Random,
        consistency: str = "linearizable",
        txn_clients: int = 2,
        holders: int = 2,
    ) -> None:
        self.c = c
        self.rng = rng
        self.consistency = consistency
        self.log = RevLog()
        self.txn_clients = txn_clients
        base = 100  # process numbers apart from the register and set clients'
        self.holders = [
            LeaseHolder(c, self.log, base + txn_clients + i, random.Random(rng.random()))
            for i in range(holders)
        ]
        self.watchers = [
            Watcher(c, 1, TXN_PREFIX, random.Random(rng.random())),
            Watcher(c, 2, LEASE_PREFIX, random.Random(rng.random())),
            Watcher(c, 3, "r0", random.Random(rng.random()), prefix=False),
            # Every key: busy enough that a resume after a pause replays more
            # than one batch (256 events) while live ones arrive.
            Watcher(c, 4, "", random.Random(rng.random()), prev_kv=False),
        ]
        self.problems: list[str] = []

    def tasks(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        out = [
            asyncio.create_task(rev_client(self.c, self.log, 100 + i,
                                           random.Random(self.rng.random()), stop,
                                           consistency=self.consistency))  # fmt: skip
            for i in range(self.txn_clients)
        ]
        out += [asyncio.create_task(h.run(stop)) for h in self.holders]
        out += [asyncio.create_task(w.run(stop)) for w in self.watchers]
        return out

    async def catch_up(self, budget: float = 30.0) -> None:
        """After healing: every watcher on to the store's current revision."""
        revision = 0
        for nid in self.c.members:
            st, body = await self.c.api.range(nid, Query(TXN_PREFIX, True, count_only=True), 5)
            if st == 200 and isinstance(body, dict):
                revision = int(body["revision"])
                break
        if not revision:
            self.problems.append("no node answered for the final revision")
            return
        done = await asyncio.gather(*(w.catch_up(revision, budget) for w in self.watchers))
        for w, ok in zip(self.watchers, done, strict=True):
            if not ok:
                self.problems.append(f"watch {w.id} of {w.key!r} reached revision {w.last}, "
                                     f"not {revision}, within {budget:g} s")  # fmt: skip

    def check(self, leaderless: list[tuple[float, float]]) -> CoordVerdict:
        streams = [w.stream() for w in self.watchers]
        rev = check_revisions(self.log.history, seen_from(streams))
        watch = check_watches(streams, rev.changes)
        lease = check_leases(self._leases(), leaderless)
        problems = list(self.problems)
        problems += [f"watch {w.id}: {w.ended}" for w in self.watchers if w.ended]
        problems += [f"unexpected: {k} (x{v})" for k, v in self.log.unexpected.items()]
        return CoordVerdict(rev, watch, lease, problems)

    def _leases(self) -> list[LeaseRecord]:
        gone: dict[str, float] = {}
        for w in self.watchers:
            for k, t in w.deleted.items():
                gone[k] = min(t, gone.get(k, t))
        return lease_records(self.holders, gone)

    def summary(self) -> str:
        return (f"coordination: lease holders died {sum(h.deaths for h in self.holders)}x, "
                f"revoked {sum(h.revokes for h in self.holders)}x; watch reconnects "
                f"{sum(max(0, w.connects - 1) for w in self.watchers)} "
                f"({sum(w.drops for w in self.watchers)} dropped on purpose)")  # fmt: skip

    def save(self, out: Path, leaderless: list[tuple[float, float]]) -> None:
        """``rev_history.json``, ``watches.json`` and ``leases.json``, for
        ``python -m liferaft.verify revisions|leases`` to re-check."""
        (out / "rev_history.json").write_text(json.dumps(rev_to_json(self.log.history)))
        (out / "watches.json").write_text(json.dumps([asdict(w.stream()) for w in self.watchers]))
        leases = {"leases": [asdict(x) for x in self._leases()], "leaderless": leaderless}
        (out / "leases.json").write_text(json.dumps(leases))
