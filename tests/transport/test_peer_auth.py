"""The peer port trusts members only (issue 12, defects 2 and 6).

A stranger who can reach a node's peer port, but does not hold the cluster
secret, must get nothing past the handshake: no call (a forwarded propose,
a join), no Raft message (a forged AppendEntries at a high term), and no
large buffer.  The stranger here speaks the protocol by hand, as an attacker
would, or runs a real transport with no secret or the wrong one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from pathlib import Path

import msgspec
import pytest

from liferaft.codec import encode_message
from liferaft.core.messages import AppendEntries, Entry
from liferaft.runtime import Node, NodeConfig, ReplicatedCounter, peer_rpc
from liferaft.transport import CallError, TcpTransport
from liferaft.transport._frames import (
    MAGIC,
    PROTOCOL_VERSION,
    Hello,
    Kind,
    Reason,
    call_frame,
    control,
    frame,
    parse,
    read_frame,
)
from liferaft.transport.base import parse_address

from .conftest import MakeCluster
from .helpers import Recorder, greet, wait_until

LOGGER = "liferaft.transport"
SECRET = b"0123456789abcdef-the-cluster-secret"
AUTH = {"peer_secret": SECRET}


async def open_raw(address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = parse_address(address)
    return await asyncio.open_connection(host, port)


async def until_closed(reader: asyncio.StreamReader, seconds: float = 5.0) -> bytes:
    """What the node sent until it closed the connection; raises
    ``TimeoutError`` if it keeps it open longer than ``seconds``."""
    return await asyncio.wait_for(reader.read(), seconds)


def replies(data: bytes) -> list[Kind]:
    """The kinds of the frames in ``data``."""
    kinds = []
    while len(data) >= 5:
        (length,) = struct.unpack_from(">I", data)
        kinds.append(Kind(data[4]))
        data = data[4 + length :]
    return kinds


def hello(kind: Kind, frm: str, to: str, cluster: str = "c1") -> bytes:
    """A handshake opening, as anyone can write it: no secret is needed."""
    return control(kind, Hello(MAGIC, PROTOCOL_VERSION, cluster, frm, to))


def propose(data: bytes = b"written without the secret") -> bytes:
    return peer_rpc.encode(peer_rpc.Propose(data, False))


@pytest.mark.parametrize("claim", ["n2", "stranger"])
async def test_a_stranger_cannot_forward_a_propose_on_a_caller_connection(
    claim: str, make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    nodes = await make_cluster(["n1", "n2"], **AUTH)
    t1, r1 = nodes["n1"]
    reader, writer = await open_raw(t1.address)
    try:
        writer.write(hello(Kind.CALLER, claim, ""))
        writer.writelines(call_frame(7, propose()))
        got = await until_closed(reader)
    finally:
        writer.close()
    assert Kind.REPLY not in replies(got) and Kind.WELCOME not in replies(got)
    assert r1.calls == []
    assert t1.stats()["refused"] >= 1
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("refused" in m and claim in m for m in msgs), msgs
    # The real member still gets its calls through.
    assert await nodes["n2"][0].call("n1", b"hi", 5) == b"re:hi"


@pytest.mark.parametrize("secret", [None, b"not-the-cluster-secret-at-all"])
async def test_a_stranger_transport_cannot_call_or_join(
    secret: bytes | None, make_cluster: MakeCluster
) -> None:
    nodes = await make_cluster(["n1", "n2"], **AUTH)
    t1, r1 = nodes["n1"]
    stranger = (await make_cluster(["n2"], knows={"n2": []}, peer_secret=secret))["n2"][0]
    join = msgspec.msgpack.encode(["join", "evil", "127.0.0.1:21999", True])
    for payload in (join, propose()):
        with pytest.raises(CallError, match="refused by the peer"):
            await stranger.call_address(t1.address, payload, 5)
    assert r1.calls == []
    # A node holding the secret may call from outside the peer table: joining.
    joiner = (await make_cluster(["n9"], knows={"n9": []}, **AUTH))["n9"][0]
    assert await joiner.call_address(t1.address, join, 5) == b"re:" + join
    assert r1.calls == [("n9", join, False)]


@pytest.mark.parametrize("secret", [None, b"not-the-cluster-secret-at-all"])
async def test_a_member_id_without_the_secret_is_not_a_peer(
    secret: bytes | None, make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A transport claiming to be member n2, without the secret, never
    connects, and nothing it sends is delivered."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    nodes = await make_cluster(["n1"], **AUTH)
    t1, r1 = nodes["n1"]
    fake = (await make_cluster(["n2"], knows={"n2": []}, peer_secret=secret))["n2"][0]
    t1.set_peers({"n2": fake.address})
    fake.set_peers({"n1": t1.address})
    await wait_until(lambda: t1.stats()["refused"] >= 1, what="the fake n2 refused")
    fake.send(AppendEntries(1000, "n2", "n1", 0, 0, (Entry(1, 1000, b"forged"),), 1))
    assert not fake.stats()["peers"]["n1"]["connected"]
    assert r1.delivered == [] and "n2" not in t1.stats()["inbound"]
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("cluster secret" in m for m in msgs), msgs


async def test_a_forged_append_entries_does_not_move_a_nodes_term(tmp_path: Path) -> None:
    """The attack of the review: HELLO as member n2, then an AppendEntries
    at term + 1000.  With a secret the node refuses before reading it."""
    t1 = TcpTransport("n1", "c1", "127.0.0.1:0", peer_secret=SECRET, handshake_timeout=2.0)
    node = Node(
        NodeConfig(id="n1", cluster_id="c1", tick_interval=0.02, election_ticks=15),
        ReplicatedCounter(),
        t1,
        data_dir=tmp_path / "n1",
        # n2 is a member, but not running: n1 can never win an election, so
        # (with pre-vote) its term stays where it is unless someone moves it.
        # (n1's own entry is never dialed; port 0 would be refused as a member.)
        initial_members={"n1": "127.0.0.1:2", "n2": "127.0.0.1:1"},
    )
    await node.start()
    try:
        before, last = node.status().term, node.status().last_log_index
        forged = AppendEntries(
            before + 1000, "n2", "n1", 0, 0, (Entry(1, before + 1000, b"forged"),), 1
        )
        reader, writer = await open_raw(t1.address)
        try:
            writer.write(hello(Kind.HELLO, "n2", "n1") + frame(Kind.MSG, encode_message(forged)))
            with contextlib.suppress(TimeoutError):
                await until_closed(reader, 2.0)
        finally:
            writer.close()
        await asyncio.sleep(0.1)  # time for a delivered message to be stepped
        assert node.status().term == before
        assert node.status().last_log_index == last
        assert t1.stats()["received"] == 0
    finally:
        await node.stop()


async def test_an_oversized_frame_before_the_proof_is_refused_unread(
    make_cluster: MakeCluster,
) -> None:
    """The bigframe attack: a CALLER opening, then a 16 MiB frame header.
    The node closes the connection after the header, without waiting for
    (or buffering) the body."""
    nodes = await make_cluster(["n1"], **AUTH)
    t1, r1 = nodes["n1"]
    reader, writer = await open_raw(t1.address)
    try:
        writer.write(hello(Kind.CALLER, "stranger", ""))
        writer.write(struct.pack(">IB", 16 * 1024 * 1024, Kind.CALL) + b"\0" * 1024)
        await until_closed(reader)  # not TimeoutError: it did not wait for 16 MiB
    finally:
        writer.close()
    assert r1.calls == [] and t1.stats()["refused"] >= 1


async def test_an_idle_caller_connection_is_closed(make_cluster: MakeCluster) -> None:
    """A caller (here one holding the secret) that makes a call and then
    stays silent is hung up on; a peer connection is not."""
    nodes = await make_cluster(["n1", "n2"], caller_idle_timeout=0.2, **AUTH)
    t1, r1 = nodes["n1"]
    reader, writer = await open_raw(t1.address)
    try:
        await greet(reader, writer, Kind.CALLER, "n9", "", "c1", SECRET)
        writer.writelines(call_frame(1, b"ping"))
        kind, _ = await read_frame(reader, 4096)
        assert kind is Kind.REPLY
        assert await until_closed(reader) == b""
    finally:
        writer.close()
    assert t1.stats()["idle_closed"] == 1
    # The peer connection from n2 stayed up through the same silence.
    assert t1.stats()["inbound"] == ["n2"]
    assert await nodes["n2"][0].call("n1", b"still", 5) == b"re:still"


async def test_a_caller_with_a_slow_call_is_not_idle(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1"], caller_idle_timeout=0.1, **AUTH)
    t1, r1 = nodes["n1"]
    gate = asyncio.Event()

    async def slow(frm: str, payload: bytes, known: bool) -> bytes:
        await gate.wait()
        return b"done"

    r1.on_call = slow
    joiner = (await make_cluster(["n9"], knows={"n9": []}, **AUTH))["n9"][0]
    call = asyncio.ensure_future(joiner.call_address(t1.address, b"x", 5))
    await wait_until(lambda: r1.calls, what="the call arrives")
    await asyncio.sleep(0.3)  # three idle timeouts while the call runs
    gate.set()
    assert await call == b"done"
    assert t1.stats()["idle_closed"] == 0


async def test_inbound_connections_are_capped(make_cluster: MakeCluster) -> None:
    """Past max_inbound, the oldest connection still in its handshake is
    closed for the newcomer; when every slot holds a proven connection, the
    newcomer is closed at once.  Both are counted."""
    nodes = await make_cluster(["n1"], max_inbound=3, handshake_timeout=30.0, **AUTH)
    t1, _ = nodes["n1"]
    opened = [await open_raw(t1.address) for _ in range(3)]
    try:
        await wait_until(lambda: t1.stats()["handshaking"] == 3, what="three handshakes waiting")
        extra = await open_raw(t1.address)
        opened.append(extra)
        assert await until_closed(opened[0][0]) == b""
        assert t1.stats()["over_capacity"] == 1
        for r, _ in opened[1:]:
            assert not r.at_eof()
        # Three callers that prove the secret fill every slot...
        for r, w in opened[1:]:
            await greet(r, w, Kind.CALLER, "n9", "", "c1", SECRET)
        assert t1.stats()["callers"] == 3 and t1.stats()["handshaking"] == 0
        # ...and are never closed for a stranger: the stranger is.
        late_r, late_w = await open_raw(t1.address)
        opened.append((late_r, late_w))
        assert await until_closed(late_r) == b""
        assert t1.stats()["over_capacity"] == 2 and t1.stats()["callers"] == 3
    finally:
        for _, w in opened:
            w.close()
    # Once they are gone, a member gets in again.
    await wait_until(lambda: t1.stats()["callers"] == 0, what="the callers gone")
    rec = Recorder("n2")
    n2 = TcpTransport("n2", "c1", "127.0.0.1:0", **AUTH)
    await n2.start(rec)
    try:
        t1.set_peers({"n2": n2.address})
        n2.set_peers({"n1": t1.address})
        assert await n2.call("n1", b"in", 5) == b"re:in"
    finally:
        await n2.close()


async def test_an_old_version_dialer_is_refused_naming_both_versions(
    make_cluster: MakeCluster,
) -> None:
    nodes = await make_cluster(["n1", "n2"], **AUTH)
    t1, r1 = nodes["n1"]
    reader, writer = await open_raw(t1.address)
    try:
        writer.write(control(Kind.HELLO, Hello(MAGIC, 1, "c1", "n2", "n1")))
        kind, body = await read_frame(reader, 4096)
        assert await until_closed(reader) == b""
    finally:
        writer.close()
    assert kind is Kind.REFUSE
    assert parse(Reason, body).reason == (
        f"protocol version 1 unsupported (this node speaks version {PROTOCOL_VERSION})"
    )


async def test_a_callers_proof_cannot_be_reflected_to_its_own_node(
    make_cluster: MakeCluster,
) -> None:
    """The reflection attack: n1 makes a call to an address the attacker
    listens on (say, a joiner given a forged member list).  The attacker
    opens a caller connection to n1 claiming to be n1, hands n1's own
    CHALLENGE to n1's outgoing call, and sends the proof n1 makes back to
    n1.  Every proof is then right; n1 must still refuse itself."""
    nodes = await make_cluster(["n1"], caller_idle_timeout=0.5, **AUTH)
    t1, r1 = nodes["n1"]
    seen: asyncio.Future[list[Kind]] = asyncio.get_running_loop().create_future()
    join = msgspec.msgpack.encode(["join", "evil", "127.0.0.1:27999", True])

    async def mirror(dr: asyncio.StreamReader, dw: asyncio.StreamWriter) -> None:
        lr, lw = await open_raw(t1.address)
        try:
            kind, body = await read_frame(dr, 4096)  # n1's CALLER [.., "n1", ""]
            lw.write(frame(kind, body))
            kind, body = await read_frame(lr, 4096)  # n1's listener: CHALLENGE ["n1", nonce]
            if kind is not Kind.CHALLENGE:
                seen.set_result([kind])
                return
            dw.write(frame(kind, body))
            kind, body = await read_frame(dr, 4096)  # n1's call: PROOF for that CHALLENGE
            lw.write(frame(kind, body))
            lw.writelines(call_frame(1, join))
            seen.set_result(replies(await until_closed(lr)))
        except Exception as e:
            seen.set_exception(e)
        finally:
            lw.close()
            dw.close()

    server = await asyncio.start_server(mirror, "127.0.0.1", 0)
    try:
        host, port = server.sockets[0].getsockname()[:2]
        with pytest.raises(CallError):
            await t1.call_address(f"{host}:{port}", b"ping", 5)
        got = await asyncio.wait_for(seen, 5)
    finally:
        server.close()
    assert Kind.WELCOME not in got and Kind.REPLY not in got, got
    assert r1.calls == []


async def test_silent_strangers_cannot_lock_members_out_of_the_inbound_cap(
    make_cluster: MakeCluster,
) -> None:
    """The slow-drip attack on the cap: a stranger keeps max_inbound
    connections open without a word (each for a whole handshake timeout,
    then opens it again).  A member dialing meanwhile must still get in: a
    connection that has proven nothing gives way to a newer one."""
    nodes = await make_cluster(["n1"], max_inbound=3, handshake_timeout=30.0, **AUTH)
    t1, _ = nodes["n1"]
    silent = [await open_raw(t1.address) for _ in range(3)]
    try:
        await wait_until(lambda: t1.stats()["handshaking"] == 3, what="three silent handshakes")
        n2 = TcpTransport("n2", "c1", "127.0.0.1:0", min_backoff=0.01, max_backoff=0.05, **AUTH)
        await n2.start(Recorder("n2"))
        try:
            t1.set_peers({"n2": n2.address})
            n2.set_peers({"n1": t1.address})
            assert await n2.call("n1", b"in", 5) == b"re:in"
        finally:
            await n2.close()
        assert t1.stats()["over_capacity"] >= 1
    finally:
        for _, w in silent:
            w.close()


async def test_a_flood_of_strangers_is_counted_but_not_logged_line_by_line(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """Each refused handshake used to be a WARNING: a stranger opening
    connections in a loop could fill the disk with the node's log.  The
    first refusal is logged; the rest are counted (and summed up later)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    nodes = await make_cluster(["n1"], **AUTH)
    t1, _ = nodes["n1"]
    for i in range(30):
        reader, writer = await open_raw(t1.address)
        try:
            # Half refused by the rules, half by a bad frame.
            writer.write(hello(Kind.HELLO, f"stranger{i}", "n1") if i % 2 else b"GET / HTTP/1.1")
            await until_closed(reader)
        finally:
            writer.close()
    await wait_until(lambda: t1.stats()["refused"] == 30, what="thirty refusals counted")
    lines = [r for r in caplog.records if r.name == LOGGER and "refused" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
