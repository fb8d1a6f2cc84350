"""The RawNode API and the Ready contract: misuse raises typed errors, Ready
reports exactly what changed, restarts recover persisted state, and the
leader's flow control (pipelining, in-flight window, snapshots) behaves."""

from __future__ import annotations

import pytest

from liferaft.core import (
    AppendEntries,
    AppendResponse,
    ConfChange,
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
    ProgressState,
    ProposalDroppedError,
    RaftError,
    RawNode,
    ReadyOutstandingError,
    RequestVote,
    Role,
    SnapshotTemporarilyUnavailableError,
    SoftState,
    Transition,
    VoteResponse,
    add_learner,
    add_voter,
    remove_node,
)

from .netutil import (
    Network,
    ack_all,
    drain,
    make_config,
    node_with_log,
    persist,
    win_election,
)

N3 = ("n1", "n2", "n3")


def appends_to(msgs, to):
    return [m for m in msgs if isinstance(m, AppendEntries) and m.to == to]


# -- Ready / advance contract --------------------------------------------------------------


def test_ready_twice_or_advance_without_ready_is_misuse():
    node, st = node_with_log()
    with pytest.raises(RaftError, match="without an outstanding Ready"):
        node.advance()
    node.campaign()
    assert node.has_ready()
    node.ready()
    assert not node.has_ready()  # nothing more until advance()
    with pytest.raises(RaftError, match="called twice"):
        node.ready()
    node.advance()
    assert not node.has_ready()


def test_sole_voter_commits_only_what_it_has_persisted():
    """Thesis §10.2.1 lets a leader send AppendEntries before its own fsync
    only if it counts its own copy after that fsync.  A sole voter needs no
    acknowledgement, so counting its copy at once committed an entry that a
    crash could still erase, and its learner heard (and applied) that commit.
    Now the Ready that persists the entry tells nobody it is committed; the
    commit comes after advance()."""
    net = Network(("n1", "n2"), voters=("n1",), learners=("n2",))
    n1 = net.elect("n1")
    idx = n1.propose(b"phantom")
    rd = n1.ready()
    assert rd.send_first and [e.index for e in rd.entries] == [idx]
    assert n1.raft.log.committed < idx and not rd.committed_entries
    sent = [m for m in rd.messages if isinstance(m, AppendEntries) and m.to == "n2"]
    assert sent and all(m.commit < idx for m in sent)
    persist(net.storages["n1"], rd)
    net.queue.extend(rd.messages)
    n1.advance()
    assert n1.raft.log.committed == idx  # counted once it is on disk
    net.stabilize()
    assert [e.data for e in net.applied["n2"] if e.data] == [b"phantom"]


def test_a_leader_leaving_the_voters_still_leaves_an_explicit_joint_configuration():
    """A leader that proposed its own removal takes no more writes (so its
    log ends with the change), but it must still be able to finish the
    change: with JOINT_EXPLICIT the application proposes the leave itself."""
    net = Network(("n1", "n2", "n3", "n4"), voters=N3, learners=("n4",))
    n1 = net.elect("n1")
    cc = ConfChange((add_voter("n4"), remove_node("n1")), Transition.JOINT_EXPLICIT)
    n1.propose_conf_change(cc)
    net.stabilize()
    assert n1.conf_state().voters_outgoing == frozenset(N3)
    with pytest.raises(ProposalDroppedError, match="leaving"):
        n1.propose(b"more")
    n1.propose_conf_change(ConfChange())  # the explicit leave
    net.stabilize()
    for nid in ("n2", "n3", "n4"):
        cs = net.nodes[nid].conf_state()
        assert cs.voters == {"n2", "n3", "n4"} and not cs.voters_outgoing
    assert n1.role is not Role.LEADER  # it stepped down once the change applied


