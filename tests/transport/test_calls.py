"""Request/response calls beside the Raft traffic, over TCP and the memory network."""

from __future__ import annotations

import asyncio
import logging

import pytest
import trustme

from liferaft.codec import encode_message
from liferaft.core.messages import Heartbeat, InstallSnapshot, NodeId, Snapshot, SnapshotMeta
from liferaft.transport import CallError, MemoryNetwork, MemoryTransport
from liferaft.transport._frames import (
    MAGIC,
    PROTOCOL_VERSION,
    Hello,
    Kind,
    call_frame,
    control,
    frame,
    parse_reply,
    read_frame,
)

from .conftest import MakeCluster
from .helpers import Recorder, hanging, opening, wait_until, welcomed
from .test_tcp import connected, open_raw
from .test_tls import client_ctx, node_tls, server_ctx

LOGGER = "liferaft.transport"


async def boom(frm: NodeId, payload: bytes, known: bool) -> bytes:
    raise ValueError(f"no such thing as {payload.decode()}")


async def reversed_echo(frm: NodeId, payload: bytes, known: bool) -> bytes:
    """Answers call i after (50 - i) ms, so replies come back out of order."""
    i = int(payload)
    await asyncio.sleep((50 - i) * 0.001)
    return b"%d:%s" % (i * i, frm.encode())


# -- TCP -------------------------------------------------------------------------------


