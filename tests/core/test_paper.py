"""Table tests of the core against the Raft paper and thesis.

Each test quotes the sentence of "In Search of an Understandable Consensus
Algorithm (Extended Version)" (Ongaro & Ousterhout, 2014), or names the
section of Ongaro's thesis "Consensus: Bridging Theory and Practice" (2014),
that it checks.  Node logs start with the bootstrap snapshot at (index 1,
term 1); "terms" below list the terms of entries 2, 3, ...
"""

from __future__ import annotations

import pytest

from liferaft.core import (
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeError,
    ConfigError,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    MemoryStorage,
    NotLeaderError,
    ProposalDroppedError,
    RawNode,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadOnlyOption,
    ReadState,
    RequestVote,
    Role,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    Transition,
    VoteResponse,
    add_learner,
    add_voter,
    remove_node,
)
from liferaft.core.raft import Config

from .netutil import (
    Network,
    ack_all,
    drain,
    make_config,
    node_with_log,
    user_data,
    win_election,
)

N3 = ("n1", "n2", "n3")
N5 = ("n1", "n2", "n3", "n4", "n5")


def of_type(msgs, cls):
    return [m for m in msgs if isinstance(m, cls)]


# ---------------------------------------------------------------------------
# §5.1 Raft basics: terms
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "reply"),
    [
        (AppendEntries(2, "n2", "n1", 1, 1, (Entry(2, 2),), 1), AppendResponse),
        (Heartbeat(2, "n2", "n1", 1), AppendResponse),
        (RequestVote(2, "n2", "n1", 9, 9), None),
        (RequestVote(2, "n2", "n1", 9, 9, pre_vote=True), VoteResponse),
        (InstallSnapshot(2, "n2", "n1", Snapshot(SnapshotMeta(9, 2))), None),
        (AppendResponse(2, "n2", "n1", 5), None),
        (TimeoutNow(2, "n2", "n1"), None),
    ],
)
def test_stale_term_request_is_rejected(msg, reply):
    """§5.1: "If a server receives a request with a stale term number, it
    rejects the request."  Replies carry the newer term (so a stale leader
    learns it is deposed); nothing in the receiver's state changes."""
    node, st = node_with_log(terms=[2, 3], term=3, commit=1)
    before = (node.term, node.raft.vote, node.raft.log.last_index(), node.raft.log.committed)
    node.step(msg)
    rd = drain(node, st)
    log = node.raft.log
    assert (node.term, node.raft.vote, log.last_index(), log.committed) == before
    assert node.role is Role.FOLLOWER
    assert rd.snapshot is None and rd.entries == []
    if reply is None:
        assert rd.messages == []
    else:
        assert len(rd.messages) == 1
        (r,) = rd.messages
        assert isinstance(r, reply) and r.term == 3 and r.to == "n2"
        if isinstance(r, VoteResponse):
            assert not r.granted and r.pre_vote
        else:
            assert not r.reject and r.index == 0


def test_stale_append_ignored_without_prevote_and_check_quorum():
    """§5.1: "If a server receives a request with a stale term number, it
    rejects the request."  With neither pre-vote nor check-quorum a stale
    leader learns the new term from elections, so the reply is omitted."""
    node, st = node_with_log(terms=[2], term=3, pre_vote=False, check_quorum=False)
    node.step(AppendEntries(2, "n2", "n1", 2, 2, (Entry(3, 2),), 3))
    rd = drain(node, st)
    assert rd.messages == [] and node.raft.log.last_index() == 2 and node.term == 3


@pytest.mark.parametrize("role", [Role.FOLLOWER, Role.CANDIDATE, Role.LEADER])
@pytest.mark.parametrize(
    ("make_msg", "leader"),
    [
        (lambda t: AppendEntries(t, "n2", "n1", 0, 0, (), 0), "n2"),
        (lambda t: Heartbeat(t, "n2", "n1", 0), "n2"),
        (lambda t: AppendResponse(t, "n2", "n1", 0), None),
        (lambda t: VoteResponse(t, "n2", "n1", False), None),
        (lambda t: HeartbeatResponse(t, "n2", "n1"), None),
    ],
)
def test_higher_term_reverts_to_follower(role, make_msg, leader):
    """§5.1: "Current terms are exchanged whenever servers communicate; if one
    server's current term is smaller than the other's, then it updates its
    current term to the larger value. If a candidate or leader discovers that
    its term is out of date, it immediately reverts to follower state." """
    node, st = node_with_log(pre_vote=False)
    if role is Role.CANDIDATE:
        node.campaign()
    elif role is Role.LEADER:
        win_election(node, st)
    drain(node, st)
    assert node.role is role
    node.step(make_msg(node.term + 5))
    rd = drain(node, st)
    assert node.role is Role.FOLLOWER
    assert node.leader == leader
    assert rd.hard_state is not None and rd.hard_state.term == node.term
    assert node.raft.vote is None


# ---------------------------------------------------------------------------
# §5.2 Leader election
# ---------------------------------------------------------------------------


def test_election_timeout_is_randomized_in_et_to_2et():
    """§5.2: "To prevent split votes in the first place, election timeouts are
    chosen randomly from a fixed interval (e.g., 150-300ms)."  Here the
    interval is [election_tick, 2*election_tick) ticks."""
    et = 10
    seen = set()
    for seed in range(40):
        st = MemoryStorage.bootstrap(list(N3))
        node = RawNode(make_config("n1", seed, election_tick=et, pre_vote=False), st)
        ticks = 0
        while node.role is Role.FOLLOWER:
            node.tick()
            ticks += 1
            assert ticks < 2 * et
        assert node.role is Role.CANDIDATE
        assert et <= ticks < 2 * et
        seen.add(ticks)
    assert len(seen) >= 5  # really random, not a constant


def test_timeout_starts_election_votes_for_self_and_asks_every_voter():
    """§5.2: "To begin an election, a follower increments its current term and
    transitions to candidate state. It then votes for itself and issues
    RequestVote RPCs in parallel to each of the other servers in the
    cluster." """
    node, st = node_with_log(voters=N5, terms=[1, 1], pre_vote=False)
    for _ in range(20):
        node.tick()
    rd = drain(node, st)
    assert node.role is Role.CANDIDATE and node.term == 2 and node.raft.vote == "n1"
    assert rd.hard_state == HardState(2, "n1", 1)
    votes = of_type(rd.messages, RequestVote)
    assert sorted(m.to for m in votes) == ["n2", "n3", "n4", "n5"]
    assert all((m.term, m.last_index, m.last_term, m.pre_vote) == (2, 3, 1, False) for m in votes)


def test_pre_vote_does_not_increment_term():
    """Thesis §9.6: "the Pre-Vote algorithm ... a candidate would first ask
    other servers whether its log was up-to-date enough to get their vote.
    Only if the candidate believed it could get votes from a majority of the
    cluster would it increment its term and start a normal election." """
    node, st = node_with_log(voters=N3)
    for _ in range(20):
        node.tick()
    rd = drain(node, st)
    assert node.role is Role.PRE_CANDIDATE and node.term == 1
    assert rd.hard_state is None  # nothing durable changed
    votes = of_type(rd.messages, RequestVote)
    assert sorted(m.to for m in votes) == ["n2", "n3"]
    assert all(m.pre_vote and m.term == 2 for m in votes)
    # A majority of pre-votes starts the real election at term 2.
    node.step(VoteResponse(2, "n2", "n1", True, pre_vote=True))
    rd = drain(node, st)
    assert node.role is Role.CANDIDATE and node.term == 2
    assert all(not m.pre_vote and m.term == 2 for m in of_type(rd.messages, RequestVote))


def test_pre_vote_rejected_by_majority_returns_to_follower():
    """Thesis §9.6: a pre-candidate that cannot win "would not increment its
    term": it returns to follower in the same term."""
    node, st = node_with_log(voters=N3)
    node.campaign()
    drain(node, st)
    node.step(VoteResponse(1, "n2", "n1", False, pre_vote=True))
    assert node.role is Role.PRE_CANDIDATE
    node.step(VoteResponse(1, "n3", "n1", False, pre_vote=True))
    assert node.role is Role.FOLLOWER and node.term == 1


def test_pre_vote_response_does_not_count_as_vote():
    """§5.2: "A candidate wins an election if it receives votes from a
    majority of the servers in the full cluster for the same term."  A late
    pre-vote grant is not a vote in the real election, and vice versa."""
    node, st = node_with_log(voters=N5)
    node.campaign()
    drain(node, st)
    node.step(VoteResponse(1, "n2", "n1", True, pre_vote=False))  # wrong kind
    node.step(VoteResponse(1, "n3", "n1", True, pre_vote=False))
    assert node.role is Role.PRE_CANDIDATE and node.term == 1
    node.step(VoteResponse(2, "n2", "n1", True, pre_vote=True))
    node.step(VoteResponse(2, "n3", "n1", True, pre_vote=True))
    assert node.role is Role.CANDIDATE and node.term == 2
    node.step(VoteResponse(2, "n4", "n1", True, pre_vote=True))  # late pre-vote
    node.step(VoteResponse(2, "n5", "n1", True, pre_vote=True))
    assert node.role is Role.CANDIDATE


