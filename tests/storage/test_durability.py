"""Properties of liferaft.storage.durability.plan_save: what a crash after any
step of a save may leave on disk.

The plan is the one place that decides the order in which a Ready reaches the
disk (DiskStorage and the simulator's disks both run it), so its invariants
are checked here on their own, after every prefix of the steps of random
Readies:

* the durable commit index never points past the durable log (else
  DiskStorage refuses to open the directory);
* the durable term is never below the term of an entry on disk (Raft's
  currentTerm is at least every term in the log: a node that came back at an
  older term would campaign for a term it already led, and write a second,
  different entry with the same index and term);
* term and vote never go back;
* before a membership-change entry at q is on disk, the commit index known
  then (capped at q-1) is (rule 4); with sync_commit the commit index is on
  disk when the save ends (rule 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.core import Entry, EntryType, HardState, Snapshot, SnapshotMeta
from liferaft.storage import DiskStorage, StorageError
from liferaft.storage.durability import PutEntries, PutHardState, PutSnapshot, plan_save

OLD_TERM = 2


@dataclass
class Disk:
    """What is durable: the log's terms and types by index, and the hard state."""

    hard: HardState
    log: dict[int, tuple[int, EntryType]] = field(default_factory=dict)
    snap: int = 0

    @property
    def last(self) -> int:
        return max(self.log, default=self.snap)

    @property
    def commit(self) -> int:
        """The commit index a restart reads: a snapshot implies its own."""
        return max(self.hard.commit, self.snap)

    def do(self, step: PutSnapshot | PutEntries | PutHardState) -> None:
        if isinstance(step, PutSnapshot):
            self.snap = step.snapshot.index
            self.log = {}
        elif isinstance(step, PutEntries):
            first = step.entries[0].index
            self.log = {i: v for i, v in self.log.items() if i < first}
            self.log.update({e.index: (e.term, e.type) for e in step.entries})
        else:
            self.hard = step.hard_state


Case = tuple[Disk, int, HardState | None, list[Entry], Snapshot | None, bool]


@st.composite
def readies(draw: st.DrawFn) -> Case:
    last = draw(st.integers(1, 20))
    commit = draw(st.integers(0, last))
    old_log = {i: (1, EntryType.NORMAL) for i in range(1, last + 1)}
    disk = Disk(HardState(OLD_TERM, None, commit), old_log)
    lazy = draw(st.sampled_from([0, draw(st.integers(commit, last))]))
    known = max(commit, lazy)
    snap = None
    if draw(st.booleans()) and draw(st.booleans()):
        si = draw(st.integers(known + 1, last + 5))
        snap = Snapshot(SnapshotMeta(si, OLD_TERM + 1))
        start = si + 1
    else:
        start = draw(st.integers(known + 1, last + 1))
    new_term = draw(st.sampled_from([OLD_TERM, OLD_TERM + 1]))
    types = draw(st.lists(st.sampled_from([EntryType.NORMAL, EntryType.CONF_CHANGE]), max_size=6))
    ents = [Entry(start + i, new_term, b"", t) for i, t in enumerate(types)]
    end = ents[-1].index if ents else (snap.index if snap else last)
    floor = max(known, snap.index if snap else 0)
    new_commit = draw(st.integers(floor, max(floor, end)))
    vote = draw(st.sampled_from([None, "n1"])) if new_term > OLD_TERM else None
    changed = draw(st.booleans()) or new_term > OLD_TERM
    hs = HardState(new_term, vote, new_commit) if changed else None
    return disk, lazy, hs, ents, snap, draw(st.booleans())


def check(disk: Disk, commit: int) -> None:
    h = disk.hard
    assert h.commit <= disk.last, "commit past the durable log"
    for i, (term, etype) in disk.log.items():
        assert term <= h.term, f"entry {i} of term {term} on disk, durable term {h.term}"
        if etype is EntryType.CONF_CHANGE:
            assert disk.commit >= min(commit, i - 1), f"change at {i} on disk before commit"


@settings(max_examples=3000, deadline=None)
@given(readies())
def test_every_prefix_of_a_save_is_a_state_a_node_can_restart_from(case: Case) -> None:
    disk, lazy, hs, ents, snap, sync = case
    commit = max(disk.hard.commit, lazy, hs.commit if hs else 0)
    plan = plan_save(disk.hard, lazy, disk.last, hs, ents, snap, sync)
    term, vote = disk.hard.term, disk.hard.vote
    for step in plan.steps:
        disk.do(step)
        check(disk, commit)
        h = disk.hard
        assert h.term > term or (h.term == term and vote in (None, h.vote)), "term/vote went back"
        term, vote = h.term, h.vote
    if hs is not None:
        assert (disk.hard.term, disk.hard.vote) == (hs.term, hs.vote), "term or vote not written"
    if sync:
        assert disk.commit >= min(commit, disk.last), "sync_commit not honoured"


def test_a_refused_save_writes_nothing(tmp_path: Path) -> None:
    """Entries that do not follow the log are refused before any step runs:
    a new term written first, with a commit index past the log, would leave
    a directory DiskStorage refuses to open."""
    d = DiskStorage(tmp_path)
    d.save(HardState(1, None, 0), [Entry(i, 1, b"e") for i in range(1, 6)])
    with pytest.raises(StorageError, match="do not follow"):
        d.save(HardState(2, None, 7), [Entry(8, 2, b"gap")])
    assert d.hard.current == HardState(1, None, 0)
    d.close()
    again = DiskStorage(tmp_path)  # reopens
    assert again.last_index() == 5 and again.hard_state.term == 1
