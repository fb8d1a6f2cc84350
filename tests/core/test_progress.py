"""Progress (probe / replicate / snapshot) and the Inflights window.

The state-machine tables follow etcd/raft's progress tests; the Inflights
property compares the window with a naive list that also tracks bytes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.core import Entry
from liferaft.core.messages import ENTRY_OVERHEAD, entries_size, entry_size
from liferaft.core.progress import Inflights, Progress, ProgressState

# -- Inflights against a naive model -------------------------------------------------------

ops_st = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 5), st.integers(0, 50)),
        st.tuples(st.just("free_le"), st.integers(0, 80), st.just(0)),
        st.tuples(st.just("free_first_one"), st.just(0), st.just(0)),
        st.tuples(st.just("reset"), st.just(0), st.just(0)),
    ),
    max_size=50,
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 6), st.sampled_from([0, 40, 100]), ops_st)
def test_inflights_match_naive_model(cap, max_bytes, ops):
    """Count and bytes in flight, fullness and release order all agree with a
    plain list of (last_index, bytes)."""
    inf = Inflights(cap, max_bytes)
    model: list[tuple[int, int]] = []
    last = 0
    for op, a, b in ops:
        if op == "add":
            last += a  # indices of successive messages grow
            inf.add(last, b)
            model.append((last, b))
        elif op == "free_le":
            inf.free_le(a)
            while model and model[0][0] <= a:
                model.pop(0)
        elif op == "free_first_one":
            inf.free_first_one()
            model = model[1:]
        else:
            inf.reset()
            model = []
        nbytes = sum(n for _, n in model)
        assert len(inf) == len(model)
        assert inf.bytes == nbytes
        assert inf.full() == (len(model) >= cap or (max_bytes > 0 and nbytes >= max_bytes))


def test_inflights_byte_limit():
    inf = Inflights(10, max_bytes=100)
    inf.add(1, 60)
    assert not inf.full()
    inf.add(2, 40)
    assert inf.full() and len(inf) == 2
    inf.free_le(1)
    assert not inf.full() and inf.bytes == 40
    inf.free_first_one()
    inf.free_first_one()  # empty: no-op
    assert len(inf) == 0 and inf.bytes == 0


def test_entry_sizes():
    ents = [Entry(1, 1, b"abc"), Entry(2, 1, b"")]
    assert entry_size(ents[0]) == 3 + ENTRY_OVERHEAD
    assert entries_size(ents) == sum(map(entry_size, ents)) == 3 + 2 * ENTRY_OVERHEAD
    assert entries_size([]) == 0


# -- Progress state machine ----------------------------------------------------------------


def make(state: ProgressState, match: int, next_: int, cap: int = 4) -> Progress:
    pr = Progress(next_, cap)
    pr.match = match
    if state is ProgressState.REPLICATE:
        pr.become_replicate()
        pr.next = next_
    elif state is ProgressState.SNAPSHOT:
        pr.become_snapshot(10)
    return pr


def test_become_probe_from_each_state():
    """etcd TestProgressBecomeProbe: probing resumes right after what is known
    to match - or after the snapshot, if one was in flight."""
    pr = make(ProgressState.REPLICATE, 1, 5)
    pr.become_probe()
    assert (pr.state, pr.next) == (ProgressState.PROBE, 2)
    pr = make(ProgressState.SNAPSHOT, 1, 5)
    pr.become_probe()
    assert (pr.state, pr.next, pr.pending_snapshot) == (ProgressState.PROBE, 11, 0)
    pr = make(ProgressState.SNAPSHOT, 12, 13)
    pr.become_probe()
    assert pr.next == 13


def test_become_replicate_and_snapshot():
    pr = make(ProgressState.PROBE, 5, 9)
    pr.become_replicate()
    assert (pr.state, pr.next) == (ProgressState.REPLICATE, 6)
    pr.become_snapshot(20)
    assert (pr.state, pr.pending_snapshot) == (ProgressState.SNAPSHOT, 20)
    assert pr.is_paused()


@pytest.mark.parametrize(
    ("match", "next_", "n", "updated", "want_match", "want_next"),
    [
        (1, 2, 1, False, 1, 2),  # stale
        (1, 2, 0, False, 1, 2),
        (1, 2, 2, True, 2, 3),
        (1, 5, 2, True, 2, 5),  # next never moves back
        (1, 2, 7, True, 7, 8),
    ],
)
def test_maybe_update(match, next_, n, updated, want_match, want_next):
    """etcd TestProgressUpdate: match only grows; next stays past it."""
    pr = make(ProgressState.PROBE, match, next_)
    pr.probe_sent = True
    assert pr.maybe_update(n) is updated
    assert (pr.match, pr.next) == (want_match, want_next)
    assert pr.probe_sent is not updated  # an acknowledgement unpauses a probe


@pytest.mark.parametrize(
    ("state", "match", "next_", "rejected", "hint", "ok", "want_next"),
    [
        # REPLICATE: rejections at or below match are stale.
        (ProgressState.REPLICATE, 5, 10, 5, 5, False, 10),
        (ProgressState.REPLICATE, 5, 10, 4, 4, False, 10),
        (ProgressState.REPLICATE, 5, 10, 9, 9, True, 6),
        # PROBE: only the rejection of next-1 counts.
        (ProgressState.PROBE, 0, 0, 0, 0, False, 0),
        (ProgressState.PROBE, 0, 10, 5, 5, False, 10),
        (ProgressState.PROBE, 0, 10, 9, 9, True, 9),
        (ProgressState.PROBE, 0, 2, 1, 1, True, 1),
        (ProgressState.PROBE, 0, 10, 9, 2, True, 3),  # follower hint
        (ProgressState.PROBE, 0, 10, 9, 0, True, 1),
        (ProgressState.PROBE, 4, 10, 9, 1, True, 5),  # never below match+1
    ],
)
def test_maybe_decr_to(state, match, next_, rejected, hint, ok, want_next):
    """etcd TestProgressMaybeDecr / §5.3: "After a rejection, the leader
    decrements nextIndex and retries"."""
    pr = make(state, match, next_)
    pr.probe_sent = True
    assert pr.maybe_decr_to(rejected, hint) is ok
    assert pr.next == want_next
    if ok and state is ProgressState.PROBE:
        assert not pr.probe_sent