@pytest.mark.parametrize(
    ("responses", "role"),
    [
        ({"n2": True, "n3": True}, Role.LEADER),
        ({"n2": True}, Role.CANDIDATE),
        ({"n2": True, "n3": False, "n4": False}, Role.CANDIDATE),
        ({"n2": False, "n3": False}, Role.CANDIDATE),
        ({"n2": False, "n3": False, "n4": False}, Role.FOLLOWER),
        ({"n2": True, "n3": False, "n4": False, "n5": False}, Role.FOLLOWER),
        ({"n2": True, "n3": False, "n4": False, "n5": True}, Role.LEADER),
    ],
)
def test_candidate_needs_majority_of_full_cluster(responses, role):
    """§5.2: "A candidate wins an election if it receives votes from a
    majority of the servers in the full cluster for the same term." ... "if
    many followers become candidates at the same time, votes could be split so
    that no candidate obtains a majority." """
    node, st = node_with_log(voters=N5, pre_vote=False)
    node.campaign()
    drain(node, st)
    for frm, granted in responses.items():
        node.step(VoteResponse(2, frm, "n1", granted))
    assert node.role is role
    assert node.term == 2


def test_duplicate_vote_counts_once():
    """§5.2: "Each server will vote for at most one candidate in a given
    term"; a duplicated grant is still one vote."""
    node, st = node_with_log(voters=N5, pre_vote=False)
    node.campaign()
    for _ in range(4):
        node.step(VoteResponse(2, "n2", "n1", True))
    assert node.role is Role.CANDIDATE


def test_vote_from_non_member_does_not_count():
    """§5.2: "a majority of the servers in the full cluster": grants from
    nodes outside the configuration are not part of any majority."""
    node, st = node_with_log(voters=N3, pre_vote=False)
    node.campaign()
    node.step(VoteResponse(2, "x1", "n1", True))
    node.step(VoteResponse(2, "x2", "n1", True))
    assert node.role is Role.CANDIDATE


def test_vote_once_per_term_first_come_first_served():
    """§5.2: "Each server will vote for at most one candidate in a given term,
    on a first-come-first-served basis" and Figure 2: "If votedFor is null or
    candidateId, and candidate's log is at least as up-to-date as receiver's
    log, grant vote"."""
    node, st = node_with_log()
    node.step(RequestVote(2, "n2", "n1", 1, 1))
    rd = drain(node, st)
    # The vote is in the same Ready as the grant: persisted before it is sent.
    assert rd.hard_state == HardState(2, "n2", 1)
    assert rd.messages == [VoteResponse(2, "n1", "n2", True)]
    node.step(RequestVote(2, "n3", "n1", 1, 1))
    assert drain(node, st).messages == [VoteResponse(2, "n1", "n3", False)]
    node.step(RequestVote(2, "n2", "n1", 1, 1))  # a retransmission: same answer
    assert drain(node, st).messages == [VoteResponse(2, "n1", "n2", True)]
    assert node.raft.vote == "n2"


def test_vote_survives_restart():
    """Figure 2: currentTerm and votedFor are "Persistent state on all
    servers: (Updated on stable storage before responding to RPCs)".  A
    restarted server must not vote twice in a term (goraft did)."""
    node, st = node_with_log()
    node.step(RequestVote(2, "n2", "n1", 1, 1))
    drain(node, st)
    restarted = RawNode(make_config("n1"), st)
    assert (restarted.term, restarted.raft.vote) == (2, "n2")
    restarted.step(RequestVote(2, "n3", "n1", 1, 1))
    rd = drain(restarted, st)
    assert rd.messages == [VoteResponse(2, "n1", "n3", False)]


def test_leader_sends_heartbeats_to_establish_authority():
    """§5.2: "Once a candidate wins an election, it becomes leader. It then
    sends heartbeat messages to all of the other servers to establish its
    authority and prevent new elections." """
    node, st = node_with_log(voters=N3)
    rd = win_election(node, st)
    assert sorted(m.to for m in of_type(rd.messages, AppendEntries)) == ["n2", "n3"]
    ack_all(node, st, rd.messages)
    node.tick()
    rd = drain(node, st)
    assert sorted(m.to for m in of_type(rd.messages, Heartbeat)) == ["n2", "n3"]


@pytest.mark.parametrize(
    ("msg_term", "role", "leader"),
    [(2, Role.FOLLOWER, "n2"), (3, Role.FOLLOWER, "n2"), (1, Role.CANDIDATE, None)],
)
def test_candidate_yields_to_append_entries_of_equal_or_higher_term(msg_term, role, leader):
    """§5.2: "If the leader's term (included in its RPC) is at least as large
    as the candidate's current term, then the candidate recognizes the leader
    as legitimate and returns to follower state. If the term in the RPC is
    smaller than the candidate's current term, then the candidate rejects the
    RPC and continues in candidate state." """
    node, st = node_with_log(pre_vote=False)
    node.campaign()
    drain(node, st)
    assert (node.role, node.term) == (Role.CANDIDATE, 2)
    node.step(AppendEntries(msg_term, "n2", "n1", 1, 1, (), 1))
    rd = drain(node, st)
    assert node.role is role and node.leader == leader
    (resp,) = of_type(rd.messages, AppendResponse)
    assert resp.term == max(2, msg_term) and not resp.reject


@pytest.mark.parametrize("kind", ["heartbeat", "snapshot"])
def test_pre_candidate_yields_to_current_leader(kind):
    """§5.2: "A server remains in follower state as long as it receives valid
    RPCs from a leader or candidate." """
    node, st = node_with_log()
    node.campaign()
    assert node.role is Role.PRE_CANDIDATE
    if kind == "heartbeat":
        node.step(Heartbeat(1, "n2", "n1", 1))
    else:
        node.step(InstallSnapshot(1, "n2", "n1", Snapshot(SnapshotMeta(1, 1))))
    assert node.role is Role.FOLLOWER and node.leader == "n2"


def test_split_vote_times_out_into_new_election():
    """§5.2: "each candidate will time out and start a new election by
    incrementing its term and initiating another round of RequestVote
    RPCs." """
    node, st = node_with_log(voters=N3, pre_vote=False)
    node.campaign()
    drain(node, st)
    node.step(VoteResponse(2, "n2", "n1", False))
    assert node.role is Role.CANDIDATE
    for _ in range(20):
        node.tick()
    rd = drain(node, st)
    assert node.role is Role.CANDIDATE and node.term == 3
    assert sorted(m.to for m in of_type(rd.messages, RequestVote) if m.term == 3) == ["n2", "n3"]


def test_cluster_elects_exactly_one_leader_by_timeouts():
    """§5.2 "Election Safety: at most one leader can be elected in a given
    term" and the election makes progress from timeouts alone."""
    for seed in range(5):
        net = Network(N5, seed=seed)
        for _ in range(40):
            net.tick()
            leaders = net.leaders()
            terms = [net.nodes[n].term for n in leaders]
            assert len(set(terms)) == len(terms)
            if leaders:
                break
        assert len(net.leaders()) == 1


# ---------------------------------------------------------------------------
# §5.3 Log replication
# ---------------------------------------------------------------------------


def test_leader_replicates_and_commits_on_majority():
    """§5.3: "A log entry is committed once the leader that created the entry
    has replicated it on a majority of the servers" and "Once a follower
    learns that a log entry is committed, it applies the entry to its state
    machine (in log order)." """
    net = Network(N5)
    net.elect("n1")
    net.isolate("n4")
    net.isolate("n5")
    idx = net.propose("n1", b"a")
    assert net.nodes["n1"].raft.log.committed == idx
    net.nodes["n1"].propose(b"b")
    net.stabilize()
    for nid in ("n1", "n2", "n3"):
        assert net.data(nid) == [b"a", b"b"]
    for nid in ("n4", "n5"):
        assert net.data(nid) == []
    # Only two of five hold the next entry: not committed.
    net.isolate("n3")
    net.nodes["n1"].propose(b"c")
    net.stabilize()
    assert net.data("n1") == [b"a", b"b"]
    net.heal()
    net.tick(n=2)
    for nid in N5:
        assert net.data(nid) == [b"a", b"b", b"c"]


def test_leader_commit_reaches_followers_on_heartbeat():
    """§5.3: "it includes that index in future AppendEntries RPCs (including
    heartbeats) so that the other servers eventually find out." """
    net = Network(N3)
    net.elect("n1")
    net.nodes["n1"].propose(b"x")
    net.flush()
    net.deliver()  # appends reach the followers
    net.flush()
    net.deliver()  # acks reach the leader, which commits
    net.flush()
    net.take()  # lose the AppendEntries that carry the new commit index
    assert net.nodes["n1"].raft.log.committed == 3
    assert net.nodes["n2"].raft.log.committed == 2
    net.tick(["n1"])
    assert net.nodes["n2"].raft.log.committed == 3 and net.data("n2") == [b"x"]


