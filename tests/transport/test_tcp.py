"""TcpTransport on loopback: delivery, refusals, bad frames, queues, reconnects."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import struct

import pytest

from liferaft.codec import encode_message
from liferaft.core.messages import (
    AppendEntries,
    Entry,
    Heartbeat,
    InstallSnapshot,
    Message,
    Snapshot,
    SnapshotMeta,
)
from liferaft.transport import TcpTransport, format_address, parse_address
from liferaft.transport._frames import MAGIC, PROTOCOL_VERSION, Hello, Kind, control, frame

from ..codec.strategies import one_of_each
from .conftest import MakeCluster
from .helpers import Recorder, opening, wait_until, welcomed

LOGGER = "liferaft.transport"


def addressed(msg: Message, frm: str, to: str) -> Message:
    return dataclasses.replace(msg, frm=frm, to=to)


def hb(frm: str, to: str, commit: int = 0) -> Heartbeat:
    return Heartbeat(1, frm, to, commit)


async def connected(t: TcpTransport, *peers: str) -> None:
    await wait_until(
        lambda: all(t.stats()["peers"][p]["connected"] for p in peers),
        what=f"{t.node_id} connected to {peers}",
    )


# -- the contract ---------------------------------------------------------------------


async def test_every_message_type_roundtrips_between_three_nodes(
    make_cluster: MakeCluster,
) -> None:
    nodes = await make_cluster(["n1", "n2", "n3"])
    t1, r1 = nodes["n1"]
    r1.sources[10] = lambda: iter([b"snap", b"shot"])
    expected: dict[str, list[Message]] = {"n2": [], "n3": []}
    for to in ("n2", "n3"):
        for msg in one_of_each():
            m = addressed(msg, "n1", to)
            t1.send(m)
            expected[to].append(m)
    # And back, from n3 to n1, over n3's own connection.
    back = [addressed(m, "n3", "n1") for m in one_of_each() if not isinstance(m, InstallSnapshot)]
    for m in back:
        nodes["n3"][0].send(m)
    for to in ("n2", "n3"):
        rec = nodes[to][1]
        await wait_until(lambda rec=rec: len(rec.delivered) >= 10, what=f"delivery to {to}")
        # The snapshot is streamed beside the other traffic, so compare as sets.
        assert sorted(map(repr, rec.delivered)) == sorted(map(repr, expected[to]))
        assert rec.sinks[0].committed and rec.sinks[0].size == len(b"snapshot")
    await wait_until(lambda: len(r1.delivered) >= len(back))
    assert r1.delivered == back
    await wait_until(lambda: len(r1.statuses) == 2)
    assert sorted(r1.statuses) == [("n2", True), ("n3", True)]
    s = t1.stats()
    assert s["peers"]["n2"]["connected"] and s["peers"]["n2"]["sent"] == 9
    assert s["peers"]["n2"]["snapshots_sent"] == 1
    assert {"connected", "sent", "dropped", "reconnects"} <= set(s["peers"]["n3"])


async def test_order_is_kept_and_writes_are_batched(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, _ = nodes["n1"]
    _, r2 = nodes["n2"]
    await connected(t1, "n2")
    n = 3000
    for i in range(n):
        ents = (Entry(i + 1, 1, b"x" * 100),)
        t1.send(AppendEntries(1, "n1", "n2", i, 1 if i else 0, ents, i))
    await wait_until(lambda: len(r2.delivered) == n, what="all appends")
    assert [m.prev_index for m in r2.delivered] == list(range(n))  # type: ignore[attr-defined]
    assert t1.stats()["peers"]["n2"]["sent"] == n
    assert t1.stats()["peers"]["n2"]["dropped"] == 0


async def test_port_zero_exposes_the_bound_address(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1"])
    host, port = parse_address(nodes["n1"][0].address)
    assert host == "127.0.0.1" and port > 0


def test_addresses_parse() -> None:
    assert parse_address("127.0.0.1:7001") == ("127.0.0.1", 7001)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert format_address("::1", 80) == "[::1]:80"
    for bad in ["nohost", ":80", "h:", "h:x", "::1:80", "h:70000"]:
        with pytest.raises(ValueError):
            parse_address(bad)
    with pytest.raises(ValueError):
        TcpTransport("n1", "c", "127.0.0.1:0").set_peers({"n2": "nope"})


def test_backoff_grows_with_jitter_from_the_given_rng() -> None:
    t = TcpTransport(
        "n1", "c", "127.0.0.1:0", rng=random.Random(3), min_backoff=0.1, max_backoff=1.0
    )
    delays = [t._link_settings.backoff(a) for a in range(1, 8)]
    for attempt, d in enumerate(delays, start=1):
        ceiling = min(1.0, 0.1 * 2 ** (attempt - 1))
        assert ceiling / 2 <= d <= ceiling
    again = TcpTransport(
        "n1", "c", "127.0.0.1:0", rng=random.Random(3), min_backoff=0.1, max_backoff=1.0
    )
    assert [again._link_settings.backoff(a) for a in range(1, 8)] == delays


# -- refusals ---------------------------------------------------------------------------


async def test_send_to_an_unknown_peer_is_dropped_and_reported(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    t1.send(hb("n1", "n9"))
    assert r1.unreachables == []  # never from inside send()
    await wait_until(lambda: r1.unreachables == ["n9"])
    assert t1.stats()["unknown_dropped"] == 1


async def test_a_connection_from_an_unknown_peer_is_refused_and_logged(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    # n3 knows n1, but n1 does not know n3.
    nodes = await make_cluster(["n1", "n2", "n3"], knows={"n1": ["n2"], "n2": ["n1"], "n3": ["n1"]})
    t1, r1 = nodes["n1"]
    t3, r3 = nodes["n3"]
    await wait_until(lambda: t1.stats()["refused"] >= 1, what="refusal")
    await wait_until(lambda: "n1" in r3.unreachables)
    t3.send(hb("n3", "n1"))
    nodes["n2"][0].send(hb("n2", "n1"))
    await wait_until(lambda: len(r1.delivered) == 1)
    assert r1.delivered[0].frm == "n2"
    assert not t3.stats()["peers"]["n1"]["connected"]
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("refused connection" in m and "unknown peer 'n3'" in m for m in msgs), msgs
    assert any("handshake with peer n1" in m and "unknown peer" in m for m in msgs), msgs


async def test_a_peer_from_another_cluster_is_refused_and_logged(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    nodes = await make_cluster(["n1", "n2"], per_node={"n2": {"cluster_id": "other"}})
    t1, r1 = nodes["n1"]
    t2, r2 = nodes["n2"]
    await wait_until(lambda: t1.stats()["refused"] >= 1 and t2.stats()["refused"] >= 1)
    t1.send(hb("n1", "n2"))
    t2.send(hb("n2", "n1"))
    await asyncio.sleep(0.05)
    assert r1.delivered == [] and r2.delivered == []
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("wrong cluster id 'other'" in m for m in msgs), msgs
    assert any("wrong cluster id 'c1'" in m for m in msgs), msgs
    assert all(r.levelno == logging.WARNING for r in caplog.records if "refused" in r.message)


async def test_dialing_the_wrong_node_is_refused(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    nodes = await make_cluster(["n1", "n2", "n3"])
    t1, r1 = nodes["n1"]
    # n1 believes n3 lives at n2's address.
    t1.set_peers({"n2": nodes["n2"][0].address, "n3": nodes["n2"][0].address})
    await wait_until(lambda: nodes["n2"][0].stats()["refused"] >= 1)
    assert any("dialed node 'n3', but this is 'n2'" in r.getMessage() for r in caplog.records)


async def test_removing_a_peer_closes_both_directions(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    t2, r2 = nodes["n2"]
    await connected(t1, "n2")
    await connected(t2, "n1")
    await wait_until(lambda: t1.stats()["inbound"] == ["n2"])
    t1.set_peers({})
    assert "n2" not in t1.stats()["peers"]
    await wait_until(lambda: t1.stats()["inbound"] == [], what="inbound closed")
    t2.send(hb("n2", "n1"))
    await wait_until(lambda: t1.stats()["refused"] >= 1, what="redial refused")
    assert r1.delivered == []


async def test_a_changed_address_is_redialed(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2", "n3"])
    t1, _ = nodes["n1"]
    await connected(t1, "n2")
    wrong = nodes["n3"][0].address
    t1.set_peers({"n2": wrong, "n3": wrong})
    await wait_until(lambda: not t1.stats()["peers"]["n2"]["connected"])
    t1.set_peers({"n2": nodes["n2"][0].address, "n3": wrong})
    await connected(t1, "n2")
    t1.send(hb("n1", "n2", 5))
    await wait_until(lambda: nodes["n2"][1].delivered == [hb("n1", "n2", 5)])


# -- queues ------------------------------------------------------------------------------


async def test_an_idle_link_writes_at_once_and_in_order(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"], queue_size=10)
    t1, _ = nodes["n1"]
    _, r2 = nodes["n2"]
    await connected(t1, "n2")
    for i in range(25):  # more than the queue holds: none queue, none drop
        t1.send(hb("n1", "n2", i))
    assert t1.stats()["peers"]["n2"]["queued"] == 0
    assert t1.stats()["peers"]["n2"]["dropped"] == 0
    await wait_until(lambda: len(r2.delivered) == 25)
    assert [m.commit for m in r2.delivered] == list(range(25))  # type: ignore[attr-defined]


async def test_a_full_queue_drops_counts_and_reports(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"], queue_size=10, direct_writes=False)
    t1, r1 = nodes["n1"]
    _, r2 = nodes["n2"]
    await connected(t1, "n2")
    for i in range(25):  # no await in between: the writer cannot run
        t1.send(hb("n1", "n2", i))
    assert t1.stats()["peers"]["n2"]["queued"] == 10
    assert t1.stats()["peers"]["n2"]["dropped"] == 15
    await wait_until(lambda: len(r2.delivered) == 10)
    assert [m.commit for m in r2.delivered] == list(range(10))  # type: ignore[attr-defined]
    assert r1.unreachables == ["n2"]  # coalesced: once per loop iteration


async def test_a_down_peer_drops_and_reports(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    t2, _ = nodes["n2"]
    await connected(t1, "n2")
    await t2.close()
    await wait_until(lambda: t1.stats()["peers"]["n2"]["state"] == "down")
    await wait_until(lambda: "n2" in r1.unreachables)
    r1.unreachables.clear()
    dropped = t1.stats()["peers"]["n2"]["dropped"]
    t1.send(hb("n1", "n2"))
    assert t1.stats()["peers"]["n2"]["dropped"] == dropped + 1
    # (Failed redials report it too, so only "at least once" can be asserted.)
    await wait_until(lambda: "n2" in r1.unreachables)


async def test_an_oversized_message_is_dropped_at_the_sender(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = await make_cluster(["n1", "n2"], max_frame=2048)
    t1, _ = nodes["n1"]
    _, r2 = nodes["n2"]
    await connected(t1, "n2")
    t1.send(Heartbeat(1, "n1", "n2", 0, b"x" * 4096))
    t1.send(hb("n1", "n2", 7))
    await wait_until(lambda: r2.delivered == [hb("n1", "n2", 7)])
    assert t1.stats()["peers"]["n2"]["dropped"] == 1
    assert any("exceed max_frame" in r.getMessage() for r in caplog.records)


# -- restarts -----------------------------------------------------------------------------


async def test_reconnects_after_the_peer_restarts(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    t2, _ = nodes["n2"]
    await connected(t1, "n2")
    address = t2.address
    await t2.close()
    await wait_until(lambda: not t1.stats()["peers"]["n2"]["connected"])
    await wait_until(lambda: "n2" in r1.unreachables)

    t2b = TcpTransport("n2", "c1", address, min_backoff=0.01, max_backoff=0.05)
    r2b = Recorder("n2b")
    await t2b.start(r2b)
    try:
        t2b.set_peers({"n1": t1.address})
        await connected(t1, "n2")
        assert t1.stats()["peers"]["n2"]["reconnects"] == 1
        t1.send(hb("n1", "n2", 3))
        await wait_until(lambda: r2b.delivered == [hb("n1", "n2", 3)])
        # The restarted node's own connection to n1 works too.
        t2b.send(hb("n2", "n1", 4))
        await wait_until(lambda: hb("n2", "n1", 4) in r1.delivered)
    finally:
        await t2b.close()


async def test_close_is_idempotent_and_stops_sending(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    await t1.close()
    await t1.close()
    t1.send(hb("n1", "n2"))
    await asyncio.sleep(0.01)
    assert r1.unreachables == []
    with pytest.raises(RuntimeError):
        await t1.start(r1)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
@pytest.mark.parametrize("how", ["closed", "removed"])
async def test_a_peer_that_stopped_reading_keeps_no_socket_open(
    how: str, make_cluster: MakeCluster
) -> None:
    """A peer that is frozen (SIGSTOP, a chaos pause) reads nothing, so a
    link's socket with bytes still unsent never finishes closing: closing
    the transport, or dropping the peer from the table, left it open (with
    its buffer) for as long as the peer stayed frozen."""
    nodes = await make_cluster(
        ["n1", "n2"],
        knows={"n1": ["n2"], "n2": []},
        per_node={"n2": {"min_backoff": 60.0, "max_backoff": 60.0}},
    )
    t1, _ = nodes["n1"]
    t2, _ = nodes["n2"]
    # n2 knows n1 (or n1 would be refused) at an address where nobody
    # listens: after one failed dial it opens no socket for a minute.
    t2.set_peers({"n1": "127.0.0.1:1"})
    await wait_until(lambda: t2.stats()["peers"]["n1"]["dial_failures"] == 1, what="n2 dialed")
    await connected(t1, "n2")
    await wait_until(lambda: t2.stats()["inbound"] == ["n1"], what="n2 serves n1")
    (conn,) = t2._inbound.conns
    conn.writer.transport.pause_reading()  # n2 freezes
    blob = b"x" * (64 * 1024)
    for i in range(300):  # some MiB more than the socket buffers hold
        t1.send(AppendEntries(1, "n1", "n2", i, 1, (Entry(i + 1, 1, blob),), i))
    await wait_until(lambda: t1.stats()["peers"]["n2"]["queued"] == 0, what="all written")
    before = open_fds()
    if how == "closed":
        await t1.close()
        gone = 2  # its listening socket and its link to n2
    else:
        t1.set_peers({})
        gone = 1  # its link to n2
    await wait_until(lambda: open_fds() <= before - gone, what="the link's socket closed")


# -- bad input closes only that connection ------------------------------------------------


async def open_raw(t: TcpTransport) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = parse_address(t.address)
    return await asyncio.open_connection(host, port)


def hello(frm: str = "n3", to: str = "n1", cluster: str = "c1") -> bytes:
    """The whole handshake of a dialer without a secret, to a node without one."""
    return opening(Kind.HELLO, frm, to, cluster)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection."""
    return await asyncio.wait_for(reader.read(), 5)


