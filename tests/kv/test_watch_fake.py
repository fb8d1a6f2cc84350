"""A fake MVCC store for the watch hub's tests (the LMDB store provides the
same WatchHistory later), and the checks that it keeps that contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from liferaft.kv.watch_types import CompactedError, EventKind, KeyRange, KeyValue, WatchEvent


class FakeStore:
    """Revisions of events kept in memory; ``history`` is a lazy generator
    that takes its "read snapshot" (the revision it stops at) on the first
    ``next``, as an LMDB read transaction opened late would."""

    def __init__(self) -> None:
        self.revs: list[list[WatchEvent]] = [[]]  # revs[r]: the events of revision r
        self.state: dict[bytes, KeyValue] = {}
        self.compacted = 1

    @property
    def revision(self) -> int:
        return len(self.revs) - 1

    @property
    def compact_revision(self) -> int:
        return self.compacted

    def write(self, ops: list[tuple[bytes, bytes | None]]) -> list[WatchEvent]:
        """One revision: put (value) or delete (None) each key, in order;
        every key at most once.  Returns its events."""
        rev = self.revision + 1
        evs = []
        for key, value in ops:
            prev = self.state.get(key)
            if value is None:
                self.state.pop(key, None)
                kv = KeyValue(key=key, value=b"", create_revision=0, mod_revision=rev, version=0)
                evs.append(WatchEvent(rev, EventKind.DELETE, key, kv, prev))
            else:
                kv = KeyValue(
                    key=key, value=value, create_revision=prev.create_revision if prev else rev,
                    mod_revision=rev, version=prev.version + 1 if prev else 1,
                )
                self.state[key] = kv
                evs.append(WatchEvent(rev, EventKind.PUT, key, kv, prev))
        self.revs.append(evs)
        return evs

    def put(self, key: bytes, value: bytes) -> list[WatchEvent]:
        return self.write([(key, value)])

    def compact(self, rev: int) -> None:
        self.compacted = rev

    def history(self, start_rev: int, key_range: KeyRange) -> Iterator[WatchEvent]:
        if start_rev < self.compacted:
            raise CompactedError(start_rev, self.compacted)
        upto = self.revision
        for rev in range(start_rev, upto + 1):
            if rev < self.compacted:  # compacted while the replay ran
                raise CompactedError(start_rev, self.compacted)
            for ev in self.revs[rev]:
                if ev.key in key_range:
                    yield ev

    def expected(self, start: int, key_range: KeyRange, prev_kv: bool) -> list[WatchEvent]:
        """What a watcher from ``start`` must get, in order."""
        return [
            ev if prev_kv else ev.without_prev()
            for evs in self.revs[start:]
            for ev in evs
            if ev.key in key_range
        ]


def test_fake_history_is_lazy_ordered_and_compacts() -> None:
    s = FakeStore()
    s.put(b"a", b"1")
    s.write([(b"b", b"1"), (b"a", b"2")])
    it = s.history(1, KeyRange.single(b"a"))
    s.put(b"a", b"3")  # before the first next: inside the read
    assert [(e.revision, e.kv.value) for e in it] == [(1, b"1"), (2, b"2"), (3, b"3")]
    assert s.revs[3][0].kv.version == 3 and s.revs[3][0].prev_kv == s.revs[2][1].kv
    s.compact(2)
    with pytest.raises(CompactedError) as e:
        next(s.history(1, KeyRange.prefix(b"")))
    assert e.value.compact_revision == 2
