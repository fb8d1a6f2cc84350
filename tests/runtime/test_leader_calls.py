"""Leader calls (liferaft/runtime/leader_calls.py): an application's handler
runs on the leader, whichever member calls it, and every failure comes back
as the word the caller can act on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from liferaft.runtime import (
    BadConfigError,
    CallFailedError,
    Node,
    NodeTimeoutError,
    NotLeaderError,
    UnknownCallError,
    peer_rpc,
)
from liferaft.transport.base import CallError
from tests.runtime.cluster import MemCluster, TcpCluster


class Ledger:
    """Records which node ran each call, so a test sees where it ran."""

    def __init__(self, c: MemCluster) -> None:
        self.c = c
        self.ran: list[tuple[str, bytes]] = []

    def install(self, node: Node) -> None:
        async def echo(payload: bytes) -> bytes:
            self.ran.append((node.id, payload))
            return node.id.encode() + b":" + payload

        async def boom(payload: bytes) -> bytes:
            self.ran.append((node.id, payload))
            raise ValueError("no such lease 7")

        async def slow(payload: bytes) -> bytes:
            self.ran.append((node.id, payload))
            await self.c.clock.sleep(60)
            return b"late"

        node.on_call("echo", echo)
        node.on_call("boom", boom)
        node.on_call("slow", slow)


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[MemCluster, Ledger]]:
    c = MemCluster(3)
    ledger = Ledger(c)
    for nid in c.ids:
        node = c.make(nid)
        ledger.install(node)
        await node.start()
    try:
        yield c, ledger
    finally:
        await c.stop()


async def test_any_member_runs_the_handler_on_the_leader(
    cluster: tuple[MemCluster, Ledger],
) -> None:
    c, ledger = cluster
    ld = await c.leader()
    for node in c.nodes.values():
        got = await c.drive(node.call_leader("echo", b"hi " + node.id.encode()))
        assert got == ld.id.encode() + b":hi " + node.id.encode()
    assert {who for who, _ in ledger.ran} == {ld.id}
    assert len(ledger.ran) == 3


async def test_each_failure_is_the_right_word(cluster: tuple[MemCluster, Ledger]) -> None:
    c, ledger = cluster
    ld = await c.leader()
    f = next(n for n in c.nodes.values() if n is not ld)
    for node in (ld, f):  # the same words on the leader and through it
        with pytest.raises(UnknownCallError, match="no leader call 'nope'"):
            await c.drive(node.call_leader("nope", b""))
        with pytest.raises(CallFailedError, match="ValueError: no such lease 7") as e:
            await c.drive(node.call_leader("boom", b"x"))
        assert "Traceback" not in str(e.value) and "\n" not in str(e.value)
        with pytest.raises(NodeTimeoutError, match="outcome unknown"):
            await c.drive(node.call_leader("slow", b"", timeout=1.0))
    assert {who for who, _ in ledger.ran} == {ld.id}


async def test_no_leader_is_not_leader(cluster: tuple[MemCluster, Ledger]) -> None:
    c, ledger = cluster
    ld = await c.leader()
    f = next(n for n in c.nodes.values() if n is not ld)
    c.net.isolate(f.id)
    await c.until(lambda: f.leader is None)
    with pytest.raises(NotLeaderError, match="no leader ran it"):
        await c.drive(f.call_leader("echo", b"x", timeout=1.0))
    assert ledger.ran == []


async def test_a_node_that_no_longer_leads_refuses_and_the_caller_follows(
    cluster: tuple[MemCluster, Ledger],
) -> None:
    c, ledger = cluster
    ld = await c.leader()
    f = next(n for n in c.nodes.values() if n is not ld)
    req = peer_rpc.encode(peer_rpc.AppCall("echo", b"x", 1.0))
    rep = peer_rpc.decode_reply(await c.drive(f.handle_call(ld.id, req, True)))
    assert isinstance(rep, peer_rpc.Refused) and rep.code is peer_rpc.Refusal.NOT_LEADER
    assert rep.leader_hint == ld.id and ledger.ran == []
    new = await c.drive(ld.transfer_leadership(f.id))
    assert new == f.id
    # The old leader forwards to the new one.
    assert await c.drive(ld.call_leader("echo", b"y")) == f.id.encode() + b":y"
    assert ledger.ran == [(f.id, b"y")]


async def test_a_stranger_is_refused(cluster: tuple[MemCluster, Ledger]) -> None:
    c, ledger = cluster
    ld = await c.leader()
    stranger = c.make("x9", initial=False)  # not a member: never added
    ledger.install(stranger)
    await stranger.start()
    req = peer_rpc.encode(peer_rpc.AppCall("echo", b"x", 1.0))
    with pytest.raises(CallError, match="PermissionError: x9 is not a member"):
        await c.drive(stranger.transport.call_address(ld.id, req, 5.0))
    with pytest.raises(PermissionError):
        await c.drive(ld.handle_call("x9", req, False))
    assert ledger.ran == []


async def test_registration_is_checked(cluster: tuple[MemCluster, Ledger]) -> None:
    c, _ = cluster
    node = c.nodes["n1"]

    async def h(payload: bytes) -> bytes:
        return payload

    with pytest.raises(BadConfigError, match="registered already"):
        node.on_call("echo", h)
    with pytest.raises(BadConfigError, match="non-empty string"):
        node.on_call("", h)
    with pytest.raises(BadConfigError, match="not callable"):
        node.on_call("x", "nope")  # type: ignore[arg-type]
    with pytest.raises(BadConfigError, match="payload must be bytes"):
        await node.call_leader("echo", "text")  # type: ignore[arg-type]


async def test_over_tcp(tmp_path: Path) -> None:
    """The same path over the real transport: a follower's call runs on the
    leader, and a handler's exception comes back as its type and text."""
    c = TcpCluster(tmp_path)
    ran: list[str] = []
    await c.reserve_ports()
    try:
        for nid in c.ids:
            node = await c.make(nid)

            async def who(payload: bytes, nid: str = nid) -> bytes:
                ran.append(nid)
                if payload == b"fail":
                    raise KeyError("lease 9")
                return nid.encode()

            node.on_call("who", who)
            await node.start()
        ld = await c.leader()
        f = next(n for n in c.nodes.values() if n is not ld)
        assert await f.call_leader("who", b"", timeout=5.0) == ld.id.encode()
        with pytest.raises(CallFailedError, match="KeyError: 'lease 9'"):
            await f.call_leader("who", b"fail", timeout=5.0)
        with pytest.raises(UnknownCallError):
            await f.call_leader("nope", b"", timeout=5.0)
        assert ran == [ld.id, ld.id]
    finally:
        await c.stop()