@pytest.mark.parametrize(
    ("prev_index", "prev_term", "ents", "want_log", "want_reject"),
    [
        # matches and appends
        (3, 3, [(4, 3)], [2, 3, 3], False),
        (3, 3, [(4, 4), (5, 4)], [2, 3, 4, 4], False),
        # "If an existing entry conflicts with a new one ... delete the existing
        # entry and all that follow it"
        (2, 2, [(3, 4)], [2, 4], False),
        (1, 1, [(2, 3), (3, 4)], [3, 4], False),
        # overlapping entries that agree are NOT truncated
        (1, 1, [(2, 2)], [2, 3], False),
        (1, 1, [(2, 2), (3, 3)], [2, 3], False),
        (2, 2, [], [2, 3], False),
        # "Reply false if log doesn't contain an entry at prevLogIndex whose term
        # matches prevLogTerm"
        (3, 2, [(4, 4)], [2, 3], True),
        (5, 4, [(6, 4)], [2, 3], True),
        (4, 3, [], [2, 3], True),
    ],
)
def test_follower_append_entries(prev_index, prev_term, ents, want_log, want_reject):
    """Figure 2, AppendEntries receiver: "2. Reply false if log doesn't contain
    an entry at prevLogIndex whose term matches prevLogTerm (§5.3) 3. If an
    existing entry conflicts with a new one (same index but different terms),
    delete the existing entry and all that follow it (§5.3) 4. Append any new
    entries not already in the log" """
    node, st = node_with_log(terms=[2, 3], term=3)
    entries = tuple(Entry(i, t, b"new") for i, t in ents)
    node.step(AppendEntries(4, "n2", "n1", prev_index, prev_term, entries, 1))
    rd = drain(node, st)
    log = node.raft.log
    assert [log.term(i) for i in range(2, log.last_index() + 1)] == want_log
    # What was persisted matches the log the node reports.
    assert [st.term(i) for i in range(2, st.last_index() + 1)] == want_log
    (resp,) = rd.messages
    assert isinstance(resp, AppendResponse) and resp.reject is want_reject
    if want_reject:
        assert resp.index == prev_index
    else:
        assert resp.index == prev_index + len(ents)


@pytest.mark.parametrize(
    ("prev_index", "ents", "leader_commit", "want_commit"),
    [
        (3, [(4, 2)], 10, 4),  # min(leaderCommit, index of last new entry)
        (3, [(4, 2)], 3, 3),
        (2, [], 3, 2),  # entry 3 is not known to match: not committed
        (1, [(2, 2)], 3, 2),
        (3, [], 0, 1),  # never decreases
    ],
)
def test_follower_commit_is_min_of_leader_commit_and_last_new(
    prev_index, ents, leader_commit, want_commit
):
    """Figure 2, AppendEntries receiver: "5. If leaderCommit > commitIndex, set
    commitIndex = min(leaderCommit, index of last new entry)" """
    node, st = node_with_log(terms=[2, 2], term=2)
    prev_term = node.raft.log.term(prev_index)
    entries = tuple(Entry(i, t) for i, t in ents)
    node.step(AppendEntries(2, "n2", "n1", prev_index, prev_term, entries, leader_commit))
    drain(node, st)
    assert node.raft.log.committed == want_commit
    assert st.hard_state.commit == want_commit