def test_no_step_while_a_ready_is_out():
    """Membership changes take effect in advance(), from the entries the
    Ready handed out.  A snapshot stepped in between (a newer configuration)
    would have an older change applied over it by that advance(), and the
    node's configuration would part from the cluster's for good.  So stepping
    with a Ready outstanding is refused with a typed error, and nothing is
    lost: the same message stepped after advance() is handled normally."""
    net = Network(N3)
    n1 = net.elect("n1")
    n3 = net.nodes["n3"]
    c = n1.propose_conf_change(ConfChange((add_learner("n4"),)))
    net.flush()
    net.deliver()
    net.flush()  # n2 and n3 hold the change and acknowledge it

    def others() -> None:  # the cluster moves on without n3 doing anything
        for _ in range(50):
            for nid in ("n1", "n2"):
                net.handle_ready(nid)
            if not net.deliver(lambda m: m.to != "n3"):
                return

    others()  # n1 commits the change
    net.deliver(lambda m: m.to == "n3")  # n3 learns it committed
    rd = n3.ready()
    assert c in [e.index for e in rd.committed_entries]
    persist(net.storages["n3"], rd)
    net.take(lambda m: m.to == "n3")
    n1.propose_conf_change(ConfChange((remove_node("n4"),)))
    others()
    st1 = net.storages["n1"]
    snap = st1.create_snapshot(n1.raft.log.applied, n1.conf_state(), b"")
    st1.compact(snap.index)
    assert "n4" not in snap.meta.conf_state.learners
    msg = InstallSnapshot(n1.term, "n1", "n3", snap)
    with pytest.raises(ReadyOutstandingError, match="advance"):
        n3.step(msg)
    n3.advance()
    n3.step(msg)  # now it is taken
    net.stabilize()
    assert n3.conf_state() == n1.conf_state()


def test_ready_reports_only_what_changed():
    """Figure 2: term and vote must reach stable storage before the messages
    that depend on them; Ready.must_sync says when a write is needed."""
    node, st = node_with_log(pre_vote=False)
    node.campaign()
    rd = node.ready()
    assert rd.soft_state == SoftState(Role.CANDIDATE, None)
    assert rd.hard_state == HardState(2, "n1", 1)
    assert rd.must_sync and rd.entries == [] and rd.snapshot is None
    assert {m.to for m in rd.messages} == {"n2", "n3"}
    st.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance()
    node.step(VoteResponse(2, "n3", "n1", False))  # changes nothing durable
    node.step(HeartbeatResponse(1, "n3", "n1"))  # stale, ignored
    assert not node.has_ready()
    node.step(VoteResponse(2, "n2", "n1", True))
    rd = node.ready()
    assert rd.soft_state == SoftState(Role.LEADER, "n1")
    assert rd.hard_state is None  # term and vote unchanged
    assert [(e.index, e.term, e.data) for e in rd.entries] == [(2, 2, b"")]
    assert rd.must_sync
    node.advance()


def test_only_a_new_term_vote_entry_or_snapshot_must_sync():
    """etcd's MustSync: a hard state that moves only the commit index need not
    be synced before sending, as a lost commit index is learned again."""
    node, st = node_with_log(pre_vote=False)
    rd = win_election(node, st)
    msgs = [m for m in rd.messages if isinstance(m, AppendEntries)]
    last = msgs[0].prev_index + len(msgs[0].entries)
    node.step(AppendResponse(node.term, "n2", "n1", last))
    rd = node.ready()
    assert rd.hard_state is not None and rd.hard_state.commit == 2
    assert rd.entries == [] and rd.snapshot is None
    assert not rd.must_sync
    node.advance()


def test_only_a_leader_with_an_unchanged_term_may_send_first():
    """Thesis §10.2.1: the leader may replicate while it writes its own log; a
    follower acknowledging entries, or a candidate asking for votes, may not."""
    node, st = node_with_log(pre_vote=False)
    node.campaign()
    rd = node.ready()
    assert rd.messages and not rd.send_first  # a candidate's vote must be durable first
    st.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance()
    node.step(VoteResponse(2, "n2", "n1", True))
    rd = node.ready()
    assert rd.soft_state is not None and rd.soft_state.role is Role.LEADER
    assert rd.entries and rd.send_first  # same term and vote: the empty entry may go out first
    st.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance()
    node.propose(b"x")
    rd = node.ready()
    assert rd.entries and rd.must_sync and rd.send_first
    node.advance()
    follower, _ = node_with_log("n2")
    follower.step(AppendEntries(2, "n1", "n2", 1, 1, (Entry(2, 2, b"y"),), 1))
    rd = follower.ready()
    assert rd.entries and rd.must_sync and not rd.send_first
    follower.advance()


