"""The Raft log: a stable prefix read through storage plus an unstable tail.

Theory of operation
-------------------
Entries the core has accepted but the caller has not yet persisted live in
:class:`Unstable`; everything persisted is read back through a
:class:`LogReader` (the storage layer's contract).  An unstable snapshot, when
present, replaces the whole log before it.  The indices line up like this::

    storage:   [first_index .......... last_index]
    unstable:                  [offset ......... ]   (may overlap storage's
                                                      tail: it wins, being newer)

``committed`` and ``applied`` are kept here too: ``applied <= committed <=
last_index`` always holds.  A committed entry is never overwritten (§5.4);
an attempt raises LogCorruptionError.
"""

from __future__ import annotations

from typing import Protocol

from .errors import LogCompactedError, LogCorruptionError, LogUnavailableError
from .messages import ENTRY_OVERHEAD, ConfState, Entry, HardState, Snapshot, entries_size


class LogReader(Protocol):
    """What the core needs from storage.  Implementations must be consistent:
    ``term(first_index() - 1)`` is the term of the last compacted entry (the
    snapshot's), and entries in [first_index, last_index] are contiguous.

    The core calls these only from its own thread of control; storage may be
    appended to by the caller between calls, but only after the core handed
    the entries out in a Ready.
    """

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_size: int | None = None) -> list[Entry]:
        """Entries in [lo, hi), at least one if any, at most ``max_size`` bytes.
        Raises LogCompactedError if lo < first_index()."""
        ...

    def term(self, index: int) -> int:
        """Term of entry ``index``; valid from first_index()-1 to last_index().
        Raises LogCompactedError or LogUnavailableError outside that range."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot.  May raise SnapshotTemporarilyUnavailableError."""
        ...