FIG7_LEADER = [1, 1, 4, 4, 5, 5, 6, 6, 6]  # indices 2..10 (index 1 is the snapshot)
FIG7_FOLLOWERS = {
    "a": [1, 1, 4, 4, 5, 5, 6, 6],
    "b": [1, 1, 4],
    "c": [1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
    "d": [1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
    "e": [1, 1, 4, 4, 4, 4],
    "f": [1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
}


@pytest.mark.parametrize("case", sorted(FIG7_FOLLOWERS))
def test_figure7_leader_forces_follower_logs_to_match(case):
    """§5.3, Figure 7: "In Raft, the leader handles inconsistencies by forcing
    the followers' logs to duplicate its own. This means that conflicting
    entries in follower logs will be overwritten with entries from the
    leader's log." ... "After a rejection, the leader decrements nextIndex and
    retries the AppendEntries RPC. Eventually nextIndex will reach a point
    where the leader and follower logs match." """

    def storage(terms):
        st = MemoryStorage.bootstrap(list(N3))
        st.append([Entry(i + 2, t, b"%d" % t) for i, t in enumerate(terms)])
        st.set_hard_state(HardState(7, None, 1))
        return st

    net = Network([])
    net.add("n1", storage(FIG7_LEADER))
    net.add("n2", storage(FIG7_FOLLOWERS[case]))
    net.add("n3", storage(FIG7_LEADER))  # votes for the leader
    net.elect("n1")
    assert net.nodes["n1"].term == 8
    net.tick(n=3)
    want = [(i + 2, t) for i, t in enumerate(FIG7_LEADER)] + [(11, 8)]
    assert net.log_terms("n1") == want
    assert net.log_terms("n2") == want
    assert net.nodes["n2"].raft.log.committed == 11
    st2 = net.storages["n2"]
    assert [(i, st2.term(i)) for i in range(2, st2.last_index() + 1)] == want


def test_leader_never_overwrites_its_own_log():
    """§5.3 Figure 3 "Leader Append-Only: a leader never overwrites or deletes
    entries in its log; it only appends new entries." """
    node, st = node_with_log(terms=[2, 2], term=2)
    win_election(node, st)
    before = [node.raft.log.term(i) for i in range(2, node.raft.log.last_index() + 1)]
    node.step(AppendEntries(3, "n2", "n1", 1, 1, (Entry(2, 3), Entry(3, 3), Entry(4, 3)), 1))
    after = [node.raft.log.term(i) for i in range(2, node.raft.log.last_index() + 1)]
    assert node.role is Role.LEADER and after == before == [2, 2, 3]


def test_rejection_hint_skips_a_conflicting_term():
    """§5.3: "when rejecting an AppendEntries request, the follower can include
    the term of the conflicting entry and the first index it stores for that
    term. With this information, the leader can decrement nextIndex to bypass
    all of the conflicting entries in that term" """
    node, st = node_with_log(terms=[2, 3, 3, 3, 3], term=3)
    node.step(AppendEntries(4, "n2", "n1", 6, 4, (), 1))
    (resp,) = drain(node, st).messages
    # The follower's last entry with a term <= 4 at or before index 6 is (6, 3).
    assert resp.reject and (resp.index, resp.hint_index, resp.hint_term) == (6, 6, 3)
    node.step(AppendEntries(4, "n2", "n1", 6, 2, (), 1))
    (resp,) = drain(node, st).messages
    assert resp.reject and (resp.hint_index, resp.hint_term) == (2, 2)


def test_leader_uses_rejection_hint():
    """§5.3: "the leader can decrement nextIndex to bypass all of the
    conflicting entries in that term; one AppendEntries RPC will be required
    for each term with conflicting entries, rather than one RPC per entry." """
    node, st = node_with_log(terms=[2, 2, 4, 4, 4, 4, 4], term=4)
    win_election(node, st)  # term 5, no-op at 9
    # Follower n2 holds terms [2, 2, 3, 3, 3, 3, 3, 3]: rejecting prev (8, 4) it
    # hints (8, 3): the leader skips all its term-4 entries in one step.
    node.step(AppendResponse(5, "n2", "n1", 8, True, 8, 3))
    rd = drain(node, st)
    (app,) = [m for m in of_type(rd.messages, AppendEntries) if m.to == "n2"]
    assert (app.prev_index, app.prev_term) == (3, 2)
    assert [e.index for e in app.entries] == list(range(4, 10))


# ---------------------------------------------------------------------------
# §5.4 Safety
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cand_last_index", "cand_last_term", "granted"),
    [
        (4, 3, True),  # identical
        (5, 3, True),  # same last term, longer
        (3, 3, False),  # same last term, shorter
        (2, 4, True),  # later last term though shorter (goraft refused this)
        (1, 4, True),
        (10, 2, False),  # earlier last term though longer
        (4, 2, False),
        (0, 0, False),
    ],
)
def test_election_restriction(cand_last_index, cand_last_term, granted):
    """§5.4.1: "If the logs have last entries with different terms, then the
    log with the later term is more up-to-date. If the logs end with the same
    term, then whichever log is longer is more up-to-date." and "the voter
    denies its vote if its own log is more up-to-date than that of the
    candidate." """
    for pre_vote in (False, True):
        node, st = node_with_log(terms=[2, 2, 3], term=3)
        node.step(RequestVote(5, "n2", "n1", cand_last_index, cand_last_term, pre_vote=pre_vote))
        rd = drain(node, st)
        (resp,) = rd.messages
        assert isinstance(resp, VoteResponse) and resp.pre_vote is pre_vote
        assert resp.granted is granted
        if granted:
            assert resp.term == 5
        if pre_vote:
            assert node.term == 3 and node.raft.vote is None  # a pre-vote changes nothing
        else:
            assert node.term == 5
            assert node.raft.vote == ("n2" if granted else None)


def test_figure8_never_commit_previous_term_entry_by_counting_replicas():
    """§5.4.2: "Raft never commits log entries from previous terms by counting
    replicas. Only log entries from the leader's current term are committed by
    counting replicas; once an entry from the current term has been committed
    in this way, then all prior entries are committed indirectly because of
    the Log Matching Property." """
    node, st = node_with_log(terms=[2], term=3)  # entry 2 from term 2, uncommitted
    win_election(node, st)  # term 4; no-op at index 3
    assert node.raft.log.last_index() == 3 and node.raft.log.term(3) == 4
    # n2 now also holds index 2: a majority (n1, n2) has the term-2 entry.
    node.step(AppendResponse(4, "n2", "n1", 2))
    drain(node, st)
    assert node.raft.log.committed == 1
    # Once the term-4 entry reaches a majority, both commit.
    node.step(AppendResponse(4, "n2", "n1", 3))
    drain(node, st)
    assert node.raft.log.committed == 3


def test_figure8_scenario_on_a_cluster():
    """§5.4.2, Figure 8: "a leader cannot immediately conclude that an entry
    from a previous term is committed once it is stored on a majority of
    servers."  In (c) S1, leader of term 4, has its term-2 entry on S1, S2 and
    S3; if it counted those replicas and then crashed, S5 (last term 3) could
    still win term 5 and overwrite that entry, as in (d)."""
    ids = ("s1", "s2", "s3", "s4", "s5")

    def storage(terms):
        st = MemoryStorage.bootstrap(list(ids))
        st.append([Entry(i + 2, t, b"t%d" % t) for i, t in enumerate(terms)])
        st.set_hard_state(HardState(3, None, 1))
        return st

    net = Network([])
    for nid, terms in [("s1", [2]), ("s2", [2]), ("s3", [2]), ("s4", []), ("s5", [3])]:
        net.add(nid, storage(terms))
    net.drop_filter = lambda m: isinstance(m, AppendEntries)  # S1's no-op never spreads
    s1 = net.elect("s1")
    assert s1.term == 4 and net.log_terms("s1") == [(2, 2), (3, 4)]
    # S2 and S3 acknowledge entry 2 (term 2): a majority holds it ...
    s1.step(AppendResponse(4, "s2", "s1", 2))
    s1.step(AppendResponse(4, "s3", "s1", 2))
    net.flush()
    assert s1.raft.log.committed == 1  # ... but S1 must not count it committed.
    # S1 crashes; S5 wins term 5 with S2, S3, S4 and overwrites entry 2.
    net.heal()
    net.isolate("s1")
    assert {net.nodes[n].leader for n in ("s2", "s3", "s4")} == {None}  # no lease
    net.elect("s5")
    net.tick(["s2", "s3", "s4", "s5"], n=2)
    for nid in ("s2", "s3", "s4", "s5"):
        assert net.log_terms(nid)[0] == (2, 3)
    # Nobody ever applied the overwritten entry.
    for nid in ids:
        assert all((e.index, e.term) != (2, 2) for e in net.applied[nid])
    assert [(e.index, e.term) for e in net.applied["s2"]][:1] == [(2, 3)]


def test_new_leader_appends_noop_and_commits_earlier_entries_with_it():
    """§8: "Raft handles this by having each leader commit a blank no-op entry
    into the log at the start of its term." and §5.4.2: "all prior entries are
    committed indirectly because of the Log Matching Property." """
    net = Network(N3, check_quorum=False)
    net.elect("n1")
    net.isolate("n3")
    net.nodes["n1"].propose(b"x")
    net.flush()
    net.deliver()  # n2 appends; its ack is lost with n1's crash
    net.take()
    net.heal()
    net.isolate("n1")
    net.elect("n2")
    log = net.nodes["n2"].raft.log
    noop = log.slice(log.last_index(), log.last_index() + 1, None)[0]
    assert noop.term == net.nodes["n2"].term and noop.data == b""
    assert noop.type is EntryType.NORMAL
    assert log.committed == log.last_index()
    assert net.data("n2") == [b"x"] and net.data("n3") == [b"x"]


def test_leader_completeness_after_failover():
    """§5.4 "Leader Completeness: if a log entry is committed in a given term,
    then that entry will be present in the logs of the leaders for all
    higher-numbered terms." """
    net = Network(N5)
    net.elect("n1")
    net.isolate("n4")
    net.isolate("n5")
    net.propose("n1", b"committed")
    net.heal()
    net.isolate("n1")
    # n4 and n5 lack the entry and cannot win; one of n2/n3 must.
    net.nodes["n4"].campaign()
    net.stabilize()
    assert net.nodes["n4"].role is not Role.LEADER
    for _ in range(60):
        net.tick(["n2", "n3", "n4", "n5"])
        if [n for n in net.leaders() if n != "n1"]:
            break
    (ld,) = [n for n in net.leaders() if n != "n1"]
    assert ld in ("n2", "n3")
    assert b"committed" in user_data(
        net.nodes[ld].raft.log.slice(2, net.nodes[ld].raft.log.last_index() + 1, None)
    )


# ---------------------------------------------------------------------------
# §6 / thesis §4: membership changes
# ---------------------------------------------------------------------------


def cluster_with_leader(ids=N3, **cfg):
    net = Network(ids, **cfg)
    net.elect(ids[0])
    return net, net.nodes[ids[0]]


def test_one_membership_change_at_a_time():
    """Thesis §4.1: "Raft restricts the types of changes that are allowed:
    only one server can be added or removed from the cluster at a time." and a
    leader must not start a new change while the previous one is pending."""
    net, ld = cluster_with_leader()
    ld.propose_conf_change(ConfChange((add_learner("n4"),)))
    with pytest.raises(ConfChangeError, match="one change at a time"):
        ld.propose_conf_change(ConfChange((add_learner("n5"),)))
    net.stabilize()
    ld.propose_conf_change(ConfChange((add_learner("n5"),)))
    net.stabilize()
    assert ld.conf_state().learners == {"n4", "n5"}


def test_membership_change_refused_before_leader_commits_in_its_term():
    """Ongaro, raft-dev 2015 (single-server change bug): "a leader may not
    append a new configuration entry until it has committed an entry from its
    current term." """
    node, st = node_with_log(voters=N3)
    rd = win_election(node, st)
    with pytest.raises(ConfChangeError, match="committed an entry in its term"):
        node.propose_conf_change(ConfChange((add_voter("n4"),)))
    ack_all(node, st, rd.messages)
    idx = node.propose_conf_change(ConfChange((add_voter("n4"),)))
    assert idx == node.raft.log.last_index()


def test_new_leader_refuses_change_until_previous_ones_applied():
    """Thesis §4.1: a new leader does not know whether an uncommitted change
    in its log will commit, so it treats one as pending until applied."""
    _, st = node_with_log(voters=N3)
    cc = ConfChange((add_learner("n5"),)).encode()
    st.append([Entry(2, 1, cc, EntryType.CONF_CHANGE)])  # inherited, uncommitted
    node = RawNode(make_config("n1"), st)
    rd = win_election(node, st)
    assert node.raft.log.committed == 1
    with pytest.raises(ConfChangeError, match="one change at a time"):
        node.propose_conf_change(ConfChange((add_voter("n4"),)))
    rd = ack_all(node, st, rd.messages)  # commits and applies the old change
    assert node.conf_state().learners == {"n5"}
    node.propose_conf_change(ConfChange((add_voter("n4"),)))


def test_simple_change_adds_voter_and_new_node_catches_up():
    """§6: "new servers may not initially store any log entries" - the leader
    brings them up to date (here from the bootstrap snapshot)."""
    net, ld = cluster_with_leader()
    net.propose("n1", b"before")
    net.add("n4")
    ld.propose_conf_change(ConfChange((add_voter("n4"),)))
    net.stabilize()
    net.tick(n=3)
    assert ld.conf_state().voters == {"n1", "n2", "n3", "n4"}
    assert net.nodes["n4"].conf_state().voters == {"n1", "n2", "n3", "n4"}
    net.propose("n1", b"after")
    assert net.data("n4") == [b"before", b"after"]


def test_joint_consensus_enter_then_auto_leave():
    """§6: "the cluster first switches to a transitional configuration we call
    joint consensus; once the joint consensus has been committed, the system
    then transitions to the new configuration." """
    net, ld = cluster_with_leader()
    for nid in ("n4", "n5"):
        net.add(nid)
    ld.propose_conf_change(ConfChange((add_voter("n4"), add_voter("n5"), remove_node("n3"))))
    net.stabilize()
    net.tick(n=3)
    cs = ld.conf_state()
    assert cs == ConfState(voters=frozenset({"n1", "n2", "n4", "n5"}))
    confs = [
        ConfChange.decode(e.data)
        for e in net.applied["n2"]
        if e.type is EntryType.CONF_CHANGE
    ]
    assert [c.leave_joint for c in confs] == [False, True]
    for nid in ("n1", "n2", "n4", "n5"):
        assert net.nodes[nid].conf_state() == cs


def test_joint_consensus_needs_both_majorities():
    """§6: "Agreement (for elections and entry commitment) requires separate
    majorities from both the old and new configurations." """
    net, ld = cluster_with_leader()
    for nid in ("n4", "n5", "n6"):
        net.add(nid)
    ld.propose_conf_change(
        ConfChange(
            (add_voter("n4"), add_voter("n5"), add_voter("n6"), remove_node("n2"),
             remove_node("n3")),
            Transition.JOINT_EXPLICIT,
        )
    )
    net.stabilize()
    net.tick(n=3)
    cs = ld.conf_state()
    assert cs.voters == {"n1", "n4", "n5", "n6"} and cs.voters_outgoing == set(N3)
    assert not cs.auto_leave
    # Old majority only (n1, n2, n3): nothing commits.
    net.isolate("n4")
    net.isolate("n5")
    net.isolate("n6")
    commit = ld.raft.log.committed
    i1 = ld.propose(b"old-only")
    net.stabilize()
    assert ld.raft.log.committed == commit
    assert ld.status().progress["n2"].match == i1
    net.heal()
    # New majority only (n1, n4, n5, n6): the new entry does not commit.  (The
    # old one does: it now reaches the new majority too.)
    net.isolate("n2")
    net.isolate("n3")
    i2 = ld.propose(b"new-only")
    net.tick(n=2)
    assert ld.status().progress["n4"].match == i2
    assert ld.raft.log.committed == i1
    net.heal()
    net.tick(n=2)
    assert ld.raft.log.committed == i2
    # JOINT_EXPLICIT: the application leaves the joint state itself.
    ld.propose_conf_change(ConfChange())
    net.stabilize()
    assert ld.conf_state() == ConfState(voters=frozenset({"n1", "n4", "n5", "n6"}))


def test_removed_leader_steps_down_once_removal_applied():
    """§6: "the cluster leader may not be part of the new configuration. In
    this case, the leader steps down (returns to follower state) once it has
    committed the C_new log entry." """
    net, ld = cluster_with_leader()
    ld.propose_conf_change(ConfChange((remove_node("n1"),)))
    assert ld.role is Role.LEADER  # not before the change is applied
    net.stabilize()
    assert ld.role is Role.FOLLOWER
    assert ld.conf_state().voters == {"n2", "n3"}
    for _ in range(40):
        net.tick()
        if net.leaders():
            break
    (new,) = net.leaders()
    assert new in ("n2", "n3")
    # The removed node never campaigns again.
    for _ in range(40):
        net.tick(["n1"])
    assert net.nodes["n1"].role is Role.FOLLOWER


def test_removed_server_cannot_disrupt_cluster():
    """§6: "if a server receives a RequestVote RPC within the minimum election
    timeout of hearing from a current leader, it does not update its term or
    grant its vote." """
    net, ld = cluster_with_leader(N3, pre_vote=False)
    net.isolate("n3")
    ld.propose_conf_change(ConfChange((remove_node("n3"),)))
    net.stabilize()
    assert ld.conf_state().voters == {"n1", "n2"}
    term = ld.term
    for _ in range(30):
        net.tick(["n3"])  # n3 never learned of its removal: it campaigns
    assert net.nodes["n3"].term > term
    net.heal()
    for _ in range(30):
        net.tick()
    assert ld.role is Role.LEADER and ld.term == term
    assert net.nodes["n2"].term == term


def test_learners_never_vote_and_never_campaign():
    """§6: "new servers ... join the cluster as non-voting members (the
    leader replicates log entries to them, but they are not considered for
    majorities)." """
    net = Network(("n1", "n2", "n3", "n4"), voters=N3, learners=["n4"])
    for _ in range(60):
        net.tick(["n4"])
    assert net.nodes["n4"].role is Role.FOLLOWER and net.nodes["n4"].term == 1
    net.nodes["n4"].campaign()
    assert net.nodes["n4"].role is Role.FOLLOWER
    net.nodes["n1"].campaign()
    net.flush()
    asked = {m.to for m in net.queue if isinstance(m, RequestVote)}
    assert asked == {"n2", "n3"}
    net.stabilize()
    net.propose("n1", b"x")
    assert net.data("n4") == [b"x"]


def test_learner_grant_does_not_count():
    """§6: learners "are not considered for majorities"."""
    st = MemoryStorage()
    cs = ConfState(voters=frozenset(N3), learners=frozenset({"n4", "n5"}))
    st.apply_snapshot(Snapshot(SnapshotMeta(1, 1, cs)))
    st.set_hard_state(HardState(1, None, 1))
    node = RawNode(make_config("n1", pre_vote=False), st)
    node.campaign()
    node.step(VoteResponse(2, "n4", "n1", True))
    node.step(VoteResponse(2, "n5", "n1", True))
    assert node.role is Role.CANDIDATE
    node.step(VoteResponse(2, "n2", "n1", True))
    assert node.role is Role.LEADER
    rd = drain(node, st)
    # Learners do receive entries ...
    assert {m.to for m in of_type(rd.messages, AppendEntries)} == {"n2", "n3", "n4", "n5"}
    # ... but their acknowledgements never commit anything.
    last = node.raft.log.last_index()
    node.step(AppendResponse(2, "n4", "n1", last))
    node.step(AppendResponse(2, "n5", "n1", last))
    assert node.raft.log.committed == 1
    node.step(AppendResponse(2, "n3", "n1", last))
    assert node.raft.log.committed == last


def test_learner_promotion_refused_until_caught_up():
    """§6: the new servers are non-voting "until they have caught up"; only
    then may they be made voters."""
    net = Network(("n1", "n2", "n3", "n4"), voters=N3, learners=["n4"])
    ld = net.elect("n1")
    net.isolate("n4")
    for i in range(3):
        ld.propose(b"%d" % i)
    net.stabilize()
    with pytest.raises(ConfChangeError, match="caught up"):
        ld.propose_conf_change(ConfChange((add_voter("n4"),)))
    net.heal()
    net.tick(n=2)
    ld.propose_conf_change(ConfChange((add_voter("n4"),)))
    net.stabilize()
    assert ld.conf_state().voters == {"n1", "n2", "n3", "n4"} and not ld.conf_state().learners


def test_demoted_voter_becomes_learner_through_joint_state():
    """Thesis §4.3 (joint consensus): a voter demoted to learner keeps voting in
    the outgoing configuration until the joint state is left."""
    net, ld = cluster_with_leader()
    ld.propose_conf_change(ConfChange((add_learner("n3"),), Transition.JOINT_EXPLICIT))
    net.stabilize()
    cs = ld.conf_state()
    assert cs.learners_next == {"n3"} and "n3" in cs.voters_outgoing
    ld.propose_conf_change(ConfChange())
    net.stabilize()
    assert ld.conf_state() == ConfState(
        voters=frozenset({"n1", "n2"}), learners=frozenset({"n3"})
    )


def test_invalid_membership_change_is_refused():
    """Thesis §4.3: a joint configuration must be left before the next change
    begins; and a change may not remove every voter."""
    net, ld = cluster_with_leader()
    with pytest.raises(ConfChangeError):
        ld.propose_conf_change(ConfChange())  # not in a joint state
    with pytest.raises(ConfChangeError):
        ld.propose_conf_change(
            ConfChange((remove_node("n1"), remove_node("n2"), remove_node("n3")))
        )
    assert ld.raft.pending_conf_index <= ld.raft.log.applied


# ---------------------------------------------------------------------------
# Thesis §6.2 / §4.2.3 / §9.6: check-quorum, disruptive servers, pre-vote
# ---------------------------------------------------------------------------


def test_follower_in_lease_ignores_request_vote():
    """Thesis §4.2.3: "if a server receives a RequestVote request within the
    minimum election timeout of hearing from a current leader, it does not
    update its term or grant its vote." """
    net, ld = cluster_with_leader()
    n2 = net.nodes["n2"]
    term = n2.term
    n2.step(RequestVote(term + 1, "n3", "n2", 100, term))
    net.flush()
    assert n2.term == term and n2.raft.vote == "n1"
    assert not [m for m in net.queue if m.frm == "n2" and isinstance(m, VoteResponse)]
    # After an election timeout without the leader, the same request wins.
    net.isolate("n1")
    for _ in range(10):
        net.tick(["n2"])
    n2.step(RequestVote(term + 1, "n3", "n2", 100, term))
    net.flush()
    assert n2.term == term + 1 and n2.raft.vote == "n3"


def test_leader_ignores_request_vote_within_lease():
    """Thesis §4.2.3: a disruptive candidate does not depose a leader that
    hears from its quorum."""
    net, ld = cluster_with_leader()
    ld.step(RequestVote(ld.term + 3, "n3", "n1", 100, ld.term))
    assert ld.role is Role.LEADER and ld.term == 2


def test_transfer_request_vote_is_honoured_in_lease():
    """Thesis §3.10: TimeoutNow "has the same effect as the target server's
    election timer firing", so its votes must not be blocked by the leader
    lease."""
    net, ld = cluster_with_leader()
    n2 = net.nodes["n2"]
    n2.step(RequestVote(3, "n3", "n2", 100, 2, transfer=True))
    net.flush()
    assert n2.term == 3 and n2.raft.vote == "n3"


def test_leader_steps_down_without_quorum():
    """Thesis §6.2: "a leader steps down if an election timeout elapses
    without a successful round of heartbeats to a majority of its cluster" """
    net, ld = cluster_with_leader()
    net.isolate("n1")
    for _ in range(9):
        net.tick(["n1"])
    assert ld.role is Role.LEADER
    for _ in range(11):
        net.tick(["n1"])
    assert ld.role is Role.FOLLOWER and ld.term == 2


def test_leader_without_check_quorum_does_not_step_down():
    """Thesis §6.2 makes stepping down a check-quorum feature; with it off the
    isolated leader stays leader (and lease reads are refused, see below)."""
    net, ld = cluster_with_leader(check_quorum=False)
    net.isolate("n1")
    for _ in range(50):
        net.tick(["n1"])
    assert ld.role is Role.LEADER


def test_leader_with_quorum_stays_leader():
    """Thesis §6.2: a leader that does hear from a majority keeps leading."""
    net, ld = cluster_with_leader(N5)
    net.isolate("n4")
    net.isolate("n5")
    net.tick(n=50)
    assert ld.role is Role.LEADER and ld.term == 2


def test_pre_vote_keeps_partitioned_node_from_disrupting():
    """Thesis §9.6: with Pre-Vote a server rejoining after a partition "would
    not be able to increment its term", so it cannot depose the leader."""
    net, ld = cluster_with_leader()
    net.isolate("n3")
    for _ in range(60):
        net.tick(["n3"])
    assert net.nodes["n3"].term == 2 and net.nodes["n3"].role is Role.PRE_CANDIDATE
    net.heal()
    net.tick(n=30)
    assert ld.role is Role.LEADER and ld.term == 2
    assert net.nodes["n3"].role is Role.FOLLOWER and net.nodes["n3"].leader == "n1"


def test_without_pre_vote_partitioned_node_disrupts():
    """Thesis §9.6, the problem Pre-Vote solves: without it (and without
    check-quorum) a rejoining server with a higher term deposes the leader."""
    net, ld = cluster_with_leader(pre_vote=False, check_quorum=False)
    net.isolate("n3")
    for _ in range(60):
        net.tick(["n3"])
    high = net.nodes["n3"].term
    assert high > 3
    net.heal()
    net.tick(n=40)
    assert ld.term >= high  # the leader was forced to a later term


# ---------------------------------------------------------------------------
# Thesis §3.10: leadership transfer
# ---------------------------------------------------------------------------


def test_leader_transfer_to_up_to_date_follower():
    """Thesis §3.10: "3. The prior leader sends a TimeoutNow request to the
    target server. This request has the same effect as the target server's
    election timer firing" """
    net, ld = cluster_with_leader()
    ld.transfer_leader("n2")
    net.flush()
    assert [type(m) for m in net.queue] == [TimeoutNow]
    net.stabilize()
    assert net.leaders() == ["n2"] and net.nodes["n2"].term == 3
    assert ld.role is Role.FOLLOWER and ld.leader == "n2"


def test_leader_transfer_catches_target_up_first():
    """Thesis §3.10: "2. The prior leader fully updates the target server's
    log to match its own" before sending TimeoutNow."""
    net, ld = cluster_with_leader()
    net.isolate("n3")
    net.propose("n1", b"x")
    net.heal()
    ld.transfer_leader("n3")
    net.flush()
    assert not [m for m in net.queue if isinstance(m, TimeoutNow)]
    assert [m for m in net.queue if isinstance(m, AppendEntries) and m.to == "n3"]
    net.stabilize()
    assert net.leaders() == ["n3"]
    assert net.data("n3") == [b"x"]


def test_proposals_refused_during_transfer_and_transfer_aborts():
    """Thesis §3.10: "1. The prior leader stops accepting new client requests."
    ... "If the transfer does not complete within about an election timeout,
    the prior leader aborts the transfer and resumes accepting client
    requests." """
    net, ld = cluster_with_leader()
    net.isolate("n3")
    ld.transfer_leader("n3")
    assert ld.status().lead_transferee == "n3"
    with pytest.raises(ProposalDroppedError):
        ld.propose(b"x")
    with pytest.raises(ProposalDroppedError):
        ld.propose_conf_change(ConfChange((add_learner("n4"),)))
    for _ in range(9):
        net.tick(["n1", "n2"])
    assert ld.status().lead_transferee == "n3"
    net.tick(["n1", "n2"])
    assert ld.status().lead_transferee is None
    assert ld.role is Role.LEADER
    ld.propose(b"x")


def test_transfer_leader_misuse():
    """Thesis §3.10 transfers to a voter; other requests are refused."""
    net, ld = cluster_with_leader(("n1", "n2", "n3", "n4"))
    with pytest.raises(NotLeaderError) as exc:
        net.nodes["n2"].transfer_leader("n3")
    assert exc.value.leader == "n1"
    with pytest.raises(ConfChangeError):
        ld.transfer_leader("zz")
    ld.transfer_leader("n1")  # to itself: nothing to do
    net.flush()
    assert ld.status().lead_transferee is None
    assert not [m for m in net.queue if isinstance(m, TimeoutNow)]
    ld.transfer_leader("n2")
    ld.transfer_leader("n2")  # repeated: one TimeoutNow
    net.flush()
    assert len([m for m in net.queue if isinstance(m, TimeoutNow)]) == 1
    net.take()
    ld.transfer_leader("n1")  # back to itself aborts the transfer
    assert ld.status().lead_transferee is None


def test_transfer_aborted_when_target_removed():
    """Thesis §3.10: a transfer to a server that leaves the configuration can
    never complete, so it is abandoned."""
    net, ld = cluster_with_leader(("n1", "n2", "n3", "n4"))
    net.isolate("n4")
    ld.propose_conf_change(ConfChange((remove_node("n4"),)))
    ld.transfer_leader("n4")  # still a voter until the removal is applied
    with pytest.raises(ProposalDroppedError):
        ld.propose(b"x")
    net.stabilize()
    assert ld.conf_state().voters == {"n1", "n2", "n3"}
    assert ld.status().lead_transferee is None and ld.role is Role.LEADER
    ld.propose(b"x")


# ---------------------------------------------------------------------------
# Thesis §6.4: ReadIndex
# ---------------------------------------------------------------------------


def test_read_index_waits_for_commit_in_current_term():
    """Thesis §6.4: "1. If the leader has not yet marked an entry from its
    current term committed, it waits until it has done so." """
    node, st = node_with_log(voters=N3)
    rd = win_election(node, st)
    node.read_index(b"r1")
    rd2 = drain(node, st)
    assert rd2.read_states == []
    assert not [m for m in rd2.messages if isinstance(m, Heartbeat) and m.ctx]
    rd3 = ack_all(node, st, rd.messages)
    hbs = [m for m in rd3.messages if isinstance(m, Heartbeat) and m.ctx]
    assert sorted(m.to for m in hbs) == ["n2", "n3"]
    node.step(HeartbeatResponse(node.term, "n2", "n1", hbs[0].ctx))
    rd4 = drain(node, st)
    assert rd4.read_states == [ReadState(node.raft.log.committed, b"r1")]


def test_read_index_needs_quorum_of_heartbeat_acks():
    """Thesis §6.4: "3. ... it issues a new round of heartbeats and waits for
    their acknowledgments from a majority of the cluster." """
    node, st = node_with_log(voters=N5)
    ack_all(node, st, win_election(node, st).messages)
    node.read_index(b"a")
    node.read_index(b"b")
    node.read_index(b"b")  # readers may share a ctx: a request of its own
    rounds = list(dict.fromkeys(m.ctx for m in of_type(drain(node, st).messages, Heartbeat)))
    assert len(rounds) == 3  # one round per request, each named by the leader
    last = rounds[-1]
    node.step(HeartbeatResponse(2, "n2", "n1", last))
    node.step(HeartbeatResponse(2, "n2", "n1", last))
    node.step(HeartbeatResponse(2, "zz", "n1", last))  # not a member
    node.step(HeartbeatResponse(2, "n4", "n1", b"b"))  # a reader's ctx names no round
    assert drain(node, st).read_states == []
    node.step(HeartbeatResponse(2, "n3", "n1", last))
    # Acknowledging the later round confirms the earlier ones too, in order.
    assert drain(node, st).read_states == [
        ReadState(2, b"a"),
        ReadState(2, b"b"),
        ReadState(2, b"b"),
    ]
    node.step(HeartbeatResponse(2, "n4", "n1", last))  # late ack: nothing new
    node.step(HeartbeatResponse(2, "n4", "n1", b"zz"))  # unknown round
    assert drain(node, st).read_states == []


def test_read_index_pending_context_is_resent_with_heartbeats():
    """Thesis §6.4: the confirming heartbeat round must reach a majority, so a
    lost round is repeated with the next heartbeat."""
    node, st = node_with_log(voters=N3)
    ack_all(node, st, win_election(node, st).messages)
    node.read_index(b"r")
    (token,) = {m.ctx for m in of_type(drain(node, st).messages, Heartbeat)}  # lost
    node.tick()
    hbs = of_type(drain(node, st).messages, Heartbeat)
    assert {m.ctx for m in hbs} == {token}


def test_follower_read_is_forwarded_to_leader():
    """Thesis §6.4: "the follower issues a request to the leader to learn the
    current readIndex" and serves the read once it has applied that index."""
    net, ld = cluster_with_leader()
    net.propose("n1", b"x")
    net.nodes["n2"].read_index(b"f")
    net.flush()
    (req,) = [m for m in net.queue if isinstance(m, ReadIndexRequest)]
    # The request travels under the follower's own token, bound to this read.
    assert (req.frm, req.to) == ("n2", "n1") and req.ctx != b"f"
    net.stabilize()
    assert net.read_states["n2"] == [ReadState(3, b"f")]
    assert any(isinstance(m, ReadIndexResponse) for m in net.delivered)


def test_single_voter_leader_answers_reads_at_once():
    """Thesis §6.4: with one server its own commit index is already
    confirmed by a majority (itself)."""
    st = MemoryStorage.bootstrap(["n1"])
    node = RawNode(make_config("n1"), st)
    node.campaign()
    drain(node, st)
    assert node.role is Role.LEADER
    node.read_index(b"x")
    assert drain(node, st).read_states == [ReadState(2, b"x")]


def test_lease_read_requires_check_quorum():
    """Thesis §6.4.1: lease reads rely on the leader stepping down in time,
    "this approach assumes a bound on clock drift" and on check-quorum."""
    with pytest.raises(ConfigError, match="check_quorum"):
        Config(id="n1", read_only=ReadOnlyOption.LEASE_BASED, check_quorum=False).validate()
    with pytest.raises(ConfigError):
        RawNode(
            make_config("n1", read_only=ReadOnlyOption.LEASE_BASED, check_quorum=False),
            MemoryStorage.bootstrap(["n1"]),
        )


def test_lease_read_served_without_heartbeat_round():
    """Thesis §6.4.1: "The leader would use the normal heartbeat mechanism to
    maintain a lease" - a read inside the lease needs no extra round."""
    node, st = node_with_log(voters=N3, read_only=ReadOnlyOption.LEASE_BASED)
    ack_all(node, st, win_election(node, st).messages)
    node.read_index(b"l")
    rd = drain(node, st)
    assert rd.read_states == [ReadState(2, b"l")]
    assert not of_type(rd.messages, Heartbeat)
    node.step(HeartbeatResponse(2, "n2", "n1", b"l"))  # ignored in lease mode
    assert drain(node, st).read_states == []


def test_lease_read_not_served_after_new_leader_commits():
    """Thesis §6.4.1: with a lease, "the leader would not respond to read-only
    queries until its lease had expired ... it must not serve reads after a
    new leader could have been elected".  No clock drift here: every node
    ticks in lockstep, yet the deposed leader answers a lease read with an
    index older than an entry the new leader has committed."""
    net = Network(N3, read_only=ReadOnlyOption.LEASE_BASED)
    old = net.elect("n1")
    while True:  # run until the leader has just passed its quorum check
        net.tick()
        if old.raft.election_elapsed == 0:
            break
    net.isolate("n1")
    committed_elsewhere = 0
    stale_reads = []
    for t in range(30):
        net.tick()
        others = [n for n in net.leaders() if n != "n1"]
        if others and not committed_elsewhere:
            committed_elsewhere = net.propose(others[0], b"new")
            assert net.nodes[others[0]].raft.log.committed == committed_elsewhere
        if committed_elsewhere and old.role is Role.LEADER:
            old.read_index(b"r%d" % t)
            net.flush()
            stale_reads += [
                rs for rs in net.read_states["n1"] if rs.index < committed_elsewhere
            ]
    assert committed_elsewhere
    assert stale_reads == []


def test_read_index_refused_without_leader():
    """Thesis §6.4: reads go through a leader; with none known they fail."""
    node, st = node_with_log()
    with pytest.raises(NotLeaderError):
        node.read_index(b"x")
    node.campaign()
    with pytest.raises(NotLeaderError):
        node.read_index(b"x")


# ---------------------------------------------------------------------------
# §7 Log compaction: snapshots
# ---------------------------------------------------------------------------


def compact_leader(net: Network, nid: str) -> Snapshot:
    node, st = net.nodes[nid], net.storages[nid]
    applied = node.raft.log.applied
    snap = st.create_snapshot(applied, node.conf_state(), b"state@%d" % applied)
    st.compact(applied)
    return snap


def test_leader_sends_snapshot_to_lagging_follower():
    """§7: "the leader must occasionally send snapshots to followers that lag
    behind. This happens when the leader has already discarded the next log
    entry that it needs to send to a follower." """
    net, ld = cluster_with_leader()
    net.isolate("n3")
    for i in range(5):
        net.propose("n1", b"%d" % i)
    snap = compact_leader(net, "n1")
    net.heal()
    net.tick(n=3)
    installs = [m for m in net.delivered if isinstance(m, InstallSnapshot)]
    assert [(m.to, m.snapshot.index) for m in installs] == [("n3", snap.index)]
    assert net.snapshots["n3"] == [snap]
    assert net.storages["n3"].snapshot() == snap
    net.propose("n1", b"after")
    assert net.data("n3") == [b"after"]
    assert net.log_terms("n3")[-1] == net.log_terms("n1")[-1]
    assert ld.status().progress["n3"].match == ld.raft.log.last_index()


def test_follower_restores_snapshot_that_moves_it_forward():
    """§7: "Usually the snapshot will contain new information not already in
    the recipient's log. In this case, the follower discards its entire log;
    it is all superseded by the snapshot and may possibly have uncommitted
    entries that conflict with the snapshot." """
    node, st = node_with_log(terms=[2, 2, 2], term=2)
    cs = ConfState(voters=frozenset({"n1", "n2", "n4"}))
    snap = Snapshot(SnapshotMeta(10, 3, cs), b"img")
    node.step(InstallSnapshot(3, "n2", "n1", snap))
    rd = node.ready()
    assert rd.snapshot == snap and rd.committed_entries == []
    assert rd.messages == [AppendResponse(3, "n1", "n2", 10)]
    st.apply_snapshot(rd.snapshot)
    st.set_hard_state(rd.hard_state)
    node.advance()
    assert node.raft.log.committed == 10 and node.raft.log.applied == 10
    assert node.raft.log.last_index() == 10 and node.raft.log.first_index() == 11
    assert node.conf_state() == cs


def test_snapshot_describing_a_prefix_keeps_following_entries():
    """§7: "If instead the follower receives a snapshot that describes a
    prefix of its log ..., then log entries covered by the snapshot are
    deleted but entries following the snapshot are still valid and must be
    retained." """
    node, st = node_with_log(terms=[2, 2, 2, 2], term=2)
    node.step(InstallSnapshot(2, "n2", "n1", Snapshot(SnapshotMeta(3, 2, ConfState()))))
    rd = drain(node, st)
    assert rd.snapshot is None
    assert node.raft.log.last_index() == 5 and node.raft.log.committed == 3
    assert rd.messages == [AppendResponse(2, "n1", "n2", 3)]
    assert node.conf_state().voters == set(N3)


def test_stale_snapshot_is_ignored():
    """§7: a snapshot that does not move the follower forward (a
    retransmission) must not replace its state."""
    node, st = node_with_log(terms=[2, 2, 2, 2], term=2, commit=4)
    node.step(InstallSnapshot(2, "n2", "n1", Snapshot(SnapshotMeta(3, 2, ConfState()))))
    rd = drain(node, st)
    assert rd.snapshot is None
    assert node.raft.log.committed == 4 and node.raft.log.last_index() == 5
    assert rd.messages == [AppendResponse(2, "n1", "n2", 4)]


def test_snapshot_not_sent_to_inactive_peer_and_report_snapshot():
    """§7: the leader sends InstallSnapshot only to a follower that answers
    (one that may be down would waste the transfer); a failed transfer is
    retried after the next heartbeat response."""
    net, ld = cluster_with_leader()
    net.isolate("n3")
    for i in range(3):
        net.propose("n1", b"%d" % i)
    compact_leader(net, "n1")
    net.nodes["n1"].raft.tracker.progress["n3"].recent_active = False
    net.nodes["n1"].raft.tracker.progress["n3"].become_probe()
    from liferaft.core import leader as leader_mod

    assert not leader_mod.send_append(ld.raft, "n3")
    ld.raft.tracker.progress["n3"].recent_active = True
    assert leader_mod.send_append(ld.raft, "n3")
    assert ld.status().progress["n3"].state.value == "snapshot"
    ld.report_snapshot("n3", failed=True)
    pr = ld.status().progress["n3"]
    assert pr.state.value == "probe"
    net.take()
    net.heal()
    net.tick(n=4)
    assert net.nodes["n3"].raft.log.last_index() == ld.raft.log.last_index()


# ---------------------------------------------------------------------------
# Bad input: answered or ignored, never corrupting state
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        AppendEntries(2, "n2", "n1", -1, 0, (), 1),  # negative prev index
        AppendEntries(2, "n2", "n1", 1, 1, (Entry(3, 2),), 1),  # gap after prev
        AppendEntries(2, "n2", "n1", 1, 1, (Entry(2, 2), Entry(4, 2)), 1),  # gap
        AppendEntries(2, "n2", "n1", 1, 1, (Entry(2, 5),), 1),  # entry term > msg term
        AppendEntries(2, "n2", "n1", 2, 2, (Entry(3, 1),), 1),  # entry term < prev term
    ],
)
def test_malformed_append_entries_is_ignored(msg):
    """Figure 2: AppendEntries carries "entries[] log entries to store",
    following prevLogIndex; a message that cannot come from a correct leader
    changes nothing and gets no answer."""
    node, st = node_with_log(terms=[2], term=2)
    before = net_state(node)
    node.step(msg)
    rd = drain(node, st)
    assert rd.messages == [] and rd.entries == []
    assert net_state(node) == before