def test_ready_without_sync_work():
    node, st = node_with_log()
    ack_all(node, st, win_election(node, st).messages)
    node.tick()
    rd = node.ready()
    assert rd.messages and not rd.must_sync
    node.advance()


def test_committed_entries_are_bounded_per_ready():
    """The caller applies in bounded batches (max_committed_size_per_ready)."""
    node, st = node_with_log(terms=[1] * 6, commit=7, max_committed_size_per_ready=40)
    sizes = []
    seen = []
    while node.has_ready():
        rd = drain(node, st)
        sizes.append(len(rd.committed_entries))
        seen += [e.index for e in rd.committed_entries]
    assert seen == [2, 3, 4, 5, 6, 7]
    assert max(sizes) < 6 and min(sizes) >= 1
    assert node.status().applied == 7


# -- proposals and API misuse --------------------------------------------------------------


def test_follower_refuses_proposals_with_leader_hint():
    net = Network(N3)
    net.elect("n1")
    for call in (
        lambda n: n.propose(b"x"),
        lambda n: n.propose_many([b"x"]),
        lambda n: n.propose_conf_change(ConfChange((add_learner("n4"),))),
    ):
        with pytest.raises(NotLeaderError) as exc:
            call(net.nodes["n2"])
        assert exc.value.leader == "n1"


def test_propose_many_appends_in_order():
    net = Network(N3)
    ld = net.elect("n1")
    assert ld.propose_many([]) == 2
    assert ld.propose_many([b"a", b"b", b"c"]) == 5
    net.stabilize()
    assert net.data("n3") == [b"a", b"b", b"c"]


def test_read_index_needs_a_context():
    net = Network(N3)
    ld = net.elect("n1")
    with pytest.raises(RaftError, match="ctx"):
        ld.read_index(b"")


def test_status_and_properties():
    net = Network(N3)
    ld = net.elect("n1")
    f = net.nodes["n2"]
    assert (ld.id, ld.term, ld.leader, ld.role) == ("n1", 2, "n1", Role.LEADER)
    s = f.status()
    assert (s.id, s.role, s.term, s.vote, s.leader) == ("n2", Role.FOLLOWER, 2, "n1", "n1")
    assert s.progress == {} and s.commit == s.applied == s.last_index == 2
    assert s.conf_state == ConfState(voters=frozenset(N3))
    ps = ld.status().progress
    assert set(ps) == set(N3) and ps["n2"].state is ProgressState.REPLICATE
    assert ps["n2"].match == 2 and not ps["n2"].learner


# -- restart -------------------------------------------------------------------------------


def test_restart_recovers_term_vote_and_commit():
    """Figure 2: currentTerm, votedFor and log[] are persistent state."""
    net = Network(N3)
    net.elect("n1")
    net.propose("n1", b"x")
    rn = net.restart("n2")
    assert (rn.term, rn.raft.vote, rn.status().commit) == (2, "n1", 3)
    net.stabilize()
    assert net.data("n2") == [b"x"]  # re-applied from the log


def test_restart_with_commit_beyond_log_refuses_to_start():
    st = MemoryStorage.bootstrap(list(N3))
    st.set_hard_state(HardState(3, None, 9))
    with pytest.raises(ConfigError, match="beyond the last log index"):
        RawNode(make_config("n1"), st)


def test_restart_with_applied_skips_reapplying():
    node, st = node_with_log(terms=[1, 1, 1], commit=4, applied=3)
    rd = drain(node, st)
    assert [e.index for e in rd.committed_entries] == [4]
    node2 = RawNode(make_config("n1", applied=99), st)
    assert node2.status().applied == 4  # never past the commit index


def test_restart_with_storage_keeping_entries_before_its_snapshot():
    """§7: a snapshot covers committed, applied state even when the store still
    keeps the entries before it."""
    st = MemoryStorage.bootstrap(list(N3))
    st.append([Entry(i, 1) for i in range(2, 6)])
    st.create_snapshot(4, ConfState(voters=frozenset(N3)), b"img")
    rn = RawNode(make_config("n1"), st)
    s = rn.status()
    assert (s.first_index, s.commit, s.applied, s.last_index) == (2, 4, 4, 5)


