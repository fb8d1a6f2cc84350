"""What the simulator's fault families share with their driver.

A :class:`DriverPart` reads the run's cluster, randomness and bookkeeping
from the :class:`~liferaft.sim.runner.Driver` that owns it, so the fault
families (:mod:`.nemesis`, :mod:`.churn`) stay small and draw every random
choice from the one ``rng`` of the seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cluster import Cluster
    from .runner import Driver


class DriverPart:
    """A family of fault kinds, run by a :class:`~liferaft.sim.runner.Driver`."""

    def __init__(self, d: Driver) -> None:
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