def net_state(node):
    log = node.raft.log
    return (
        node.term,
        node.raft.vote,
        log.committed,
        [log.term(i) for i in range(log.first_index(), log.last_index() + 1)],
    )


def test_append_entries_with_noncontiguous_middle_index_is_ignored():
    """Figure 2: entries follow prevLogIndex contiguously (Log Matching relies
    on index i holding the entry labelled i)."""
    node, st = node_with_log(terms=[], term=2)
    bad = (Entry(2, 2, b"a"), Entry(5, 2, b"b"), Entry(4, 2, b"c"))
    node.step(AppendEntries(2, "n2", "n1", 1, 1, bad, 1))
    drain(node, st)
    log = node.raft.log
    ents = log.slice(log.first_index(), log.last_index() + 1, None)
    assert [e.index for e in ents] == list(range(2, 2 + len(ents)))


def test_append_entries_with_decreasing_terms_is_ignored():
    """§5.3: terms in a log never decrease (a leader only appends entries of
    its own term after those it holds)."""
    node, st = node_with_log(terms=[], term=3)
    bad = (Entry(2, 3, b"a"), Entry(3, 2, b"b"), Entry(4, 3, b"c"))
    node.step(AppendEntries(3, "n2", "n1", 1, 1, bad, 1))
    rd = drain(node, st)
    assert rd.entries == [] and node.raft.log.last_index() == 1