class SnapshotLater(MemoryStorage):
    """A store whose snapshot is sometimes still being produced."""

    busy = False

    def snapshot(self):
        if self.busy:
            raise SnapshotTemporarilyUnavailableError("not yet")
        return super().snapshot()


def test_start_while_snapshot_temporarily_unavailable():
    st = SnapshotLater()
    st.append([Entry(1, 1), Entry(2, 1)])
    st.set_hard_state(HardState(1, None, 2))
    st.busy = True
    rn = RawNode(make_config("n1"), st)
    assert (rn.status().commit, rn.status().applied) == (2, 0)


def test_restart_with_applied_keeps_membership_changes():
    """Thesis §4.1: "a server always uses the latest configuration in its log";
    restarting with Config.applied must not forget a change applied before."""
    net = Network(N3)
    ld = net.elect("n1")
    ld.propose_conf_change(ConfChange((add_voter("n4"),)))
    net.stabilize()
    want = net.nodes["n2"].conf_state()
    assert want.voters == {"n1", "n2", "n3", "n4"}
    applied = net.nodes["n2"].status().applied
    rn = net.restart("n2", applied=applied)
    assert rn.conf_state() == want


# -- membership entries as applied ---------------------------------------------------------


@pytest.mark.parametrize("data", [b"not json", ConfChange().encode()])
def test_unusable_conf_change_entry_is_ignored_by_every_node(data):
    """Thesis §4.1: every server applies the same sequence of changes, so an
    entry that is malformed (or invalid in the configuration in force) is
    ignored alike everywhere."""
    node, st = node_with_log()
    ent = Entry(2, 2, data, EntryType.CONF_CHANGE)
    node.step(AppendEntries(2, "n2", "n1", 1, 1, (ent,), 2))
    rd = drain(node, st)
    assert rd.committed_entries == [ent]
    assert node.conf_state() == ConfState(voters=frozenset(N3))
    assert node.status().applied == 2


def test_no_campaign_while_committed_conf_change_unapplied():
    """Thesis §4.1: a server uses the configuration of its log; one that is
    committed but not yet applied must be applied before campaigning."""
    node, st = node_with_log(pre_vote=False, check_quorum=False)
    cc = ConfChange((add_learner("n4"),)).encode()
    node.step(AppendEntries(2, "n2", "n1", 1, 1, (Entry(2, 2, cc, EntryType.CONF_CHANGE),), 2))
    node.campaign()
    for _ in range(30):
        node.tick()
    assert node.role is Role.FOLLOWER and node.term == 2
    rd = node.ready()
    assert not [m for m in rd.messages if isinstance(m, RequestVote)]
    st.save(rd.hard_state, rd.entries, rd.snapshot)
    node.advance()
    assert node.conf_state().learners == {"n4"}
    node.campaign()
    assert node.role is Role.CANDIDATE and node.term == 3


def test_config_switch_can_advance_commit():
    """§6: once C_new is in force, commitment counts C_new's majority; an
    entry held by a majority of C_new commits at that moment."""
    node, st = node_with_log(voters=("n1", "n2", "n3", "n4"))
    ack_all(node, st, win_election(node, st).messages)
    c = node.propose_conf_change(ConfChange((remove_node("n4"),)))
    x = node.propose(b"x")
    drain(node, st)
    node.step(AppendResponse(node.term, "n2", "n1", c))
    node.step(AppendResponse(node.term, "n3", "n1", c))
    node.step(AppendResponse(node.term, "n2", "n1", x))
    assert node.status().commit == c  # 2 of 4 hold x
    rd = drain(node, st)  # applies the removal
    assert node.conf_state().voters == {"n1", "n2", "n3"}
    assert node.status().commit == x  # 2 of 3 hold x
    assert [e.index for e in rd.committed_entries] == [c]
    rd = drain(node, st)
    assert {m.commit for m in rd.messages if isinstance(m, AppendEntries)} == {x}
    assert user_payloads(rd.committed_entries) == [b"x"]


def user_payloads(ents):
    return [e.data for e in ents if e.data and e.type is EntryType.NORMAL]


