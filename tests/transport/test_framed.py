"""Peer frames parsed in the socket callback (liferaft/transport/framed.py).

The protocol is driven by hand here, byte by byte where it matters, with a
fake transport that records pausing; test_tcp.py's BAD_STREAMS and
test_fuzz_frames.py run the same parser over real sockets.
"""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from liferaft.codec import encode_message
from liferaft.core.messages import Heartbeat
from liferaft.transport._frames import Kind, frame
from liferaft.transport.framed import QUEUE_HIGH, QUEUE_LOW, PeerProtocol, new_protocol

from .conftest import MakeCluster
from .helpers import wait_until
from .test_tcp import closed_by_server, hb, hello, open_raw

INLINE = frozenset({Kind.MSG, Kind.CALL})


class FakeTransport(asyncio.Transport):
    """Records pause_reading/resume_reading; reads and writes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.pauses = 0
        self.closing = False

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass


class Rig:
    """A PeerProtocol switched to frames, recording what it handles inline."""

    def __init__(self, max_frame: int = 1 << 20, held: bytes = b"") -> None:
        self.proto: PeerProtocol = new_protocol(64 * 1024)
        self.tp = FakeTransport()
        self.proto.connection_made(self.tp)
        self.inline: list[tuple[Kind, bytes]] = []
        self.refuse: bytes | None = None
        if held:  # bytes that reached the handshake's stream before the switch
            self.proto.data_received(held)
        self.proto.frames(max_frame, self._handle, INLINE)

    def _handle(self, kind: Kind, body: memoryview) -> None:
        if bytes(body) == self.refuse:
            raise ValueError("refused by the handler")
        self.inline.append((kind, bytes(body)))

    async def queued(self, n: int) -> list[tuple[Kind, bytes]]:
        """The next ``n`` frames queued for the task."""
        out = []
        for _ in range(n):
            kind, body = await asyncio.wait_for(self.proto.next_frame(), 1)
            out.append((kind, bytes(body)))
        return out

    async def idle(self) -> bool:
        """Nothing more is queued for the task (waits 10 ms to see)."""
        try:
            await asyncio.wait_for(self.proto.next_frame(), 0.01)
        except TimeoutError:
            return True
        return False


def msg(n: int) -> bytes:
    return frame(Kind.MSG, encode_message(Heartbeat(1, "n3", "n1", n)))


STREAM = [
    (Kind.MSG, msg(1)),
    (Kind.CALL, frame(Kind.CALL, struct.pack(">Q", 7) + b"payload")),
    (Kind.MSG, msg(2)),
    (Kind.SNAP_BEGIN, frame(Kind.SNAP_BEGIN, b"begin")),
    (Kind.MSG, msg(3)),  # behind a queued frame: queued too, in order
    (Kind.SNAP_CHUNK, frame(Kind.SNAP_CHUNK, bytes(range(256)) * 3)),
]
WIRE = b"".join(f for _, f in STREAM)
BODIES = [(k, f[5:]) for k, f in STREAM]


async def test_a_stream_split_at_every_byte_boundary_parses_the_same() -> None:
    for cut in range(len(WIRE) + 1):
        rig = Rig()
        rig.proto.data_received(WIRE[:cut])
        rig.proto.data_received(WIRE[cut:])
        assert rig.inline == BODIES[:3], cut
        assert await rig.queued(3) == BODIES[3:], cut
    rig = Rig()
    for i in range(len(WIRE)):  # one byte per read
        rig.proto.data_received(WIRE[i : i + 1])
    assert rig.inline == BODIES[:3]
    assert await rig.queued(3) == BODIES[3:]
    assert await rig.idle()


async def test_bytes_held_by_the_handshake_stream_are_parsed_at_the_switch() -> None:
    for cut in (1, 7, len(WIRE) // 2, len(WIRE)):
        rig = Rig(held=WIRE[:cut])
        rig.proto.data_received(WIRE[cut:])
        assert rig.inline == BODIES[:3], cut
        assert await rig.queued(3) == BODIES[3:], cut
        assert await rig.idle()


async def test_many_frames_in_one_read_are_all_handled_in_order() -> None:
    rig = Rig()
    rig.proto.data_received(b"".join(msg(i) for i in range(1000)))
    assert [body for _, body in rig.inline] == [msg(i)[5:] for i in range(1000)]
    assert await rig.idle()


@pytest.mark.parametrize(
    "bad, error",
    [
        (struct.pack(">I", 2**31) + b"\x10", "exceeds the limit"),  # refused from its header
        (b"\x00\x00\x00\x00", "zero-length frame"),
        (frame(99, b"x"), "unknown frame kind 99"),  # type: ignore[arg-type]
    ],
)
async def test_a_bad_frame_mid_stream_ends_the_parsing_after_the_good_ones(
    bad: bytes, error: str
) -> None:
    rig = Rig()
    rig.proto.data_received(msg(1) + msg(2) + bad[:3])  # the bad one split, too
    rig.proto.data_received(bad[3:] + msg(3))
    assert [body for _, body in rig.inline] == [msg(1)[5:], msg(2)[5:]]
    assert not rig.tp.reading, "reading must stop at a bad frame"
    with pytest.raises(Exception, match=error):
        await rig.proto.next_frame()
    rig.proto.data_received(msg(4))  # anything after is ignored
    assert len(rig.inline) == 2


async def test_a_frame_the_handler_refuses_ends_the_connection() -> None:
    rig = Rig()
    rig.refuse = msg(2)[5:]
    rig.proto.data_received(msg(1) + msg(2) + msg(3))
    assert [body for _, body in rig.inline] == [msg(1)[5:]]
    with pytest.raises(ValueError, match="refused by the handler"):
        await rig.proto.next_frame()


async def test_a_frame_waits_behind_queued_frames_then_the_error_comes() -> None:
    rig = Rig()
    rig.proto.data_received(frame(Kind.SNAP_BEGIN, b"b") + msg(1) + b"\x00\x00\x00\x00")
    assert rig.inline == []
    assert (await rig.proto.next_frame())[0] is Kind.SNAP_BEGIN
    assert (await rig.proto.next_frame())[0] is Kind.MSG
    with pytest.raises(Exception, match="zero-length"):
        await rig.proto.next_frame()


async def test_the_end_of_the_stream_inside_a_frame_or_between_frames() -> None:
    rig = Rig()
    rig.proto.data_received(msg(1) + msg(2)[:6])
    rig.proto.eof_received()
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await rig.proto.next_frame()
    assert info.value.partial == msg(2)[:6] and info.value.expected == len(msg(2))
    rig = Rig()
    rig.proto.data_received(msg(1))
    rig.proto.connection_lost(None)
    with pytest.raises(asyncio.IncompleteReadError) as info:
        await rig.proto.next_frame()
    assert info.value.partial == b""
    rig = Rig()
    rig.proto.connection_lost(ConnectionResetError("reset"))
    with pytest.raises(ConnectionResetError):
        await rig.proto.next_frame()


async def test_queued_frames_pause_reading_until_the_task_catches_up() -> None:
    rig = Rig()
    chunk = frame(Kind.SNAP_CHUNK, bytes(64 * 1024))
    reads = 0
    while rig.tp.reading:
        rig.proto.data_received(chunk)
        reads += 1
        assert reads < 100, "reading never paused"
    assert reads * len(chunk) > QUEUE_HIGH
    assert rig.tp.pauses == 1
    taken = 0
    while not rig.tp.reading:
        await rig.proto.next_frame()
        taken += 1
    # Resumed once no more than QUEUE_LOW bytes wait.
    assert (reads - taken) * len(chunk) <= QUEUE_LOW < (reads - taken + 1) * len(chunk)


async def test_nothing_is_handled_after_stop() -> None:
    rig = Rig()
    rig.proto.data_received(msg(1))
    rig.proto.stop()
    rig.proto.data_received(msg(2))
    assert len(rig.inline) == 1 and not rig.tp.reading
    with pytest.raises(ConnectionAbortedError):
        await rig.proto.next_frame()


async def test_over_tcp_a_malformed_frame_mid_stream_closes_that_connection_only(
    make_cluster: MakeCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="liferaft.transport")
    nodes = await make_cluster(["n1"], knows={"n1": []})
    t1, r1 = nodes["n1"]
    t1.set_peers({"n3": "127.0.0.1:1"})
    reader, writer = await open_raw(t1)
    good = [frame(Kind.MSG, encode_message(hb("n3", "n1", i))) for i in range(1, 4)]
    # The handshake, two messages, a garbage MSG and one more, in one write.
    writer.write(hello() + good[0] + good[1] + frame(Kind.MSG, b"\x01\xc1\xc1") + good[2])
    await closed_by_server(reader)
    writer.close()
    assert r1.delivered == [hb("n3", "n1", 1), hb("n3", "n1", 2)]
    assert any("closing connection from n3" in r.getMessage() for r in caplog.records)
    # The node still accepts the peer again, a frame split over many writes.
    reader, writer = await open_raw(t1)
    writer.write(hello())
    for b in good[2]:
        writer.write(bytes([b]))
        await writer.drain()
    await wait_until(lambda: r1.delivered[-1:] == [hb("n3", "n1", 3)])
    writer.close()


async def test_a_message_waits_while_the_task_still_handles_the_frame_before_it() -> None:
    # SNAP_END's handling awaits the sink's commit before it delivers the
    # InstallSnapshot; the leader's next append, arriving meanwhile, must be
    # delivered after it, as the stream ordered them, not inline before it.
    rig = Rig()
    rig.proto.data_received(frame(Kind.SNAP_END, b"end"))
    assert (await rig.proto.next_frame())[0] is Kind.SNAP_END  # the task is on it
    rig.proto.data_received(msg(1))
    assert rig.inline == [], "handled before the frame the task is still on"
    assert await rig.queued(1) == [(Kind.MSG, msg(1)[5:])]
    assert await rig.idle()  # the task asked again with nothing queued: inline again
    rig.proto.data_received(msg(2))
    assert rig.inline == [(Kind.MSG, msg(2)[5:])]