# The raw dialer claims to be n3, a peer n1 knows (but which is not running),
# so that it never displaces the real n2's connection.
BAD_STREAMS = {
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "zero_length": b"\x00\x00\x00\x00",
    "not_hello_first": frame(Kind.MSG, encode_message(hb("n3", "n1"))),
    "bad_hello_body": frame(Kind.HELLO, b"\x93\x01\x02"),
    "wrong_magic": control(Kind.HELLO, Hello("nope", PROTOCOL_VERSION, "c1", "n3", "n1")),
    "wrong_version": control(Kind.HELLO, Hello(MAGIC, 99, "c1", "n3", "n1")),
    "oversized": hello() + struct.pack(">I", 2**31) + b"\x10",
    "unknown_kind": hello() + frame(99, b"x"),  # type: ignore[arg-type]
    "garbage_message": hello() + frame(Kind.MSG, b"\x01\xc1\xc1"),
    "wrong_codec_version": hello() + frame(Kind.MSG, b"\x07" + encode_message(hb("n3", "n1"))[1:]),
    "spoofed_sender": hello() + frame(Kind.MSG, encode_message(hb("n2", "n1"))),
    "wrong_receiver": hello() + frame(Kind.MSG, encode_message(hb("n3", "n2"))),
    "truncated": hello() + struct.pack(">I", 100) + b"\x10abc",
    "chunk_without_begin": hello() + frame(Kind.SNAP_CHUNK, b"data"),
    "end_without_begin": hello() + frame(Kind.SNAP_END, b"\x92\x00\x00"),
    "unstreamed_snapshot": hello()
    + frame(Kind.MSG, encode_message(InstallSnapshot(1, "n3", "n1", Snapshot(SnapshotMeta(1, 1))))),
    "server_frame_from_client": hello() + frame(Kind.WELCOME, b""),
}


