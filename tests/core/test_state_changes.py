"""Ready.changes: every change of role, term or leader, with its reason.

The core does no logging; the runtime logs what these say (docs/core.md,
"The Ready contract").  Each test drives one cause and checks the reason an
operator would read in the log.
"""

from __future__ import annotations

from liferaft.core import ConfChange, Role, VoteResponse
from liferaft.core.confchange import remove_node
from liferaft.core.messages import AppendResponse, Heartbeat

from .netutil import Network, node_with_log

Change = tuple[str, int, str | None, str]


def changes(net: Network, nid: str) -> list[Change]:
    """What ``nid`` reported so far, as (role, term, leader, reason)."""
    return [
        (c.role.value, c.term, c.leader, c.reason)
        for rd in net.readies[nid]
        for c in rd.changes
    ]


def elected(net: Network, nid: str) -> None:
    net.nodes[nid].campaign()
    net.stabilize()
    assert net.nodes[nid].role is Role.LEADER


def test_an_election_timeout_is_reported_on_both_sides() -> None:
    net = Network(["n1", "n2", "n3"])
    for _ in range(40):  # the randomized timeout is below 2 * election_tick
        net.tick(["n1"])
        if net.nodes["n1"].role is not Role.FOLLOWER:
            break
    net.stabilize()
    assert changes(net, "n1") == [
        ("pre-candidate", 1, None, "election timeout"),
        ("candidate", 2, None, "won the pre-vote"),
        ("leader", 2, "n1", "won the election"),
    ]
    assert changes(net, "n2") == [
        ("follower", 2, None, "higher term from n1"),
        ("follower", 2, "n1", "heard from leader n1"),
    ]


def test_a_leader_that_loses_its_quorum_says_so() -> None:
    net = Network(["n1", "n2", "n3"])
    elected(net, "n1")
    net.readies["n1"].clear()
    net.isolate("n1")
    for _ in range(3 * 10):
        net.tick(["n1"])
        net.stabilize()
    assert changes(net, "n1")[0] == ("follower", 2, None, "lost quorum (check quorum)")


def test_a_transfer_names_both_ends() -> None:
    net = Network(["n1", "n2", "n3"])
    elected(net, "n1")
    for nid in net.readies:
        net.readies[nid].clear()
    net.nodes["n1"].transfer_leader("n2")
    net.stabilize()
    assert changes(net, "n1") == [
        ("follower", 3, None, "transfer to n2: higher term from n2"),
        ("follower", 3, "n2", "heard from leader n2"),
    ]
    assert changes(net, "n2") == [
        ("candidate", 3, None, "transfer from n1"),
        ("leader", 3, "n2", "won the election"),
    ]


def test_a_removed_leader_steps_down_and_says_why() -> None:
    net = Network(["n1", "n2", "n3"])
    elected(net, "n1")
    net.nodes["n1"].propose_conf_change(ConfChange((remove_node("n1"),)))
    net.stabilize()
    assert changes(net, "n1")[-1] == (
        "follower", 2, None, "stepped down: removed from the configuration"
    )


def test_lost_elections_and_pre_votes_are_reported() -> None:
    node, _ = node_with_log()
    node.campaign()  # pre-vote first
    node.step(VoteResponse(1, "n2", "n1", False, True))
    node.step(VoteResponse(1, "n3", "n1", False, True))
    assert [(c.role, c.reason) for c in node.ready().changes] == [
        (Role.PRE_CANDIDATE, "campaign requested"),
        (Role.FOLLOWER, "lost the pre-vote"),
    ]
    node.advance()
    node, _ = node_with_log(pre_vote=False)
    node.campaign()
    node.step(VoteResponse(2, "n2", "n1", False))
    node.step(VoteResponse(2, "n3", "n1", False))
    assert [(c.role, c.term, c.reason) for c in node.ready().changes] == [
        (Role.CANDIDATE, 2, "campaign requested"),
        (Role.FOLLOWER, 2, "lost the election"),
    ]


def test_a_candidate_that_hears_a_leader_of_its_term_follows_it() -> None:
    node, _ = node_with_log(pre_vote=False)
    node.campaign()
    node.step(Heartbeat(2, "n2", "n1", 1))
    assert [(c.role, c.leader, c.reason) for c in node.ready().changes] == [
        (Role.CANDIDATE, None, "campaign requested"),
        (Role.FOLLOWER, "n2", "heard from leader n2"),
    ]


def test_any_message_of_a_higher_term_is_a_reason() -> None:
    node, _ = node_with_log()
    node.step(AppendResponse(5, "n3", "n1", 0))
    (c,) = node.ready().changes
    assert (c.role, c.term, c.leader, c.reason) == (Role.FOLLOWER, 5, None, "higher term from n3")


def test_no_change_no_record() -> None:
    """A step down to the state the node is already in is not a change; the
    start of a node is not one either."""
    node, _ = node_with_log()
    assert not node.has_ready() and node.raft.changes == []
    node.raft.become_follower(node.term, None, "nothing new")
    assert node.raft.changes == []
    node.raft.learn_leader("n2")
    node.raft.learn_leader("n2")
    assert [c.reason for c in node.raft.changes] == ["heard from leader n2"]
