"""A bad member id or address is refused before anything is proposed, and a
committed one (it got past validation somehow) never kills a node.

docs/architecture.md, "Trust model": committed entries are trusted data, never trusted
code.  The poison pill this guards against: ``members add n4 127.0.0.1``
(no port) was committed, every replica raised applying it, and every
restart replayed it and raised again."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from liferaft.core import ChangeType, ConfChange, ConfChangeSingle
from liferaft.runtime import BadMemberError, NodeError, peer_rpc
from liferaft.transport.base import CallError, check_tcp_address
from tests.runtime.cluster import MemCluster, TcpCluster
from tests.runtime.test_node_tcp import eventually


def _add(node_id: str, ctx: object) -> ConfChange:
    raw = ctx if isinstance(ctx, bytes) else json.dumps(ctx).encode()
    return ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, node_id),), context=raw)


BAD_IDS = ["", " n4", "n 4", "n4\n", "n4=x", "a,b", "x" * 2000, ".", ".."]


@pytest.mark.parametrize("node_id", BAD_IDS)
async def test_a_bad_member_id_is_refused_before_proposing(node_id: str) -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        before = ld.status().last_log_index
        with pytest.raises(BadMemberError):
            await c.drive(ld.add_learner(node_id, "n4"))
        with pytest.raises(BadMemberError):
            await c.drive(ld.add_voter(node_id, "n4"))
        assert ld.status().last_log_index == before
    finally:
        await c.stop()


async def test_the_memory_transport_takes_node_ids_as_addresses() -> None:
    """What an address must look like is the transport's business: the memory
    transport's addresses are node ids, and a good one passes."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(ld.add_learner("n4", "n4"))
        assert "n4" in ld.status().learners
        with pytest.raises(BadMemberError):
            await c.drive(ld.add_learner("n5", ""))
    finally:
        await c.stop()


async def test_a_join_with_a_bad_id_is_refused_and_nothing_is_proposed() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        before = ld.status().last_log_index
        new = c.make("n5", initial=False)
        await new.start()
        with pytest.raises(BadMemberError):  # the joiner checks its own request first
            await c.drive(new.join(ld.id, ""))
        # A raw join that skipped that check is refused by the member it
        # reaches, and by a follower on its way to the leader.
        for contact in c.ids:
            for req in (peer_rpc.Join("n 4", "n4", True), peer_rpc.Join("n4", "", True)):
                raw = await c.drive(new.transport.call_address(contact, peer_rpc.encode(req), 5.0))
                rep = peer_rpc.decode_reply(raw)
                assert isinstance(rep, peer_rpc.Refused), (contact, req, rep)
                assert rep.code is peer_rpc.Refusal.BAD_MEMBER
            # Requests that do not even parse are refused as malformed.
            for junk in ([1, ["join", "n4", "n4", "yes"]], [1, ["join", "n4"]],
                         ["join", "n4", "n4", True], [2, ["join", "n4", "n4", True]]):
                with pytest.raises(CallError, match="peer call"):
                    await c.drive(
                        new.transport.call_address(contact, msgspec.msgpack.encode(junk), 5.0)
                    )
        assert ld.status().last_log_index == before
        assert set(ld.status().members) == set(c.ids)
    finally:
        await c.stop()