def test_append_before_commit_index_never_touches_committed_entries():
    """§5.4 "State Machine Safety": a committed entry is never replaced.  An
    AppendEntries that starts before the commit index (a delayed
    retransmission, or a faulty peer) is answered with the commit index and
    leaves the log alone."""
    node, st = node_with_log(terms=[2, 2, 2], term=2, commit=4)
    before = net_state(node)
    node.step(AppendEntries(3, "n2", "n1", 3, 2, (Entry(4, 3), Entry(5, 3)), 5))
    rd = drain(node, st)
    assert rd.messages == [AppendResponse(3, "n1", "n2", 4)]
    assert net_state(node)[2:] == before[2:]
    assert [st.term(i) for i in range(2, 5)] == [2, 2, 2]


def test_heartbeat_commit_beyond_log_is_ignored():
    """§5.3: a follower commits only entries it holds ("index of last new
    entry"); a heartbeat claiming more is not trusted."""
    node, st = node_with_log(terms=[2, 2], term=2)
    node.step(Heartbeat(2, "n2", "n1", 50))
    rd = drain(node, st)
    assert node.raft.log.committed == 1
    assert rd.messages == [HeartbeatResponse(2, "n1", "n2")]
    node.step(Heartbeat(2, "n2", "n1", 3))
    drain(node, st)
    assert node.raft.log.committed == 3