@pytest.mark.parametrize("name", sorted(BAD_STREAMS))
async def test_bad_input_closes_that_connection_only(
    name: str, make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    t2, _ = nodes["n2"]
    t1.set_peers({"n2": t2.address, "n3": "127.0.0.1:1"})
    await connected(t2, "n1")
    reader, writer = await open_raw(t1)
    writer.write(BAD_STREAMS[name])
    if name == "truncated":
        writer.write_eof()
    await closed_by_server(reader)
    writer.close()
    # The node still serves its good peer.
    t2.send(hb("n2", "n1", 42))
    await wait_until(lambda: hb("n2", "n1", 42) in r1.delivered)
    assert all(m.frm == "n2" and m.to == "n1" for m in r1.delivered)
    reasons = [r.getMessage() for r in caplog.records if "connection from" in r.getMessage()]
    assert reasons, "the closing reason must be logged"


async def test_a_silent_dialer_times_out(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1"], handshake_timeout=0.05)
    reader, writer = await open_raw(nodes["n1"][0])
    assert await closed_by_server(reader) == b""
    writer.close()


async def test_a_newer_connection_from_the_same_peer_replaces_the_older(
    make_cluster: MakeCluster,
) -> None:
    nodes = await make_cluster(["n1"], knows={"n1": []})
    t1, r1 = nodes["n1"]
    t1.set_peers({"n3": "127.0.0.1:1"})
    r_old, w_old = await open_raw(t1)
    w_old.write(hello())
    await welcomed(r_old)
    r_new, w_new = await open_raw(t1)
    w_new.write(hello())
    assert await closed_by_server(r_old) != b"x"
    w_new.write(frame(Kind.MSG, encode_message(hb("n3", "n1", 9))))
    await wait_until(lambda: r1.delivered == [hb("n3", "n1", 9)])
    for w in (w_old, w_new):
        w.close()


def test_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from liferaft.transport.bench import main

    main(
        ["--heartbeats", "100", "--appends", "5", "--entries", "4", "--snapshot-mib", "2"]
        + ["--calls", "100"]
    )
    out = capsys.readouterr().out
    assert "Heartbeat" in out and "ok=[True]" in out and "calls/s" in out


async def test_a_direct_write_on_a_dying_connection_never_raises(make_cluster: MakeCluster) -> None:
    """Found by the chaos soak: under uvloop, writing to a transport that had
    just closed raised RuntimeError out of send() and killed the node task.
    send() must drop the message (counted, peer reported) instead."""
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    await connected(t1, "n2")
    link = t1._links["n2"]
    assert link.direct is not None
    w = link.direct

    class Dying:
        def __init__(self, real: object) -> None:
            self.transport = real

        def writelines(self, data: object) -> None:
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    link.direct = Dying(w.transport)  # type: ignore[assignment]
    before = t1.stats()["peers"]["n2"]["dropped"]
    t1.send(hb("n1", "n2", 1))  # must not raise
    assert t1.stats()["peers"]["n2"]["dropped"] == before + 1
    await wait_until(lambda: "n2" in r1.unreachables)


def test_direct_writes_under_uvloop_survive_a_peer_that_goes_away(tmp_path: object) -> None:
    """The same, for real, on uvloop (what liferaft serve runs on)."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        from .helpers import Recorder as Rec

        a = TcpTransport("n1", "c", "127.0.0.1:0", rng=random.Random(1))
        b = TcpTransport("n2", "c", "127.0.0.1:0", rng=random.Random(2))
        ra, rb = Rec("n1"), Rec("n2")
        await a.start(ra)
        await b.start(rb)
        try:
            a.set_peers({"n2": b.address})
            b.set_peers({"n1": a.address})
            a.send(hb("n1", "n2", 0))
            await wait_until(lambda: len(rb.delivered) == 1)
            await b.close()
            for i in range(200):  # keep writing while the connection dies
                a.send(hb("n1", "n2", i))
                await asyncio.sleep(0.001)
        finally:
            await a.close()

    uvloop.run(main())