async def test_a_join_names_the_caller_itself() -> None:
    """A caller that proved itself as n5 (the secret, or a certificate
    naming n5) may ask to join as n5 only.  Otherwise whoever hijacks a
    joiner's proven connection (it relays the handshake of a joiner that
    was handed its address, e.g. through a forged member list over plain
    HTTP) could add any id at any address of its choosing."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        before = ld.status().last_log_index
        new = c.make("n5", initial=False)
        await new.start()
        for contact in c.ids:
            for who in ("evil", "n1"):
                req = peer_rpc.encode(peer_rpc.Join(who, "n4", True))
                raw = await c.drive(new.transport.call_address(contact, req, 5.0))
                rep = peer_rpc.decode_reply(raw)
                assert isinstance(rep, peer_rpc.Refused) and "n5" in rep.message, (contact, rep)
        assert ld.status().last_log_index == before
        assert set(ld.status().members) == set(c.ids)
        await c.drive(new.join(c.ids[1], "n5"))  # as itself, through a follower
        assert "n5" in ld.status().members
    finally:
        await c.stop()


BAD_ADDRS = ["127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:0", ":7000", "::1:7000",
             "host:port", "127.0.0.1:7000 ", ""]


@pytest.mark.parametrize("addr", BAD_ADDRS)
async def test_a_bad_peer_address_is_refused_over_tcp(tmp_path: Path, addr: str) -> None:
    c = TcpCluster(tmp_path, 3)
    await c.start()
    try:
        ld = await c.leader()
        before = ld.status().last_log_index
        with pytest.raises(BadMemberError):
            await ld.add_learner("n4", addr)
        with pytest.raises(BadMemberError):
            await ld.change_membership(_add("n4", {"n4": {"addr": addr}}))
        assert ld.status().last_log_index == before
    finally:
        await c.stop()


async def test_a_committed_bad_address_never_kills_a_node(tmp_path: Path) -> None:
    """Commit unusable member addresses straight through the core
    (``check=False`` skips validation, as a buggy member could), then show the
    cluster keeps serving, reports the address, and survives a full restart
    that replays the entries."""
    c = TcpCluster(tmp_path, 3)
    await c.start()
    try:
        ld = await c.leader()
        await c.sms[ld.id].add(1)
        await ld.change_membership(_add("n4", {"n4": {"addr": "127.0.0.1"}}), check=False)
        await ld.change_membership(_add("n5", {"n5": {"addr": ["junk", 1]}}), check=False)
        await ld.change_membership(_add("n6", b"{" * 100_000), check=False)
        await ld.change_membership(_add("n7", {"n7": "not a dict"}), check=False)
        assert await c.sms[ld.id].add(1) == 2
        for n in c.nodes.values():
            await eventually(lambda n=n: n.applied >= ld.applied)  # type: ignore[misc]
            assert not n.crashed.is_set()
            st = n.status()
            assert set(st.bad_peer_addresses) == {"n4", "n5"}, st.bad_peer_addresses
            assert "127.0.0.1" in st.bad_peer_addresses["n4"]
        # A full restart replays the entries from the log.
        await c.stop()
        for nid in c.ids:
            await (await c.make(nid)).start()
        ld2 = await c.leader()
        assert await c.sms[ld2.id].add(1) == 3
        for n in c.nodes.values():
            await eventually(lambda n=n: c.sms[n.id]._value == 3)  # type: ignore[misc]
            assert not n.crashed.is_set()
            assert set(n.status().bad_peer_addresses) == {"n4", "n5"}
        # The operator's way out: remove the bad member.
        await ld2.remove("n4")
        assert "n4" not in ld2.status().bad_peer_addresses
    finally:
        await c.stop()


async def test_a_member_with_a_bad_id_can_still_be_removed() -> None:
    """Removing is the operator's way out of a bad member, so it must work
    for an id that is committed (a raw change, an older version) but that
    would be refused today."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        for nid in ("n 4", "n=5"):
            await c.drive(ld.change_membership(_add(nid, {nid: {"addr": nid}}), check=False))
            assert nid in ld.status().learners
            await c.drive(ld.remove(nid))
            assert nid not in ld.status().learners and nid not in ld.members
    finally:
        await c.stop()


async def test_an_id_the_wire_cannot_carry_is_never_proposed() -> None:
    """A member id longer than the codec's limit is survivable when applied,
    but every later InstallSnapshot carries it in its conf state and no
    follower can decode one again: no lagging or new node ever catches up.
    So no change that adds one is proposed, whatever path it takes (a raw
    change with check=False, or the peer ``conf`` call of a member)."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        f = next(n for n in c.nodes.values() if n is not ld)
        before = ld.status().last_log_index
        long_id = "x" * 1500
        for n in (ld, f):
            with pytest.raises(NodeError):
                await c.drive(
                    n.change_membership(_add(long_id, {long_id: {"addr": "n4"}}), check=False)
                )
        assert ld.status().last_log_index == before
    finally:
        await c.stop()


UNDIALABLE = ["[/]:7000", "[red]:7000", "a..b:7000", "a" * 64 + ".io:7000", "x" * 254 + ":7000",
              "127.0.0.1:\u0667\u0660\u0660\u0660", "a[/]b:7000", "a/b:7000", "[nonsense]:7000"]


@pytest.mark.parametrize("addr", UNDIALABLE)
def test_tcp_addresses_are_hosts_a_socket_can_dial(addr: str) -> None:
    """What check_tcp_address lets through is dialed by every node (and shown
    by the CLI): an IP literal or a host name, never a host that fails only
    when dialed (a label too long for IDNA) or that is markup ("[/]")."""
    with pytest.raises(ValueError):
        check_tcp_address(addr)


GOOD = ["127.0.0.1:7000", "[::1]:7000", "localhost:1", "node-1.svc:65535", "compose_node1:7000",
        "[fe80::1%eth0]:7000", "N1.Example.COM.:7000", "[10.0.0.1]:7000", "bücher.example:7000"]


@pytest.mark.parametrize("addr", GOOD)
def test_good_tcp_addresses_pass(addr: str) -> None:
    check_tcp_address(addr)
