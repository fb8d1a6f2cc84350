"""Hypothesis strategies for every core message, valid by construction."""

from __future__ import annotations

from hypothesis import strategies as st

from liferaft.core.messages import (
    AppendEntries,
    AppendResponse,
    ConfState,
    Entry,
    EntryType,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    VoteResponse,
)

U64 = 2**64 - 1
uints = st.one_of(st.integers(0, 1000), st.integers(0, U64))
node_ids = st.text(min_size=1, max_size=12)
small_bytes = st.binary(max_size=64)


@st.composite
def conf_states(draw: st.DrawFn) -> ConfState:
    """Configurations satisfying the core's invariants (confchange.check_invariants)."""
    ids = draw(st.lists(node_ids, max_size=8, unique=True))
    voters, learners, outgoing = set(), set(), set()
    for nid in ids:
        role = draw(st.sampled_from(["voter", "learner", "outgoing", "both"]))
        if role == "voter":
            voters.add(nid)
        elif role == "learner":
            learners.add(nid)
        elif role == "outgoing":
            outgoing.add(nid)
        else:
            voters.add(nid)
            outgoing.add(nid)
    learners_next = {n for n in outgoing if draw(st.booleans())}
    auto_leave = bool(outgoing) and draw(st.booleans())
    return ConfState(
        frozenset(voters),
        frozenset(learners),
        frozenset(outgoing),
        frozenset(learners_next),
        auto_leave,
    )


snapshot_metas = st.builds(SnapshotMeta, uints, uints, conf_states())
snapshots = st.builds(Snapshot, snapshot_metas, small_bytes)
entry_types = st.sampled_from(list(EntryType))


@st.composite
def append_entries(draw: st.DrawFn) -> AppendEntries:
    term = draw(st.integers(0, U64))
    prev_term = draw(st.integers(0, term))
    prev_index = draw(st.integers(0, U64 - 64))
    n = draw(st.integers(0, 8))
    terms = sorted(draw(st.lists(st.integers(prev_term, term), min_size=n, max_size=n)))
    ents = tuple(
        Entry(prev_index + 1 + i, t, draw(small_bytes), draw(entry_types))
        for i, t in enumerate(terms)
    )
    return AppendEntries(
        term, draw(node_ids), draw(node_ids), prev_index, prev_term, ents, draw(uints)
    )


def _msg(cls: type, *fields: st.SearchStrategy[object]) -> st.SearchStrategy[Message]:
    return st.builds(cls, uints, node_ids, node_ids, *fields)


messages: st.SearchStrategy[Message] = st.one_of(
    append_entries(),
    _msg(AppendResponse, uints, st.booleans(), uints, uints),
    _msg(Heartbeat, uints, small_bytes),
    _msg(HeartbeatResponse, small_bytes),
    _msg(RequestVote, uints, uints, st.booleans(), st.booleans()),
    _msg(VoteResponse, st.booleans(), st.booleans()),
    _msg(InstallSnapshot, snapshots),
    _msg(TimeoutNow),
    _msg(ReadIndexRequest, small_bytes),
    _msg(ReadIndexResponse, small_bytes, uints),
)

ALL_TYPES = {
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    RequestVote,
    VoteResponse,
    InstallSnapshot,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
}


def one_of_each() -> list[Message]:
    """A fixed example of every message type (for transport tests)."""
    cs = ConfState(frozenset({"n1", "n2"}), frozenset({"n3"}))
    return [
        AppendEntries(
            3, "n1", "n2", 4, 2, (Entry(5, 2, b"a"), Entry(6, 3, b"", EntryType.CONF_CHANGE)), 5
        ),
        AppendResponse(3, "n1", "n2", 6, True, 4, 2),
        Heartbeat(3, "n1", "n2", 5, b"ctx"),
        HeartbeatResponse(3, "n1", "n2", b"ctx"),
        RequestVote(4, "n1", "n2", 6, 3, True, False),
        VoteResponse(4, "n1", "n2", True, True),
        InstallSnapshot(3, "n1", "n2", Snapshot(SnapshotMeta(10, 3, cs), b"")),
        TimeoutNow(3, "n1", "n2"),
        ReadIndexRequest(3, "n1", "n2", b"r1"),
        ReadIndexResponse(3, "n1", "n2", b"r1", 9),
    ]