def test_messages_for_another_node_or_from_unknown_nodes_are_ignored():
    """§5.1: servers communicate with the servers of the configuration; a
    stray message changes nothing."""
    node, st = node_with_log(voters=N3)
    node.step(AppendEntries(9, "n2", "n7", 1, 1, (Entry(2, 9),), 2))
    assert drain(node, st).messages == [] and node.term == 1
    ack_all(node, st, win_election(node, st).messages)
    before = ld_state(node)
    node.step(AppendResponse(node.term, "zz", "n1", 2))
    node.step(AppendResponse(node.term, "zz", "n1", 1, True, 0, 0))
    node.step(HeartbeatResponse(node.term, "zz", "n1"))
    node.step(VoteResponse(node.term, "n2", "n1", True))
    node.step(AppendEntries(node.term, "n2", "n1", 1, 1, (), 1))  # impossible
    assert ld_state(node) == before and drain(node, st).messages == []


def ld_state(node):
    return (node.term, node.role, node.raft.log.committed, node.raft.log.last_index(),
            {k: (v.match, v.next) for k, v in node.raft.tracker.progress.items()})


@pytest.mark.parametrize(
    "resp",
    [
        AppendResponse(2, "n2", "n1", 9, True, 0, 0),  # rejects an index never sent
        AppendResponse(2, "n2", "n1", 1, True, -5, 0),  # hint out of range
        AppendResponse(2, "n2", "n1", 1, True, 99, 7),
    ],
)
def test_out_of_range_rejection_does_not_corrupt_leader(resp):
    """§5.3: "After a rejection, the leader decrements nextIndex and retries";
    nextIndex never drops below matchIndex + 1 whatever the rejection says."""
    node, st = node_with_log(voters=N3)
    ack_all(node, st, win_election(node, st).messages)
    node.step(resp)
    rd = drain(node, st)
    pr = node.raft.tracker.progress["n2"]
    assert pr.match == 2 and pr.next >= pr.match + 1
    assert node.raft.log.committed == 2 and node.role is Role.LEADER
    for m in of_type(rd.messages, AppendEntries):
        assert m.prev_index >= pr.match