def limit_size(ents: list[Entry], max_size: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_size`` bytes, never empty."""
    if max_size is None or len(ents) <= 1 or entries_size(ents) <= max_size:
        return ents
    # They do not all fit, so the loop stops at the first entry that overflows.
    total = 0
    i = 0
    for i, e in enumerate(ents):  # noqa: B007 - i is used after the loop
        total += len(e.data) + ENTRY_OVERHEAD
        if total > max_size:
            break
    return ents[: max(i, 1)]


class Unstable:
    """Entries and snapshot not yet persisted by the caller."""

    __slots__ = ("snapshot", "entries", "offset")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        # Index of entries[0].
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        return self.snapshot.index + 1 if self.snapshot is not None else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.index == i:
                return self.snapshot.term
            return None
        n = i - self.offset
        if n < len(self.entries):
            return self.entries[n].term
        return None

    def stable_to(self, index: int, term: int) -> None:
        """The caller persisted entries up to (index, term)."""
        t = self.maybe_term(index)
        # Only if the entry is still the one handed out: a leader change may
        # have replaced it in the meantime.
        if t == term and index >= self.offset:
            del self.entries[: index + 1 - self.offset]
            self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry] | tuple[Entry, ...]) -> None:
        first = ents[0].index
        end = self.offset + len(self.entries)
        if first == end:
            self.entries.extend(ents)
        elif first <= self.offset:
            # Replaces everything unstable; storage truncates its own suffix
            # when these entries are persisted.
            self.offset = first
            self.entries = list(ents)
        else:
            del self.entries[first - self.offset :]
            self.entries.extend(ents)

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    """The log as the protocol sees it (stable + unstable), with commit/apply marks."""

    __slots__ = ("storage", "unstable", "committed", "applied")

    def __init__(self, storage: LogReader) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Everything up to the snapshot is committed and applied by definition.
        self.committed = first - 1
        self.applied = first - 1

    def __repr__(self) -> str:
        return (
            f"RaftLog(committed={self.committed}, applied={self.applied}, "
            f"unstable.offset={self.unstable.offset}, len(unstable)={len(self.unstable.entries)})"
        )

    # -- bounds ---------------------------------------------------------------

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int:
        """Term of entry ``i``; raises LogCompactedError/LogUnavailableError."""
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        dummy = self.first_index() - 1
        if i < dummy:
            raise LogCompactedError(f"index {i} is compacted (first index {dummy + 1})")
        if i > self.last_index():
            raise LogUnavailableError(f"index {i} is beyond the last index {self.last_index()}")
        return self.storage.term(i)

    def term_or_zero(self, i: int) -> int:
        try:
            return self.term(i)
        except (LogCompactedError, LogUnavailableError):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, term: int) -> bool:
        try:
            return self.term(i) == term
        except (LogCompactedError, LogUnavailableError):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a log is at least as up to date as ours if its last term is
        later, or the same and it is at least as long."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    # -- reading ----------------------------------------------------------------

    def slice(self, lo: int, hi: int, max_size: int | None) -> list[Entry]:
        """Entries in [lo, hi) limited to ``max_size`` bytes (at least one)."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise LogCompactedError(f"index {lo} is compacted (first index {first})")
        if hi > self.last_index() + 1:
            raise LogUnavailableError(f"slice [{lo}, {hi}) beyond last index {self.last_index()}")
        off = self.unstable.offset
        if lo >= off:
            return limit_size(self.unstable.slice(lo, hi), max_size)
        ents = self.storage.entries(lo, min(hi, off), max_size)
        if hi > off and len(ents) == min(hi, off) - lo:
            ents = ents + self.unstable.slice(off, hi)
            return limit_size(ents, max_size)
        return ents

    def entries_from(self, i: int, max_size: int | None) -> list[Entry]:
        last = self.last_index()
        if i > last:
            return []
        return self.slice(i, last + 1, max_size)

    def stable_last_index(self) -> int:
        """The last index the caller has persisted (unstable entries excluded)."""
        u = self.unstable
        if u.entries:
            return u.offset - 1
        # A pending snapshot replaces the log: nothing of the new one is on disk.
        return 0 if u.snapshot is not None else self.last_index()

    def has_next_committed(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)

    def next_committed(self, max_size: int | None) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed + 1 > lo:
            return self.slice(lo, self.committed + 1, max_size)
        return []

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # -- conflict search --------------------------------------------------------

    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry in ``ents`` whose term differs from ours, or
        the first new index past our log, or 0 if all are already present.

        Only indices we hold need comparing: entries past our last index are
        new, not conflicting.  This is the rule "truncate only at the first
        real conflict" (§5.3, receiver implementation step 3).
        """
        if not ents:
            return 0
        last = self.last_index()
        for e in ents:
            if e.index > last:
                return e.index
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest (i, t) with i <= index in our log whose term t <= ``term``.

        Used for fast backtracking: every index after it is certain to
        mismatch a log whose entry at ``index`` has ``term``.
        """
        i = min(index, self.last_index())
        while i > 0:
            try:
                t = self.term(i)
            except LogCompactedError:
                break
            if t <= term:
                return i, t
            i -= 1
        return max(i, 0), self.term_or_zero(max(i, 0))

    # -- writing ----------------------------------------------------------------

    def append(self, ents: list[Entry] | tuple[Entry, ...]) -> int:
        if not ents:
            return self.last_index()
        if ents[0].index - 1 < self.committed:
            raise LogCorruptionError(
                f"append at {ents[0].index} would overwrite committed index {self.committed}"
            )
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def maybe_append(
        self, prev_index: int, prev_term: int, commit: int, ents: tuple[Entry, ...]
    ) -> int | None:
        """Follower side of AppendEntries (§5.3).  Returns the last index now
        known to match the leader, or None if (prev_index, prev_term) does not
        match our log."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise LogCorruptionError(
                    f"entry {ci} conflicts with committed entry (committed={self.committed})"
                )
            self.append(ents[ci - prev_index - 1 :])
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise LogCorruptionError(
                    f"commit {index} is beyond the last index {self.last_index()}"
                )
            self.committed = index

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = index

    def stable_to(self, index: int, term: int) -> None:
        self.unstable.stable_to(index, term)

    def stable_snap_to(self, index: int) -> None:
        self.unstable.stable_snap_to(index)

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.index
        self.unstable.restore(snap)