# -- roles ---------------------------------------------------------------------------------


def test_invalid_role_transitions_are_programming_errors():
    node, st = node_with_log()
    with pytest.raises(AssertionError):
        node.raft.become_leader()
    win_election(node, st)
    with pytest.raises(AssertionError):
        node.raft.become_candidate()
    with pytest.raises(AssertionError):
        node.raft.become_pre_candidate()


def test_candidate_ignores_replication_replies():
    """§5.2: a candidate only counts votes and yields to a leader; stray
    replication replies of its term change nothing."""
    node, st = node_with_log(pre_vote=False)
    node.campaign()
    drain(node, st)
    node.step(AppendResponse(2, "n2", "n1", 1))
    node.step(HeartbeatResponse(2, "n2", "n1"))
    assert node.role is Role.CANDIDATE and not node.has_ready()


def test_heartbeat_interval_in_ticks():
    """§5.2: the leader sends heartbeats every heartbeat_tick ticks."""
    node, st = node_with_log(heartbeat_tick=3)
    ack_all(node, st, win_election(node, st).messages)
    beats = []
    for _ in range(6):
        node.tick()
        beats.append(len([m for m in drain(node, st).messages if isinstance(m, Heartbeat)]))
    assert beats == [0, 0, 2, 0, 0, 2]


# -- flow control --------------------------------------------------------------------------


def test_pipelining_fills_the_window_after_an_ack():
    """Thesis §10.2.2: once a follower is known to match, the leader streams
    several AppendEntries without waiting (limited by max_size_per_msg and the
    in-flight window)."""
    node, st = node_with_log(max_size_per_msg=1, max_inflight_msgs=3)
    rd = win_election(node, st)
    node.propose_many([b"a", b"b", b"c", b"d", b"e"])
    drain(node, st)
    noop = appends_to(rd.messages, "n2")[0]
    node.step(AppendResponse(node.term, "n2", "n1", noop.prev_index + 1))
    msgs = appends_to(drain(node, st).messages, "n2")
    assert [len(m.entries) for m in msgs] == [1, 1, 1]  # window of 3, one entry each
    assert [m.entries[0].data for m in msgs] == [b"a", b"b", b"c"]
    assert node.status().progress["n2"].state is ProgressState.REPLICATE


def test_heartbeat_response_frees_a_slot_of_a_full_window():
    """Thesis §10.2.2: a full window may hold lost messages; a heartbeat
    response proves the follower is alive, so one more message may go."""
    node, st = node_with_log(max_inflight_msgs=1)
    ack_all(node, st, win_election(node, st).messages)
    node.propose(b"x")
    assert [m.entries[0].data for m in appends_to(drain(node, st).messages, "n2")] == [b"x"]
    node.propose(b"y")
    assert appends_to(drain(node, st).messages, "n2") == []  # window full
    node.step(HeartbeatResponse(node.term, "n2", "n1"))
    msgs = appends_to(drain(node, st).messages, "n2")
    assert [e.data for m in msgs for e in m.entries] == [b"y"]


def test_report_unreachable_stops_streaming():
    node, st = node_with_log()
    ack_all(node, st, win_election(node, st).messages)
    assert node.status().progress["n2"].state is ProgressState.REPLICATE
    node.report_unreachable("n2")
    node.report_unreachable("zz")
    assert node.status().progress["n2"].state is ProgressState.PROBE
    node.report_unreachable("n2")  # already probing
    assert node.status().progress["n2"].state is ProgressState.PROBE


def compacted_leader(**cfg):
    """A leader whose log before index 6 is compacted, and n2 needs it."""
    node, st = node_with_log(terms=[1, 1, 1, 1, 1], commit=6, **cfg)
    st.create_snapshot(5, ConfState(voters=frozenset(N3)), b"img5")
    st.compact(5)
    rd = win_election(node, st)  # term 2, no-op at 7
    probe = appends_to(rd.messages, "n2")[0]
    node.step(AppendResponse(node.term, "n2", "n1", probe.prev_index, True, 0, 0))
    return node, st