def test_ack_beyond_leader_log_is_ignored():
    """§5.3: matchIndex is the "index of highest log entry known to be
    replicated on server"; an acknowledgement of entries the leader never had
    cannot be true and must not move it (or crash the leader)."""
    node, st = node_with_log(voters=N3)
    ack_all(node, st, win_election(node, st).messages)
    node.step(AppendResponse(2, "n2", "n1", 100))
    pr = node.raft.tracker.progress["n2"]
    assert pr.match <= node.raft.log.last_index()


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"id": ""}, "id"),
        ({"heartbeat_tick": 0}, "heartbeat_tick"),
        ({"election_tick": 3, "heartbeat_tick": 3}, "election_tick"),
        ({"election_tick": 2, "heartbeat_tick": 5}, "election_tick"),
        ({"max_inflight_msgs": 0}, "max_inflight_msgs"),
        ({"max_size_per_msg": 0}, "max_size_per_msg"),
        ({"max_committed_size_per_ready": 0}, "max_committed_size_per_ready"),
        ({"applied": -1}, "applied"),
        ({"read_only": ReadOnlyOption.LEASE_BASED, "check_quorum": False}, "check_quorum"),
    ],
)
def test_config_validate_rejects_bad_settings(kw, msg):
    """§5.6: "broadcastTime << electionTimeout << MTBF" - the heartbeat must be
    shorter than the election timeout; other limits must be positive."""
    args = {"id": "n1", **kw}
    with pytest.raises(ConfigError, match=msg):
        Config(**args).validate()


def test_config_validate_accepts_defaults_and_lease_with_check_quorum():
    """§5.6: a valid timing configuration passes validation."""
    Config(id="n1").validate()
    Config(id="n1", read_only=ReadOnlyOption.LEASE_BASED).validate()
    Config(id="n1", election_tick=2, heartbeat_tick=1).validate()
