"""Fuzz the server side of TcpTransport: arbitrary byte streams never crash it.

Each example dials a live transport, writes a stream (random bytes, or a
valid handshake followed by frames that are random, mutated or valid),
half-closes, and waits for the transport to close the connection.
Afterwards the transport must still accept a good peer, must have delivered
only well-addressed messages, and must hold no connection state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import struct
import zlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liferaft.codec import encode_message
from liferaft.core.messages import Heartbeat, InstallSnapshot, Message, Snapshot, SnapshotMeta
from liferaft.transport import TcpTransport, parse_address
from liferaft.transport._frames import (
    Kind,
    Reason,
    SnapEnd,
    call_frame,
    control,
    frame,
)

from ..codec.strategies import messages
from .helpers import Recorder, opening
from .test_tcp import hello

KINDS = [int(k) for k in Kind] + [0, 7, 255]


def addressed_n3_n1(msg: Message) -> Message:
    return dataclasses.replace(msg, frm="n3", to="n1")


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(KINDS))
    source = draw(st.sampled_from(["random", "message", "mutated"]))
    if source == "random":
        body = draw(st.binary(max_size=64))
    else:
        body = encode_message(addressed_n3_n1(draw(messages)))
        if source == "mutated" and body:
            i = draw(st.integers(0, len(body) - 1))
            body = body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1 :]
    out = frame(kind, body)  # type: ignore[arg-type]
    if draw(st.integers(0, 9)) == 0:  # now and then, lie about the length
        out = struct.pack(">I", draw(st.integers(0, 2**32 - 1))) + out[4:]
    return out


@st.composite
def snapshot_streams(draw: st.DrawFn) -> bytes:
    header = InstallSnapshot(1, "n3", "n1", Snapshot(SnapshotMeta(3, 1)))
    out = hello() + frame(Kind.SNAP_BEGIN, encode_message(header))
    chunks = draw(st.lists(st.binary(max_size=100), max_size=4))
    parts = [frame(Kind.SNAP_CHUNK, c) for c in chunks]
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), draw(frames()))
    out += b"".join(parts)
    total, crc = sum(map(len, chunks)), 0
    for c in chunks:
        crc = zlib.crc32(c, crc)
    end = draw(st.sampled_from(["good", "bad", "abort", "none"]))
    if end == "good":
        out += control(Kind.SNAP_END, SnapEnd(total, crc))
    elif end == "bad":
        out += control(Kind.SNAP_END, SnapEnd(total + 1, crc))
    elif end == "abort":
        out += control(Kind.SNAP_ABORT, Reason("fuzz"))
    return out + draw(st.sampled_from([b"", hello()]))


def caller_hello(frm: str = "x9") -> bytes:
    return opening(Kind.CALLER, frm, "")


@st.composite
def caller_streams(draw: st.DrawFn) -> bytes:
    """A caller connection (from a stranger or claiming to be n3): calls mixed
    with frames it may not send; nothing of it may be delivered."""
    out = caller_hello(draw(st.sampled_from(["x9", "n3"])))
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            out += b"".join(call_frame(draw(st.integers(0, 2**64 - 1)), draw(st.binary())))
        else:
            out += draw(frames())
    return out


streams = st.one_of(
    snapshot_streams(),
    caller_streams(),
    st.binary(max_size=512),
    st.builds(lambda fs: hello() + b"".join(fs), st.lists(frames(), max_size=6)),
    st.builds(lambda fs, tail: hello() + b"".join(fs) + tail, st.lists(frames()), st.binary()),
)


async def _feed(t: TcpTransport, data: bytes) -> None:
    host, port = parse_address(t.address)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        with contextlib.suppress(OSError):
            writer.write(data)
            writer.write_eof()
            await writer.drain()
        with contextlib.suppress(OSError):
            await reader.read()  # until the transport closes its end
    finally:
        writer.close()


async def _settle(t: TcpTransport) -> None:
    for _ in range(1000):
        s = t.stats()
        if (
            not s["inbound"]
            and not s["callers"]
            and not t._inbound.accepting
            and not t._served.serving
        ):
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the transport kept connection state")


def test_arbitrary_byte_streams_never_crash_the_server() -> None:
    logging.getLogger("liferaft.transport").setLevel(logging.CRITICAL)
    loop = asyncio.new_event_loop()
    t = TcpTransport("n1", "c1", "127.0.0.1:0", handshake_timeout=0.5, max_frame=64 * 1024)
    rec = Recorder("n1")

    async def setup() -> None:
        await t.start(rec)
        t.set_peers({"n3": "127.0.0.1:1"})

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(streams)
    def feed(data: bytes) -> None:
        before = (len(rec.delivered), len(rec.sinks))
        loop.run_until_complete(asyncio.wait_for(_feed(t, data), 5))
        loop.run_until_complete(_settle(t))
        assert all(m.frm == "n3" and m.to == "n1" for m in rec.delivered)
        if data.startswith((caller_hello("x9"), caller_hello("n3"))):
            assert (len(rec.delivered), len(rec.sinks)) == before
        for sink in rec.sinks:
            assert sink.committed or sink.aborted

    try:
        loop.run_until_complete(setup())
        feed()
        # The examples did reach delivery and the snapshot sink, not just the parser.
        assert rec.delivered and any(s.committed for s in rec.sinks)
        assert any(s.aborted for s in rec.sinks)
        # Calls were served on caller connections, and on the peer's.
        assert {frm for frm, _, _ in rec.calls} == {"x9", "n3"}
        assert ("x9", False) in {(frm, known) for frm, _, known in rec.calls}
        # Still serving: a good peer gets through.
        good = hello() + frame(Kind.MSG, encode_message(Heartbeat(1, "n3", "n1", 77)))
        before = len(rec.delivered)
        loop.run_until_complete(asyncio.wait_for(_feed(t, good), 5))
        assert rec.delivered[before:] == [Heartbeat(1, "n3", "n1", 77)]
    finally:
        loop.run_until_complete(t.close())
        loop.close()
        logging.getLogger("liferaft.transport").setLevel(logging.NOTSET)
