"""An in-memory implementation of the :class:`~liferaft.core.log.LogReader` contract.

It doubles as the reference for what a durable store must do: a dummy entry
at ``ents[0]`` carries the index and term of the last compacted entry, so
``term(first_index() - 1)`` always answers.  Used by the simulator and tests;
the durable store lives in ``liferaft.storage``.
"""

from __future__ import annotations

from .errors import (
    LogCompactedError,
    LogUnavailableError,
    RaftError,
)
from .log import limit_size
from .messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta


class MemoryStorage:
    """Log entries, hard state and the latest snapshot, held in memory."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(0, 0)]

    @classmethod
    def bootstrap(cls, voters: list[str] | tuple[str, ...], data: bytes = b"") -> MemoryStorage:
        """A store for a brand-new cluster member: an initial snapshot at index 1,
        term 1, whose membership is ``voters``.  New nodes that join later start
        empty and receive this (or a newer) snapshot from the leader."""
        s = cls()
        snap = Snapshot(SnapshotMeta(1, 1, ConfState(voters=frozenset(voters))), data)
        s.apply_snapshot(snap)
        s.hard_state = HardState(term=1, vote=None, commit=1)
        return s

    # -- LogReader --------------------------------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.meta.conf_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        off = self._ents[0].index
        if index < off:
            raise LogCompactedError(f"index {index} compacted (offset {off})")
        if index - off >= len(self._ents):
            raise LogUnavailableError(f"index {index} unavailable (last {self.last_index()})")
        return self._ents[index - off].term

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        off = self._ents[0].index
        if lo <= off:
            raise LogCompactedError(f"index {lo} compacted (first index {off + 1})")
        if hi > self.last_index() + 1:
            raise LogUnavailableError(f"entries [{lo}, {hi}) beyond last {self.last_index()}")
        return limit_size(self._ents[lo - off : hi - off], max_size)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writing (the caller's side) ----------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: Snapshot | None = None,
        sync_commit: bool = False,
    ) -> None:
        """Persist one Ready's state in the contract's order: snapshot, entries,
        then hard state (the same call as liferaft.storage.DiskStorage.save)."""
        if snapshot is not None:
            self.apply_snapshot(snapshot)
        if entries:
            self.append(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with ``snap`` (an InstallSnapshot arrived)."""
        if snap.index < self._snapshot.index:
            raise RaftError(f"snapshot {snap.index} is older than {self._snapshot.index}")
        self._snapshot = snap
        self._ents = [Entry(snap.index, snap.term)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine as of applied ``index``."""
        if index <= self._snapshot.index:
            raise RaftError(f"snapshot {index} is not newer than {self._snapshot.index}")
        if index > self.last_index():
            raise LogUnavailableError(f"snapshot {index} beyond last index {self.last_index()}")
        snap = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Discard entries before ``index`` (which must be <= the snapshot's)."""
        off = self._ents[0].index
        if index <= off:
            return
        if index > self._snapshot.index:
            # (The snapshot index is never past the last index.)
            raise RaftError(f"compact {index} beyond the snapshot at {self._snapshot.index}")
        i = index - off
        self._ents = [Entry(self._ents[i].index, self._ents[i].term), *self._ents[i + 1 :]]

    def truncate_after(self, index: int) -> None:
        """Discard every entry after ``index`` (what a torn write leaves when
        a conflicting suffix was cut off and nothing of its replacement
        reached the disk)."""
        off = self._ents[0].index
        if index < off:
            raise RaftError(f"truncate after {index}: compacted (offset {off})")
        del self._ents[index - off + 1 :]

    def append(self, ents: list[Entry] | tuple[Entry, ...]) -> None:
        """Append, first truncating any suffix the new entries replace."""
        if not ents:
            return
        first = self.first_index()
        last = ents[-1].index
        if last < first:
            return
        if first > ents[0].index:
            ents = ents[first - ents[0].index :]
        off = ents[0].index - self._ents[0].index
        n = len(self._ents)
        if off == n:
            self._ents.extend(ents)
        elif off < n:
            del self._ents[off:]
            self._ents.extend(ents)
        else:
            raise LogUnavailableError(
                f"missing log entry: last {self.last_index()}, appending at {ents[0].index}"
            )
