"""The one address book (liferaft/runtime/address_book.py) and the admin
calls a member sends the leader over the peer RPC (liferaft/runtime/admin.py).

The book lives in the membership changes' context, a versioned record: the
unversioned form of earlier builds is still read, another version is
refused naming both, and a committed one never raises out of apply.  A
member records its own entry with a change that re-adds it in the role the
leader sees, so the configuration never changes.  Transfer and member-info
calls are served to proven members only."""

from __future__ import annotations

import json
from typing import Any

import pytest

from liferaft.core import ChangeType, ConfChange, ConfChangeSingle, ConfState
from liferaft.runtime import (
    BadConfigError,
    BadMemberError,
    EventType,
    MembershipError,
    NotLeaderError,
    admin,
    peer_rpc,
)
from liferaft.runtime import address_book as book
from tests.runtime.cluster import MemCluster

# -- the context record ---------------------------------------------------------------------


def test_a_context_round_trips_and_carries_its_version() -> None:
    entries = {"n4": {"addr": "h:1", "client_addr": "h:2"}}
    raw = book.encode_context(entries)
    assert json.loads(raw) == {"v": book.CONTEXT_VERSION, "members": entries}
    assert book.decode_context(raw) == entries


@pytest.mark.parametrize(
    "legacy",
    [
        {"n4": {"addr": "h:1"}},
        {"v": {"addr": "h:1"}},  # a member named "v": an object, so not a version
        {"n4": {"addr": "h:1", "client_addr": "h:2", "zone": "a"}},
    ],
)
def test_the_unversioned_context_of_earlier_logs_is_read_as_before(legacy: dict[str, Any]) -> None:
    assert book.decode_context(json.dumps(legacy).encode()) == legacy


@pytest.mark.parametrize("version", [1, 3, 99])
def test_another_version_is_refused_in_one_line_naming_both(version: int) -> None:
    raw = json.dumps({"v": version, "members": {"n4": {"addr": "h:1"}}}).encode()
    with pytest.raises(book.ContextError) as e:
        book.decode_context(raw)
    msg = str(e.value)
    assert f"version {version}" in msg and f"version {book.CONTEXT_VERSION}" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("raw", [b"{", b"[1]", b'"x"', b'{"v": 2}', b'{"v": 2, "members": 3}'])
def test_malformed_contexts_are_refused(raw: bytes) -> None:
    with pytest.raises(book.ContextError):
        book.decode_context(raw)


def test_an_entry_that_is_not_an_object_is_dropped_or_refused_when_strict() -> None:
    raw = json.dumps({"n4": "junk", "n5": {"addr": "h:1"}}).encode()
    assert book.decode_context(raw) == {"n5": {"addr": "h:1"}}
    with pytest.raises(book.ContextError, match="n4"):
        book.decode_context(raw, strict=True)


def test_addresses_are_text_whatever_was_committed() -> None:
    a = book.addresses({"addr": ["junk", 1], "client_addr": {"x": 1}})
    assert (a.peer_addr, a.client_addr) == ('["junk",1]', '{"x":1}')
    assert book.addresses(None) == book.MemberAddresses("", "")


# -- the member-info change -----------------------------------------------------------------

CONF = ConfState(voters=frozenset({"n1", "n2", "n3"}), learners=frozenset({"n4"}))


@pytest.mark.parametrize(
    "nid,kind", [("n2", ChangeType.ADD_VOTER), ("n4", ChangeType.ADD_LEARNER)]
)
def test_an_info_change_re_adds_the_member_in_its_role(nid: str, kind: ChangeType) -> None:
    from liferaft.core.confchange import apply_conf_change

    cc = book.info_change(CONF, nid, {"client_addr": "h:9"})
    assert cc.changes == (ConfChangeSingle(kind, nid),)
    assert book.decode_context(cc.context) == {nid: {"client_addr": "h:9"}}
    assert apply_conf_change(CONF, cc) == CONF  # the configuration is untouched