async def test_tcp_call_and_reply_both_ways(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    t2, r2 = nodes["n2"]
    # The first call waits for the first dial instead of failing.
    assert await t1.call("n2", b"ping", 5) == b"re:ping"
    assert await t2.call("n1", b"pong", 5) == b"re:pong"
    assert await t1.call("n2", b"", 5) == b"re:"
    assert r2.calls == [("n1", b"ping", True), ("n1", b"", True)]
    assert r1.calls == [("n2", b"pong", True)]
    # Calls and messages share the connection; messages still flow.
    t1.send(Heartbeat(1, "n1", "n2", 3))
    await wait_until(lambda: r2.delivered == [Heartbeat(1, "n1", "n2", 3)])
    s = t1.stats()
    assert s["calls_pending"] == 0 and s["peers"]["n2"]["calls_sent"] == 2
    assert s["peers"]["n2"]["sent"] == 1 and t2.stats()["calls_served"] == 2


async def test_tcp_fifty_concurrent_calls_are_matched_by_id(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, _ = nodes["n1"]
    t2, r2 = nodes["n2"]
    r2.on_call = reversed_echo
    replies = await asyncio.gather(*(t1.call("n2", b"%d" % i, 5) for i in range(50)))
    assert replies == [b"%d:n1" % (i * i) for i in range(50)]
    assert len(r2.calls) == 50
    assert t1.stats()["calls_pending"] == 0
    assert t1.stats()["peers"]["n2"]["calls_waiting"] == 0


async def test_tcp_remote_exception_comes_back_as_call_error(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, _ = nodes["n1"]
    _, r2 = nodes["n2"]
    r2.on_call = boom
    with pytest.raises(CallError, match=r"^remote error: ValueError: no such thing as x$"):
        await t1.call("n2", b"x", 5)
    r2.on_call = None  # the connection survived
    assert await t1.call("n2", b"y", 5) == b"re:y"
    assert t1.stats()["peers"]["n2"]["reconnects"] == 0


async def test_tcp_timeout_and_a_late_reply_is_ignored(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, _ = nodes["n1"]
    t2, r2 = nodes["n2"]
    release = asyncio.Event()
    r2.on_call = hanging(release=release)
    with pytest.raises(TimeoutError):
        await t1.call("n2", b"slow", 0.05)
    assert t1.stats()["calls_pending"] == 0
    assert t1.stats()["peers"]["n2"]["calls_waiting"] == 0
    release.set()
    await wait_until(lambda: t2.stats()["calls_served"] == 1, what="the late reply")
    r2.on_call = None
    # The late reply matched nothing and broke nothing.
    assert await t1.call("n2", b"next", 5) == b"re:next"
    assert t1.stats()["peers"]["n2"]["reconnects"] == 0


async def test_tcp_refusals_before_sending(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"], max_frame=2048, queue_size=4, direct_writes=False)
    t1, _ = nodes["n1"]
    t2, r2 = nodes["n2"]
    with pytest.raises(CallError, match="unknown peer 'n9'"):
        await t1.call("n9", b"x", 5)
    with pytest.raises(CallError, match="exceeds the frame limit"):
        await t1.call("n2", b"x" * 2048, 5)
    with pytest.raises(CallError, match="exceeds the frame limit"):
        await t1.call_address(t2.address, b"x" * 2048, 5)
    with pytest.raises(CallError, match="not a host:port"):
        await t1.call_address("nowhere", b"x", 5)
    # The largest payload that fits goes through (the reply is 3 bytes larger: too big).
    big = b"y" * (2048 - 9)
    r2.on_call = None
    with pytest.raises(CallError, match="remote error: CallError: a reply of 2042 bytes"):
        await t1.call("n2", big, 5)
    # A full queue fails a call at once rather than dropping it.
    await connected(t1, "n2")
    for i in range(4):
        t1.send(Heartbeat(1, "n1", "n2", i))
    with pytest.raises(CallError, match="queue to peer n2 is full"):
        await t1.call("n2", b"x", 5)
    await wait_until(lambda: len(r2.delivered) == 4)
    assert [c[1] for c in r2.calls] == [big]
    # A peer whose connection is down fails at once.
    await t2.close()
    await wait_until(lambda: t1.stats()["peers"]["n2"]["state"] == "down")
    with pytest.raises(CallError, match="unreachable"):
        await t1.call("n2", b"x", 5)


async def test_tcp_a_lost_connection_fails_pending_calls(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2", "n3"])
    t1, r1 = nodes["n1"]
    t2, r2 = nodes["n2"]
    t3, _ = nodes["n3"]
    started: list[bytes] = []
    r2.on_call = hanging(started)
    r1.on_call = hanging(started)
    calls = [asyncio.create_task(t1.call("n2", b"%d" % i, 10)) for i in range(3)]
    by_address = asyncio.create_task(t3.call_address(t2.address, b"a", 10))
    await wait_until(lambda: len(started) == 4, what="calls started")
    await t2.close()
    for c in [*calls, by_address]:
        with pytest.raises(CallError, match="lost|closed"):
            await asyncio.wait_for(c, 2)
    assert t1.stats()["calls_pending"] == 0
    # Closing the caller fails its own pending calls.
    pending = [
        asyncio.create_task(t3.call("n1", b"x", 10)),
        asyncio.create_task(t3.call_address(t1.address, b"y", 10)),
    ]
    await wait_until(lambda: len(started) == 6, what="calls to n1 started")
    await t3.close()
    for c in pending:
        with pytest.raises(CallError, match="transport is closed"):
            await asyncio.wait_for(c, 2)
    with pytest.raises(CallError, match="transport is closed"):
        await t3.call("n1", b"z", 1)
    # n1 cancels the handlers of the calls whose connections are gone.
    await wait_until(lambda: not t1._served.serving, what="n1's handlers cancelled")


async def test_tcp_call_address_from_a_stranger(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    t2, _ = nodes["n2"]
    stranger = (await make_cluster(["new"]))["new"][0]
    assert await stranger.call_address(t1.address, b"join me", 5) == b"re:join me"
    assert r1.calls == [("new", b"join me", False)]
    # A member calling by address is a known peer.
    assert await t2.call_address(t1.address, b"hi", 5) == b"re:hi"
    assert r1.calls[-1] == ("n2", b"hi", True)
    # Concurrent one-off calls; each connection is closed after its reply.
    r1.on_call = reversed_echo
    got = await asyncio.gather(*(stranger.call_address(t1.address, b"%d" % i, 5) for i in (3, 7)))
    assert got == [b"9:new", b"49:new"]
    await wait_until(lambda: t1.stats()["callers"] == 0, what="caller connections closed")
    assert t1.stats()["inbound"] == ["n2"] and "new" not in t1.stats()["peers"]
    r1.on_call = boom
    with pytest.raises(CallError, match="remote error: ValueError: no such thing as q"):
        await stranger.call_address(t1.address, b"q", 5)
    # Nobody listening: CallError, not a hang.
    dead = (await make_cluster(["dead"]))["dead"][0]
    address = dead.address
    await dead.close()
    with pytest.raises(CallError, match=f"call to {address} failed"):
        await stranger.call_address(address, b"x", 5)
    assert any("accepted caller new from" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("frm", ["stranger", "n2"])
@pytest.mark.parametrize("kind", ["msg", "snapshot"])
async def test_tcp_a_caller_connection_cannot_carry_raft_messages(
    frm: str, kind: str, make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    reader, writer = await open_raw(t1)
    writer.write(opening(Kind.CALLER, frm, ""))
    await welcomed(reader)
    writer.writelines(call_frame(7, b"legit"))
    k, body = await read_frame(reader, 4096)
    assert k is Kind.REPLY and parse_reply(body)[:2] == (7, True)
    assert bytes(parse_reply(body)[2]) == b"re:legit"
    if kind == "msg":
        writer.write(frame(Kind.MSG, encode_message(Heartbeat(1, frm, "n1", 99))))
    else:
        snap = InstallSnapshot(1, frm, "n1", Snapshot(SnapshotMeta(5, 1)))
        writer.write(frame(Kind.SNAP_BEGIN, encode_message(snap)))
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by n1
    writer.close()
    assert r1.calls == [(frm, b"legit", frm == "n2")]
    assert all(not isinstance(m, InstallSnapshot) for m in r1.delivered)
    assert not any(getattr(m, "commit", None) == 99 for m in r1.delivered)
    assert r1.sinks == []
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    want = f"closing connection from caller {frm}"
    assert any(want in m and "carries calls only" in m for m in msgs), msgs
    # The real peer n2 is unaffected.
    nodes["n2"][0].send(Heartbeat(1, "n2", "n1", 5))
    await wait_until(lambda: Heartbeat(1, "n2", "n1", 5) in r1.delivered)


async def test_tcp_caller_handshake_refusals(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    nodes = await make_cluster(["n1"])
    t1, r1 = nodes["n1"]
    other = (await make_cluster(["new"], cluster_id="other"))["new"][0]
    with pytest.raises(CallError, match="refused by the peer: wrong cluster id 'other'"):
        await other.call_address(t1.address, b"x", 5)
    # A caller that names another node is refused too.
    reader, writer = await open_raw(t1)
    writer.write(control(Kind.CALLER, Hello(MAGIC, PROTOCOL_VERSION, "c1", "x", "n7")))
    assert (await read_frame(reader, 4096))[0] is Kind.REFUSE
    writer.close()
    assert r1.calls == [] and t1.stats()["refused"] == 2
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("refused caller connection" in m and "wrong cluster id" in m for m in msgs), msgs


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tcp_calls_over_mutual_tls(make_cluster: MakeCluster, ca: trustme.CA) -> None:
    nodes = await make_cluster(
        ["n1", "n2"], per_node={"n1": node_tls(ca, "n1"), "n2": node_tls(ca, "n2")}
    )
    t1, r1 = nodes["n1"]
    assert await t1.call("n2", b"secret", 5) == b"re:secret"
    # A joiner's certificate names it, like a member's.
    stranger = (await make_cluster(["new"], **node_tls(ca, "new")))["new"][0]
    assert await stranger.call_address(t1.address, b"join", 5) == b"re:join"
    assert r1.calls == [("new", b"join", False)]
    # TLS rules apply to callers: no client certificate, no call.
    nocert = (
        await make_cluster(
            ["bad"], ssl_server=server_ctx(ca, True), ssl_client=client_ctx(ca, None)
        )
    )["bad"][0]
    with pytest.raises(CallError, match="failed"):
        await nocert.call_address(t1.address, b"x", 5)
    assert len(r1.calls) == 1


# -- memory -----------------------------------------------------------------------------

Nodes = dict[str, tuple[MemoryTransport, Recorder]]


async def mem(net: MemoryNetwork, ids: tuple[str, ...] = ("n1", "n2", "n3")) -> Nodes:
    nodes: Nodes = {}
    for nid in ids:
        t = net.transport(nid)
        rec = Recorder(nid)
        await t.start(rec)
        t.set_peers({p: "" for p in ids})
        nodes[nid] = (t, rec)
    return nodes


async def test_memory_call_and_call_address() -> None:
    net = MemoryNetwork()
    nodes = await mem(net)
    t1, r1 = nodes["n1"]
    _, r2 = nodes["n2"]
    assert await t1.call("n2", b"ping", 1) == b"re:ping"
    assert r2.calls == [("n1", b"ping", True)]
    new = net.transport("new")
    await new.start(Recorder("new"))
    assert await new.call_address("n1", b"join", 1) == b"re:join"
    assert r1.calls == [("new", b"join", False)]
    with pytest.raises(CallError, match="unknown peer 'new'"):
        await t1.call("new", b"x", 1)
    with pytest.raises(CallError, match="unreachable"):
        await new.call_address("n9", b"x", 1)
    r2.on_call = reversed_echo
    got = await asyncio.gather(*(t1.call("n2", b"%d" % i, 5) for i in range(50)))
    assert got == [b"%d:n1" % (i * i) for i in range(50)]
    r2.on_call = boom
    with pytest.raises(CallError, match=r"^remote error: ValueError: no such thing as z$"):
        await t1.call("n2", b"z", 1)
    assert t1.stats()["calls_pending"] == 0


async def test_memory_timeout_late_reply_and_pause() -> None:
    net = MemoryNetwork()
    nodes = await mem(net)
    t1, _ = nodes["n1"]
    _, r2 = nodes["n2"]
    release = asyncio.Event()
    r2.on_call = hanging(release=release)
    with pytest.raises(TimeoutError):
        await t1.call("n2", b"slow", 0.02)
    release.set()
    await wait_until(lambda: nodes["n2"][0].stats()["calls_served"] == 1)
    await net.settle()  # the late reply arrives and is ignored
    r2.on_call = None
    # A pause holds the call (and then its reply) until resumed.
    net.pause()
    c = asyncio.create_task(t1.call("n2", b"held", 5))
    await asyncio.sleep(0.01)
    assert not c.done() and net.held == 1 and len(r2.calls) == 1
    net.resume()
    assert await c == b"re:held"


async def test_memory_partitions_and_closes_fail_calls() -> None:
    net = MemoryNetwork()
    nodes = await mem(net)
    t1, r1 = nodes["n1"]
    t2, r2 = nodes["n2"]
    t3, _ = nodes["n3"]
    net.partition(["n1"], ["n2", "n3"])
    with pytest.raises(CallError, match="unreachable"):
        await t1.call("n2", b"x", 1)
    net.heal()
    # A partition while the call is on the wire.
    net.pause()
    c = asyncio.create_task(t1.call("n2", b"x", 5))
    await asyncio.sleep(0)
    net.isolate("n2")
    net.resume()
    with pytest.raises(CallError, match="lost"):
        await c
    net.heal()
    # A partition while the handler runs loses the reply.
    release = asyncio.Event()
    r2.on_call = hanging(release=release)
    c = asyncio.create_task(t1.call("n2", b"y", 5))
    await wait_until(lambda: len(r2.calls) == 1)
    net.cut("n1", "n2")
    release.set()
    with pytest.raises(CallError, match="reply from n2 was lost"):
        await c
    net.heal()
    # The serving node closes: the caller fails; the caller closes: its calls fail.
    r2.on_call = hanging()
    c = asyncio.create_task(t1.call("n2", b"z", 5))
    await wait_until(lambda: len(r2.calls) == 2)
    await t2.close()
    with pytest.raises(CallError, match="n2 closed"):
        await c
    r1.on_call = hanging()
    c = asyncio.create_task(t3.call("n1", b"w", 5))
    await wait_until(lambda: len(r1.calls) == 1)
    await t3.close()
    with pytest.raises(CallError, match="transport is closed"):
        await c
    with pytest.raises(CallError, match="transport is closed"):
        await t3.call("n1", b"w", 5)
    await t1.close()