def test_snapshot_sent_when_entries_compacted_and_acked_back_to_replicate():
    """§7: "the leader must occasionally send snapshots to followers that lag
    behind"; once installed, normal replication resumes."""
    node, st = compacted_leader()
    rd = drain(node, st)
    (inst,) = [m for m in rd.messages if isinstance(m, InstallSnapshot)]
    assert inst.to == "n2" and inst.snapshot.index == 5
    assert node.status().progress["n2"].state is ProgressState.SNAPSHOT
    node.step(AppendResponse(node.term, "n2", "n1", 5))
    rd = drain(node, st)
    assert node.status().progress["n2"].state is ProgressState.REPLICATE
    (app,) = appends_to(rd.messages, "n2")
    assert app.prev_index == 5 and [e.index for e in app.entries] == [6, 7]


def test_snapshot_ack_behind_a_newer_compaction_keeps_snapshot_state():
    """§7: if the leader compacted past the snapshot it sent, the follower
    still lacks entries: another snapshot is needed, not AppendEntries."""
    node, st = compacted_leader()
    drain(node, st)
    node.step(AppendResponse(node.term, "n2", "n1", 1))  # ack the dummy: not news
    for i in (6, 7):
        node.step(AppendResponse(node.term, "n3", "n1", i))
    drain(node, st)
    st.create_snapshot(7, ConfState(voters=frozenset(N3)), b"img7")
    st.compact(7)
    node.step(AppendResponse(node.term, "n2", "n1", 5))
    rd = drain(node, st)
    assert node.status().progress["n2"].state is ProgressState.SNAPSHOT
    assert node.status().progress["n2"].match == 5
    assert appends_to(rd.messages, "n2") == []
    node.report_snapshot("n2", failed=False)
    pr = node.raft.tracker.progress["n2"]
    assert (pr.state, pr.next, pr.probe_sent) == (ProgressState.PROBE, 6, True)
    node.step(HeartbeatResponse(node.term, "n2", "n1"))
    (inst,) = [m for m in drain(node, st).messages if isinstance(m, InstallSnapshot)]
    assert inst.snapshot.index == 7


def test_snapshot_temporarily_unavailable_is_retried():
    """§7: producing a snapshot may take time; the leader just retries."""
    st = SnapshotLater()
    base = MemoryStorage.bootstrap(list(N3))
    st.apply_snapshot(base.snapshot())
    st.append([Entry(i, 1) for i in range(2, 7)])
    st.set_hard_state(HardState(1, None, 6))
    st.create_snapshot(5, ConfState(voters=frozenset(N3)), b"img5")
    st.compact(5)
    node = RawNode(make_config("n1"), st)
    rd = win_election(node, st)
    st.busy = True
    probe = appends_to(rd.messages, "n2")[0]
    node.step(AppendResponse(node.term, "n2", "n1", probe.prev_index, True, 0, 0))
    rd = drain(node, st)
    assert not [m for m in rd.messages if isinstance(m, InstallSnapshot)]
    assert node.status().progress["n2"].state is ProgressState.PROBE
    st.busy = False
    node.step(HeartbeatResponse(node.term, "n2", "n1"))
    assert [m.to for m in drain(node, st).messages if isinstance(m, InstallSnapshot)] == ["n2"]


def test_report_snapshot_only_acts_on_a_leader_sending_one():
    node, st = compacted_leader()
    drain(node, st)
    node.report_snapshot("n3", failed=True)  # not in SNAPSHOT state
    node.report_snapshot("zz", failed=True)
    assert node.status().progress["n2"].state is ProgressState.SNAPSHOT
    node.report_snapshot("n2", failed=True)
    pr = node.raft.tracker.progress["n2"]
    assert (pr.state, pr.pending_snapshot, pr.next) == (ProgressState.PROBE, 0, 1)
    follower, _ = node_with_log("n2")
    follower.report_snapshot("n1", failed=False)  # not a leader: no-op
    assert follower.role is Role.FOLLOWER


def test_memory_storage_refuses_to_compact_past_its_snapshot():
    st = MemoryStorage.bootstrap(list(N3))
    st.append([Entry(i, 1) for i in range(2, 6)])
    st.create_snapshot(3, ConfState(), b"")
    with pytest.raises(RaftError, match="beyond the snapshot"):
        st.compact(4)
    st.compact(3)
    assert st.first_index() == 4