def test_no_info_change_for_a_stranger_or_in_a_joint_configuration() -> None:
    with pytest.raises(MembershipError, match="not a member"):
        book.info_change(CONF, "n9", {})
    joint = ConfState(voters=frozenset({"n1"}), voters_outgoing=frozenset({"n1", "n2"}))
    with pytest.raises(MembershipError, match="joint"):
        book.info_change(joint, "n1", {})


# -- in a running cluster -------------------------------------------------------------------


async def test_each_member_records_its_own_info_and_no_role_changes() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        n4 = c.make("n4", initial=False)
        await n4.start()
        await c.drive(n4.join(ld.id, "n4", voter=False))
        await c.until(lambda: n4.status().applied_index >= ld.status().commit_index)
        before = ld.status()
        for node in [*(c.nodes[i] for i in c.ids), n4]:  # voters, a follower, a learner
            await c.drive(node.set_member_info(client_addr="127.0.0.1:8002"))
        await c.until(lambda: all(
            book.holds(n.members.get(m), {"client_addr": "127.0.0.1:8002"})
            for n in c.nodes.values() for m in ("n1", "n2", "n3", "n4")
        ))
        after = ld.status()
        assert (after.voters, after.learners) == (before.voters, before.learners)
        assert after.members["n4"]["addr"] == "n4"  # the peer address is kept
    finally:
        await c.stop()


