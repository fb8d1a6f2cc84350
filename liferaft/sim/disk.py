"""A simulated disk with exactly the durability of liferaft.storage.DiskStorage.

Theory of operation
-------------------
A node persists each Ready with :meth:`NodeDisk.save`, the same call the
runtime makes on :class:`~liferaft.storage.DiskStorage`.  Both disks run the
plan of :func:`liferaft.storage.durability.plan_save`: a few steps
(snapshot, entries, hard state), each durable when it completes, and a
commit index that is only kept in memory (*lazy*) unless the plan writes it.
So a crash keeps what the real store would keep:

* every completed step;
* of the step under way when the crash hit, nothing, or for an entry
  append a prefix of its entries (a torn write);
* no lazy commit index: the node restarts with the commit index of the last
  hard-state write (or of its snapshot).

A crash can hit between two Readies (:meth:`crash`) or inside a save
(:meth:`arm_crash` before it: the save raises :class:`DiskCrashed` at a
random step).  :class:`SimDisk` keeps the log in a MemoryStorage and is
fast; :class:`~liferaft.sim.realdisk.RealDisk` runs DiskStorage itself on
real files under FaultFS and tears bytes, not entries.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from liferaft.core import ConfState, Entry, HardState, MemoryStorage, Snapshot
from liferaft.storage import durability
from liferaft.storage.durability import PutEntries, PutSnapshot, Step


class DiskCrashed(Exception):
    """The node lost power in the middle of a save."""


class NodeDisk(Protocol):
    """What the simulator needs from a node's disk (SimDisk, or RealDisk on files)."""

    # The store the core reads: a MemoryStorage or a liferaft.storage.DiskStorage.
    live: Any
    # False plants the "forget-vote" bug: a hard-state write drops the vote.
    persist_vote: bool

    def save(
        self,
        hs: HardState | None,
        entries: list[Entry],
        snap: Snapshot | None,
        sync_commit: bool = False,
    ) -> None: ...
    def arm_crash(self, rng: random.Random) -> None: ...
    def durable_commit(self) -> int: ...
    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot: ...
    def compact(self, index: int) -> None: ...
    def crash(self, rng: random.Random) -> int: ...
    def recover(self) -> Any: ...


def pick_crash_step(rng: random.Random, n_steps: int) -> tuple[int, bool]:
    """Where a crash inside a save hits: the step (0..n_steps, n_steps meaning
    right after the last), and whether it hits *during* that step rather
    than before it.  During an entry append, the WAL has already cut off any
    conflicting suffix (durably) and a prefix of the new records survives."""
    return rng.randint(0, n_steps), rng.random() < 0.5


def run_plan(
    steps: list[Step],
    do: Callable[[Step], None],
    tear: Callable[[PutEntries, random.Random], None],
    done: Callable[[], None],
    rng: random.Random | None,
) -> None:
    """Carry out a save plan's steps with ``do``, then ``done()``.  With an
    armed ``rng``, lose power at a random point instead (DiskCrashed): before
    a step, during one (``tear`` leaves what a torn entry append leaves), or
    right after the last."""
    at, during = pick_crash_step(rng, len(steps)) if rng is not None else (-1, False)
    for i, step in enumerate(steps):
        if i == at:
            if during and isinstance(step, PutEntries) and rng is not None:
                tear(step, rng)
            raise DiskCrashed
        do(step)
    done()
    if at == len(steps):
        raise DiskCrashed


class SimDisk:
    """A node's log in a MemoryStorage, with DiskStorage's durability."""

    def __init__(self, initial: MemoryStorage) -> None:
        # Every completed step is durable, so the store the node reads is the
        # durable log; only the hard state differs (the lazy commit index).
        self.live = initial
        self.hard = initial.hard_state  # the hard state on "disk"
        self.lazy_commit = 0
        self.persist_vote = True
        self.syncs = 0
        self._crash_rng: random.Random | None = None

    @property
    def durable(self) -> MemoryStorage:
        """The durable store, as a restart would read it (for building a RealDisk)."""
        self.live.hard_state = self.hard
        return self.live

    def durable_commit(self) -> int:
        return max(self.hard.commit, self.live.snapshot().index)

    def arm_crash(self, rng: random.Random) -> None:
        self._crash_rng = rng

    def save(
        self,
        hs: HardState | None,
        entries: list[Entry],
        snap: Snapshot | None,
        sync_commit: bool = False,
    ) -> None:
        st = self.live
        cur = self.hard
        plan = durability.plan_save(
            HardState(cur.term, cur.vote, self.durable_commit()),
            self.lazy_commit,
            st.last_index(),
            hs,
            entries,
            snap,
            sync_commit,
        )
        def do(step: Step) -> None:
            if isinstance(step, PutSnapshot):
                st.apply_snapshot(step.snapshot)
            elif isinstance(step, PutEntries):
                st.append(step.entries)
            else:
                h = step.hard_state
                self.hard = h if self.persist_vote else HardState(h.term, None, h.commit)
            self.syncs += 1

        def tear(step: PutEntries, rng: random.Random) -> None:
            first = step.entries[0].index
            if first <= st.last_index():
                st.truncate_after(first - 1)  # WAL.append cuts the suffix first
            k = rng.randint(0, len(step.entries) - 1)
            if k:
                st.append(step.entries[:k])  # then a prefix of the records lands

        def done() -> None:
            self.lazy_commit = max(self.lazy_commit, plan.lazy_commit)

        rng, self._crash_rng = self._crash_rng, None
        run_plan(plan.steps, do, tear, done, rng)
        # What the node reads back while it runs includes the lazy commit.
        st.hard_state = HardState(
            hs.term if hs else cur.term,
            hs.vote if hs else cur.vote,
            max(self.hard.commit, self.lazy_commit),
        )

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        return self.live.create_snapshot(index, conf, data)

    def compact(self, index: int) -> None:
        self.live.compact(index)

    def crash(self, rng: random.Random) -> int:
        """Power loss: the lazy commit index is gone.  Returns it (0: nothing lost)."""
        lost = self.lazy_commit
        self.lazy_commit = 0
        self._crash_rng = None
        self.live.hard_state = self.hard
        return lost

    def recover(self) -> MemoryStorage:
        """The store a restarted node reads: exactly what is durable."""
        self.live.hard_state = self.hard
        return self.live
