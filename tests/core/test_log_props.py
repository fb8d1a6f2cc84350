"""Properties of the log layer (RaftLog, Unstable, MemoryStorage, limit_size)
checked against plain-list reference models.

The stateful test drives a RaftLog over a MemoryStorage through the moves the
protocol makes - leader appends, follower maybe_append, persisting (whole or
partial), commit, apply, compaction, snapshot restore - and after every move
compares every read (term, slice, find_conflict, find_conflict_by_term,
is_up_to_date, next_committed) with a dictionary model of the logical log.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from liferaft.core import (
    ConfState,
    Entry,
    LogCompactedError,
    LogCorruptionError,
    LogUnavailableError,
    MemoryStorage,
    RaftError,
    Snapshot,
    SnapshotMeta,
)
from liferaft.core.log import RaftLog, Unstable, limit_size
from liferaft.core.messages import ENTRY_OVERHEAD

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- reference helpers ---------------------------------------------------------------------


def ref_limit_size(ents: list[Entry], max_size: int | None) -> list[Entry]:
    """Naive: grow the prefix while it fits; always keep at least one."""
    if max_size is None:
        return list(ents)
    out: list[Entry] = []
    for e in ents:
        size = sum(len(x.data) + ENTRY_OVERHEAD for x in [*out, e])
        if out and size > max_size:
            break
        out.append(e)
    return out


entries_st = st.lists(
    st.builds(lambda n, t: Entry(0, t, b"x" * n), st.integers(0, 40), st.integers(1, 5)),
    max_size=8,
).map(lambda es: [Entry(i + 1, e.term, e.data) for i, e in enumerate(es)])


@SETTINGS
@given(entries_st, st.one_of(st.none(), st.integers(0, 200)))
def test_limit_size_matches_reference(ents, max_size):
    got = limit_size(ents, max_size)
    assert got == ref_limit_size(ents, max_size)
    if ents:
        assert got  # never empty
        assert got == ents[: len(got)]


def test_limit_size_examples():
    ents = [Entry(i, 1, b"x" * 4) for i in range(1, 5)]  # 20 bytes each
    assert limit_size(ents, None) == ents
    assert limit_size(ents, 0) == ents[:1]
    assert limit_size(ents, 39) == ents[:1]
    assert limit_size(ents, 40) == ents[:2]
    assert limit_size(ents, 1000) == ents
    assert limit_size(ents[:1], 0) == ents[:1]
    assert limit_size([], 5) == []


# -- the model-based state machine ---------------------------------------------------------


class LogMachine(RuleBasedStateMachine):
    """RaftLog over MemoryStorage vs. a dict model of the logical log."""

    def __init__(self) -> None:
        super().__init__()
        self.storage = MemoryStorage()
        self.storage.apply_snapshot(Snapshot(SnapshotMeta(1, 1, ConfState())))
        self.log = RaftLog(self.storage)
        # Model: the snapshot point and the entries after it.
        self.snap_index, self.snap_term = 1, 1
        self.ents: dict[int, Entry] = {}
        self.committed = 1
        self.applied = 1
        self.uid = 0

    # model helpers
    @property
    def last(self) -> int:
        return self.snap_index + len(self.ents)

    def term_at(self, i: int) -> int | None:
        if i == self.snap_index:
            return self.snap_term
        e = self.ents.get(i)
        return e.term if e is not None else None

    def last_term(self) -> int:
        t = self.term_at(self.last)
        assert t is not None
        return t

    def new_entry(self, index: int, term: int, size: int) -> Entry:
        self.uid += 1
        return Entry(index, term, b"%d:" % self.uid + b"d" * size)

    def model_replace_from(self, ents: list[Entry]) -> None:
        start = ents[0].index
        for i in list(self.ents):
            if i >= start:
                del self.ents[i]
        for e in ents:
            self.ents[e.index] = e

    # -- moves ---------------------------------------------------------------------

    @rule(data=st.data())
    def leader_append(self, data):
        lo = max(self.committed, 1)
        start = data.draw(
            st.one_of(st.just(self.last + 1), st.integers(lo, self.last + 1)), label="start"
        )
        n = data.draw(st.integers(1, 5), label="n")
        base = self.term_at(start - 1) or 1
        term = data.draw(st.integers(base, base + 2), label="term")
        sizes = data.draw(st.lists(st.integers(0, 30), min_size=n, max_size=n), label="sizes")
        ents = [self.new_entry(start + k, term, sizes[k]) for k in range(n)]
        if start - 1 < self.committed:
            with pytest.raises(LogCorruptionError):
                self.log.append(ents)
            return
        assert self.log.append(ents) == ents[-1].index
        self.model_replace_from(ents)

    @rule()
    def append_nothing(self):
        assert self.log.append([]) == self.last

    @rule(data=st.data())
    def follower_maybe_append(self, data):
        prev = data.draw(
            st.one_of(
                st.integers(self.snap_index, self.last),
                st.integers(max(self.snap_index - 1, 0), self.last + 2),
            ),
            label="prev",
        )
        known = self.term_at(prev)
        if known is not None and not data.draw(st.booleans(), label="mismatch"):
            prev_term = known
        else:
            prev_term = data.draw(st.integers(0, 7), label="prev_term")
        n = data.draw(st.integers(0, 4), label="n")
        ents: list[Entry] = []
        term = prev_term
        for k in range(n):
            idx = prev + 1 + k
            own = self.term_at(idx)
            if own is not None and own >= term and not data.draw(st.booleans(), label="diverge"):
                ents.append(self.ents[idx] if idx in self.ents else Entry(idx, own))
                term = own
            else:
                term = data.draw(st.integers(max(term, 1), max(term, 1) + 2), label="t")
                ents.append(self.new_entry(idx, term, data.draw(st.integers(0, 20))))
        commit = data.draw(
            st.one_of(st.just(self.last), st.integers(0, self.last + 5)), label="commit"
        )

        # Reference.
        if self.term_at(prev) != prev_term:
            assert self.log.maybe_append(prev, prev_term, commit, tuple(ents)) is None
            return
        conflict = next((e for e in ents if self.term_at(e.index) != e.term), None)
        if conflict is not None and conflict.index <= self.committed:
            with pytest.raises(LogCorruptionError):
                self.log.maybe_append(prev, prev_term, commit, tuple(ents))
            return
        # find_conflict agrees with the reference before the append.
        assert self.log.find_conflict(ents) == (conflict.index if conflict else 0)
        got = self.log.maybe_append(prev, prev_term, commit, tuple(ents))
        last_new = prev + len(ents)
        assert got == last_new
        if conflict is not None:
            self.model_replace_from(ents[conflict.index - prev - 1 :])
        self.committed = max(self.committed, min(commit, last_new))

    @rule(data=st.data())
    def persist(self, data):
        u = self.log.unstable
        if u.snapshot is not None:
            snap = u.snapshot
            self.storage.apply_snapshot(snap)
            self.log.stable_snap_to(snap.index)
            self.log.applied_to(snap.index)
            self.applied = max(self.applied, snap.index)
        if u.entries:
            k = data.draw(st.integers(1, len(u.entries)), label="k")
            part = list(u.entries[:k])
            self.storage.append(part)
            self.log.stable_to(part[-1].index, part[-1].term)
            assert u.offset == part[-1].index + 1

    @rule()
    def persist_commit_apply_everything(self):
        """What a quiet Ready cycle does: everything persisted, committed, applied."""
        u = self.log.unstable
        if u.snapshot is not None:
            self.storage.apply_snapshot(u.snapshot)
            self.log.stable_snap_to(u.snapshot.index)
        if u.entries:
            last = u.entries[-1]
            self.storage.append(list(u.entries))
            self.log.stable_to(last.index, last.term)
        self.log.commit_to(self.last)
        self.log.applied_to(self.last)
        self.committed = self.applied = self.last

    @rule(data=st.data())
    def stale_stable_to(self, data):
        """stable_to for an entry that is not (or no longer) the unstable one is a no-op."""
        u = self.log.unstable
        before = (u.offset, list(u.entries))
        i = data.draw(st.integers(0, self.last + 2), label="i")
        t = self.term_at(i)
        wrong = data.draw(st.integers(0, 9).filter(lambda x: x != t), label="wrong")
        self.log.stable_to(i, wrong)
        if i < u.offset and t is not None:
            self.log.stable_to(i, t)  # already stable: also a no-op
        self.log.stable_snap_to(i if u.snapshot is None or i != u.snapshot.index else i + 1)
        assert (u.offset, list(u.entries)) == before

    @rule(data=st.data())
    def commit_to(self, data):
        i = data.draw(st.integers(0, self.last + 3), label="i")
        if i > self.committed and i > self.last:
            with pytest.raises(LogCorruptionError):
                self.log.commit_to(i)
            return
        self.log.commit_to(i)
        self.committed = max(self.committed, i)

    @rule(data=st.data())
    def apply(self, data):
        i = data.draw(st.integers(0, self.committed), label="i")
        self.log.applied_to(i)
        self.applied = max(self.applied, i)

    @precondition(lambda self: self.log.unstable.snapshot is None)
    @rule(data=st.data())
    def compact(self, data):
        lo = self.storage.snapshot().index + 1
        # Only what was persisted and applied can be snapshotted.
        hi = min(self.applied, self.storage.last_index(), self.log.unstable.offset - 1)
        if lo > hi:
            return
        i = data.draw(st.integers(lo, hi), label="i")
        snap = self.storage.create_snapshot(i, ConfState(), b"img%d" % i)
        assert (snap.index, snap.term) == (i, self.term_at(i))
        self.storage.compact(i)
        for j in list(self.ents):
            if j <= i:
                del self.ents[j]
        self.snap_index, self.snap_term = i, snap.term

    @rule(data=st.data())
    def restore(self, data):
        if data.draw(st.integers(0, 3), label="rarely") != 3:
            return
        i = data.draw(st.integers(self.committed + 1, self.last + 3), label="i")
        t = data.draw(st.integers(1, 7), label="t")
        snap = Snapshot(SnapshotMeta(i, t, ConfState()), b"s")
        self.log.restore(snap)
        assert self.log.snapshot() == snap
        self.snap_index, self.snap_term = i, t
        self.ents = {}
        self.committed = i

    # -- checks ---------------------------------------------------------------------

    @invariant()
    def bounds_and_terms(self):
        log = self.log
        assert log.first_index() == self.snap_index + 1
        assert log.last_index() == self.last
        assert log.committed == self.committed
        assert log.applied == self.applied
        assert log.applied <= log.committed <= log.last_index()
        for i in range(self.snap_index, self.last + 1):
            assert log.term(i) == self.term_at(i)
            assert log.match_term(i, self.term_at(i))
        assert log.last_term() == self.last_term()
        with pytest.raises(LogUnavailableError):
            log.term(self.last + 1)
        assert log.term_or_zero(self.last + 1) == 0
        assert not log.match_term(self.last + 1, self.last_term())
        if self.snap_index > 0:
            with pytest.raises(LogCompactedError):
                log.term(self.snap_index - 1)

    @invariant()
    def storage_agrees_below_unstable(self):
        u = self.log.unstable
        assert u.offset <= self.storage.last_index() + 1 or u.snapshot is not None
        for i in range(max(self.storage.first_index(), self.snap_index + 1), u.offset):
            if i > self.storage.last_index():
                break
            assert self.storage.term(i) == self.term_at(i)

    @invariant()
    def slices(self):
        first, last = self.snap_index + 1, self.last
        for lo in range(first - 1, last + 2):
            for hi in (lo, lo + 1, lo + 3, last + 1, last + 2):
                for max_size in (None, 0, 40, 100):
                    if lo >= hi:
                        assert self.log.slice(lo, hi, max_size) == []
                    elif lo < first:
                        with pytest.raises(LogCompactedError):
                            self.log.slice(lo, hi, max_size)
                    elif hi > last + 1:
                        with pytest.raises(LogUnavailableError):
                            self.log.slice(lo, hi, max_size)
                    else:
                        want = ref_limit_size([self.ents[i] for i in range(lo, hi)], max_size)
                        assert self.log.slice(lo, hi, max_size) == want
        assert self.log.entries_from(last + 1, None) == []
        if last >= first:
            want = [self.ents[i] for i in range(first, last + 1)]
            assert self.log.entries_from(first, None) == want

    @invariant()
    def committed_for_apply(self):
        lo = max(self.applied, self.snap_index) + 1
        want = [self.ents[i] for i in range(lo, self.committed + 1)]
        assert self.log.has_next_committed() == bool(want)
        assert self.log.next_committed(None) == want
        if want:
            assert self.log.next_committed(0) == want[:1]

    @invariant()
    def conflict_search(self):
        dummy = self.snap_index
        for index in range(-1, self.last + 3):
            for term in range(0, 8):
                hi = min(index, self.last)
                cands = [i for i in range(max(dummy, 1), hi + 1) if self.term_at(i) <= term]
                if cands:
                    want = (max(cands), self.term_at(max(cands)))
                elif hi < dummy:
                    want = (max(hi, 0), 0)
                else:
                    want = (dummy - 1, 0)
                assert self.log.find_conflict_by_term(index, term) == want

    @invariant()
    def up_to_date(self):
        mine = (self.last_term(), self.last)
        for lt in range(0, 8):
            for li in (self.last - 1, self.last, self.last + 1):
                assert self.log.is_up_to_date(li, lt) == ((lt, li) >= mine)


LogMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLogMachine = LogMachine.TestCase


# -- Unstable, directly --------------------------------------------------------------------


def test_unstable_term_lookup_through_snapshot():
    u = Unstable(5)
    assert u.maybe_first_index() is None and u.maybe_last_index() is None
    assert u.maybe_term(4) is None and u.maybe_term(5) is None
    u.restore(Snapshot(SnapshotMeta(7, 3)))
    assert u.maybe_first_index() == 8 and u.maybe_last_index() == 7
    assert u.maybe_term(7) == 3 and u.maybe_term(6) is None and u.maybe_term(8) is None
    u.truncate_and_append([Entry(8, 3), Entry(9, 4)])
    assert u.maybe_last_index() == 9 and u.maybe_term(9) == 4
    u.stable_snap_to(6)  # not the pending snapshot
    assert u.snapshot is not None
    u.stable_snap_to(7)
    assert u.snapshot is None


def test_unstable_truncate_and_append_three_ways():
    u = Unstable(5)
    u.truncate_and_append([Entry(5, 1), Entry(6, 1), Entry(7, 1)])
    u.truncate_and_append([Entry(8, 2)])  # directly after: extend
    assert [(e.index, e.term) for e in u.entries] == [(5, 1), (6, 1), (7, 1), (8, 2)]
    u.truncate_and_append([Entry(7, 3), Entry(8, 3)])  # inside: truncate then extend
    assert [(e.index, e.term) for e in u.entries] == [(5, 1), (6, 1), (7, 3), (8, 3)]
    u.truncate_and_append([Entry(4, 4)])  # before offset: replace all
    assert u.offset == 4 and [(e.index, e.term) for e in u.entries] == [(4, 4)]
    assert u.slice(4, 5) == [Entry(4, 4)]


def test_unstable_stable_to_only_for_the_handed_out_entry():
    u = Unstable(5)
    u.truncate_and_append([Entry(5, 1), Entry(6, 1)])
    u.stable_to(6, 2)  # replaced in the meantime: keep
    u.stable_to(9, 1)  # unknown index: keep
    assert u.offset == 5 and len(u.entries) == 2
    u.stable_to(5, 1)
    assert u.offset == 6 and u.entries == [Entry(6, 1)]


# -- RaftLog edge cases not reachable through the protocol ---------------------------------


def test_raftlog_snapshot_prefers_unstable_and_restore_resets_commit():
    s = MemoryStorage.bootstrap(["a"])
    log = RaftLog(s)
    assert log.snapshot() == s.snapshot()
    snap = Snapshot(SnapshotMeta(9, 2, ConfState(voters=frozenset({"a"}))))
    log.restore(snap)
    assert log.snapshot() == snap and log.committed == 9
    assert log.term(9) == 2 and log.first_index() == 10 and log.last_index() == 9
    assert "committed=9" in repr(log)


def test_raftlog_maybe_append_conflict_at_committed_raises():
    s = MemoryStorage.bootstrap(["a"])
    s.append([Entry(2, 1), Entry(3, 1)])
    log = RaftLog(s)
    log.commit_to(3)
    with pytest.raises(LogCorruptionError):
        log.maybe_append(1, 1, 3, (Entry(2, 2),))
    with pytest.raises(LogCorruptionError):
        log.commit_to(4)
    log.applied_to(2)
    log.applied_to(1)  # never moves back
    assert log.applied == 2


def test_find_conflict_examples():
    """§5.3: the first index whose term differs, or the first new one."""
    s = MemoryStorage.bootstrap(["a"])
    s.append([Entry(2, 1), Entry(3, 2), Entry(4, 2)])
    log = RaftLog(s)
    assert log.find_conflict([]) == 0
    assert log.find_conflict([Entry(2, 1), Entry(3, 2)]) == 0
    assert log.find_conflict([Entry(3, 2), Entry(4, 2), Entry(5, 3)]) == 5
    assert log.find_conflict([Entry(3, 3), Entry(4, 3)]) == 3
    assert log.find_conflict([Entry(6, 3)]) == 6


# -- MemoryStorage against a list model ----------------------------------------------------


class StorageMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = MemoryStorage()
        # Model: (index, term) of the dummy, then the entries.
        self.snap = (0, 0)
        self.snap_index = 0
        self.ents: list[Entry] = []

    def last(self) -> int:
        return self.snap[0] + len(self.ents)

    def term_at(self, i: int) -> int:
        return self.snap[1] if i == self.snap[0] else self.ents[i - self.snap[0] - 1].term

    @rule(data=st.data())
    def append(self, data):
        first = self.snap[0] + 1
        start = data.draw(st.integers(max(first - 3, 1), self.last() + 2), label="start")
        n = data.draw(st.integers(0, 4), label="n")
        t = data.draw(st.integers(1, 5), label="t")
        ents = [Entry(start + k, t, b"%d" % (start + k)) for k in range(n)]
        if not ents or ents[-1].index < first:
            self.s.append(ents)
            return
        if start > self.last() + 1:
            with pytest.raises(LogUnavailableError):
                self.s.append(ents)
            return
        kept = [e for e in ents if e.index >= first]
        if kept[0].index <= self.snap_index:
            return  # would truncate entries a snapshot covers: never done
        self.s.append(ents)
        cut = kept[0].index - first
        self.ents = self.ents[:cut] + kept

    @rule(data=st.data())
    def create_snapshot_and_compact(self, data):
        i = data.draw(st.integers(0, self.last() + 1), label="i")
        if i <= self.snap_index:
            with pytest.raises(RaftError):
                self.s.create_snapshot(i, ConfState(), b"")
            return
        if i > self.last():
            with pytest.raises(LogUnavailableError):
                self.s.create_snapshot(i, ConfState(), b"")
            return
        snap = self.s.create_snapshot(i, ConfState(), b"x")
        assert snap.term == self.term_at(i)
        self.snap_index = i
        c = data.draw(st.integers(0, i + 1), label="c")
        if c > i:
            with pytest.raises(RaftError):
                self.s.compact(c)
            return
        self.s.compact(c)
        if c > self.snap[0]:
            t = self.term_at(c)
            self.ents = self.ents[c - self.snap[0] :]
            self.snap = (c, t)

    @rule(data=st.data())
    def apply_snapshot(self, data):
        i = data.draw(st.integers(0, self.last() + 3), label="i")
        t = data.draw(st.integers(1, 5), label="t")
        snap = Snapshot(SnapshotMeta(i, t))
        if i < self.snap_index:
            with pytest.raises(RaftError):
                self.s.apply_snapshot(snap)
            return
        self.s.apply_snapshot(snap)
        self.snap, self.snap_index, self.ents = (i, t), i, []

    @invariant()
    def reads(self):
        s = self.s
        first, last = self.snap[0] + 1, self.last()
        assert (s.first_index(), s.last_index()) == (first, last)
        for i in range(self.snap[0], last + 1):
            assert s.term(i) == self.term_at(i)
        with pytest.raises(LogUnavailableError):
            s.term(last + 1)
        if self.snap[0] > 0:
            with pytest.raises(LogCompactedError):
                s.term(self.snap[0] - 1)
        for lo in range(first - 1, last + 2):
            for hi in range(lo, last + 3):
                if lo < first:
                    with pytest.raises(LogCompactedError):
                        s.entries(lo, hi)
                elif hi > last + 1:
                    with pytest.raises(LogUnavailableError):
                        s.entries(lo, hi)
                else:
                    assert s.entries(lo, hi) == self.ents[lo - first : hi - first]
                    assert s.entries(lo, hi, 0) == self.ents[lo - first : hi - first][:1]
        assert s.snapshot().index == self.snap_index


StorageMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStorageMachine = StorageMachine.TestCase


def test_memory_storage_bootstrap_and_initial_state():
    s = MemoryStorage.bootstrap(["a", "b"], b"seed")
    hs, cs = s.initial_state()
    assert (hs.term, hs.vote, hs.commit) == (1, None, 1)
    assert cs.voters == {"a", "b"}
    assert (s.first_index(), s.last_index()) == (2, 1)
    assert s.snapshot().data == b"seed" and s.term(1) == 1
    s.compact(1)  # at the snapshot: nothing to do
    assert s.first_index() == 2