async def test_an_info_change_announces_no_member_added() -> None:
    """Subscribers of MEMBER_ADDED (the console, later) hear of a member
    added or promoted, not of a voter recording its client address at a
    start."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        seen: list[Any] = []
        off = [n.events.on(lambda ev: seen.append(ev)) for n in c.nodes.values()]
        await c.drive(ld.set_member_info(client_addr="127.0.0.1:8001"))
        await c.drive(c.nodes["n2"].set_member_info(client_addr="127.0.0.1:8002"))
        await c.until(lambda: all(
            book.holds(n.members.get("n2"), {"client_addr": "127.0.0.1:8002"})
            for n in c.nodes.values()
        ))
        for f in off:
            f()
        assert not [ev for ev in seen if ev.type is EventType.MEMBER_ADDED], seen
    finally:
        await c.stop()


async def test_keep_member_info_proposes_once_and_then_stays_quiet() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        await c.leader()
        node = c.nodes["n2"]
        info = {"client_addr": "127.0.0.1:8002"}
        await c.drive(admin.keep_member_info(node, info))
        index = node.status().last_log_index
        await c.drive(admin.keep_member_info(node, info))  # already held: nothing proposed
        assert node.status().last_log_index == index
        # Info the cluster refuses ends the loop (logged) instead of spinning.
        await c.drive(admin.keep_member_info(node, {"client_addr": "127.0.0.1:0"}))
    finally:
        await c.stop()


async def test_a_committed_context_of_another_version_never_stops_a_node() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        ctx = json.dumps({"v": 3, "members": {"n4": {"addr": "n4"}}}).encode()
        cc = ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, "n4"),), context=ctx)
        with pytest.raises(BadMemberError, match="version 3"):  # refused before proposing
            await c.drive(ld.change_membership(cc))
        await c.drive(ld.change_membership(cc, check=False))  # as a buggy member could
        for n in c.nodes.values():
            await c.until(lambda n=n: "n4" in n.members)  # type: ignore[misc]
            assert n.members["n4"] == {} and not n.crashed.is_set()  # context ignored
    finally:
        await c.stop()


async def test_transfer_from_a_follower_goes_to_the_leader_over_the_peer_rpc() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        f = next(n for n in c.nodes.values() if n is not ld)
        assert await c.drive(admin.transfer_leadership(f, f.id, 5.0)) == f.id
        await c.until(lambda: f.is_leader)
        with pytest.raises(BadConfigError):  # the leader's refusal, typed, through the follower
            await c.drive(admin.transfer_leadership(ld, "n9", 5.0))
    finally:
        await c.stop()


async def test_admin_calls_need_a_proven_member_naming_itself() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        xfer = peer_rpc.encode(peer_rpc.TransferLeader(None, 1.0))
        info = peer_rpc.encode(peer_rpc.SetMemberInfo("n2", b'{"client_addr":"h:1"}'))
        for req in (xfer, info):
            with pytest.raises(PermissionError):
                await c.drive(ld.handle_call("n2", req, known_peer=False))
        before = ld.status().last_log_index
        rep = peer_rpc.decode_reply(await c.drive(ld.handle_call("n3", info, known_peer=True)))
        assert isinstance(rep, peer_rpc.Refused) and rep.code is peer_rpc.Refusal.BAD_MEMBER
        assert ld.status().last_log_index == before
    finally:
        await c.stop()


def test_the_new_calls_round_trip_and_refusals_map_to_typed_errors() -> None:
    for msg in (peer_rpc.SetMemberInfo("n1", b"{}"), peer_rpc.TransferLeader("n2", 2.5)):
        assert peer_rpc.decode_request(peer_rpc.encode(msg)) == msg
    rep = peer_rpc.Transferred("n2")
    assert peer_rpc.decode_reply(peer_rpc.encode(rep)) == rep
    err = peer_rpc.error_of(peer_rpc.Refused(peer_rpc.Refusal.NOT_LEADER, "moved", "n3"), "n1")
    assert isinstance(err, NotLeaderError) and err.leader_hint == "n3"


# -- what the book takes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "info",
    [
        {"client_addr": "127.0.0.1:8002", "zone": ("a", "b")},  # comes back as a list
        {"client_addr": "127.0.0.1:8002", "weight": float("nan")},  # never equal to itself
        {"client_addr": "127.0.0.1:8002", "tags": {1: "x"}},  # comes back keyed "1"
    ],
)
async def test_info_the_book_would_not_hold_as_given_is_refused_not_proposed_forever(
    info: dict[str, Any],
) -> None:
    """keep_member_info proposes until the book holds ``info``; info that
    does not come back equal from JSON never would, and every round is a
    committed membership change, back to back.  So it is refused first."""
    c = MemCluster(3)
    await c.start()
    try:
        await c.leader()
        node = c.nodes["n2"]
        with pytest.raises(BadMemberError, match="JSON"):
            book.check_info("n2", info)
        before = node.status().last_log_index
        await c.drive(admin.keep_member_info(node, info), seconds=5.0)  # refused: returns
        assert node.status().last_log_index == before
    finally:
        await c.stop()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_a_context_nested_deeper_than_the_book_takes_is_refused() -> None:
    """Every reader of the book (status, snapshots, a restore, a join reply)
    walks what it holds recursively, from deeper stacks than apply: a depth
    apply just managed would fail there.  So the book takes shallow entries
    only, and the limit does not hang on the stack it is read from."""
    ok = book.MAX_DEPTH - 3  # the record, members, the entry
    assert "n4" in book.decode_context(book.encode_context({"n4": {"x": json.loads(_nested(ok))}}))
    deep = ('{"n4":{"client_addr":' + _nested(book.MAX_DEPTH) + '},"n5":{"addr":"h:1"}}').encode()
    for raw in (deep, b'{"v":2,"members":' + deep + b"}"):
        assert book.decode_context(raw) == {"n5": {"addr": "h:1"}}  # applied: dropped
        with pytest.raises(book.ContextError, match="deep"):
            book.decode_context(raw, strict=True)  # proposed: refused
    with pytest.raises(book.ContextError, match="deep"):  # past what json itself reads
        book.decode_context(_nested(100_000).encode())
    # Brackets inside strings are text, not depth.
    assert book.decode_context(b'{"n4":{"client_addr":"' + b"[" * 500 + b'"}}')
    with pytest.raises(BadMemberError, match="deep"):
        book.decode_info("n4", ('{"zone":' + _nested(book.MAX_DEPTH) + "}").encode())
