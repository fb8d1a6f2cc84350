"""What the simulator's driver and its fault families share.

:class:`RunState` is the bookkeeping of one seed's run (the cluster, the one
random generator, fault counts, retired nodes); the
:class:`~liferaft.sim.runner.Driver` is one, and each fault family
(:mod:`.nemesis`, :mod:`.churn`) is a :class:`DriverPart` that reads and
updates it, so the families stay small and draw every random choice from
the seed's one ``rng``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import Cluster


class RunState:
    """The state of one seed's run that the driver and its fault families share."""

    def __init__(self, c: Cluster, rng: random.Random, nodes: int) -> None:
        self.c = c
        self.rng = rng
        # Room to grow: a one-voter cluster grows to three and five.
        self.max_nodes = max(nodes + 2, 5)
        self.next_id = nodes + 1
        self.retired: set[str] = set()
        self.churned = False
        self.faults: dict[str, int] = {}
        self.counter = 0
        self.stopped = False

    def count(self, what: str) -> None:
        self.faults[what] = self.faults.get(what, 0) + 1

    def same_life(self, nid: str, life: int) -> bool:
        """Is the run still on and ``nid`` still in the life it was in?  (For
        faults scheduled to strike a little later.)"""
        return not self.stopped and self.c.nodes[nid].lives == life

    def live_ids(self) -> list[str]:
        """Nodes that are part of the run (up or crashed), not retired ones."""
        return sorted(n for n in self.c.nodes if n not in self.retired)

    @property
    def crashed(self) -> list[str]:
        # Includes nodes the cluster crashed in the middle of a Ready.
        return [n for n in self.live_ids() if not self.c.nodes[n].alive]


class DriverPart:
    """A family of fault kinds, working on a run's :class:`RunState`."""

    def __init__(self, d: RunState) -> None:
        self.d = d
        self.c: Cluster = d.c
        self.rng: random.Random = d.rng

    def _count(self, what: str) -> None:
        self.d.count(what)

    def _same_life(self, nid: str, life: int) -> bool:
        return self.d.same_life(nid, life)

    def live_ids(self) -> list[str]:
        return self.d.live_ids()

    @property
    def crashed(self) -> list[str]:
        return self.d.crashed

    @property
    def stopped(self) -> bool:
        return self.d.stopped

    def ops(self, kinds: tuple[str, ...] | list[str]) -> dict[str, Callable[[], None]]:
        """This family's fault methods among ``kinds`` (by kind name)."""
        return {k: getattr(self, "_" + k) for k in kinds if hasattr(self, "_" + k)}