def test_is_paused_in_each_state():
    """etcd TestProgressIsPaused: a probe pauses after one message; replicate
    pauses on a full window; snapshot always."""
    pr = make(ProgressState.PROBE, 0, 1)
    assert not pr.is_paused()
    pr.sent_entries(3, 10)
    assert pr.is_paused() and pr.next == 1  # probes do not advance next
    pr = make(ProgressState.REPLICATE, 0, 1, cap=2)
    pr.sent_entries(3, 10)
    assert not pr.is_paused() and pr.next == 4
    pr.sent_entries(5, 10)
    assert pr.is_paused() and pr.next == 6 and len(pr.inflights) == 2
    pr.inflights.free_le(3)
    assert not pr.is_paused()
    assert make(ProgressState.SNAPSHOT, 0, 1).is_paused()


def test_reset_starts_a_new_term_in_probe():
    pr = make(ProgressState.REPLICATE, 5, 9)
    pr.recent_active = True
    pr.sent_entries(10, 3)
    pr.reset(12, match=0)
    assert (pr.state, pr.match, pr.next, pr.recent_active) == (ProgressState.PROBE, 0, 12, False)
    assert len(pr.inflights) == 0


def test_repr_names_state_and_learner():
    pr = Progress(3, 4, is_learner=True)
    assert repr(pr) == "Progress(match=0, next=3, state=probe, learner)"
    assert "learner" not in repr(Progress(3, 4))
