"""Snapshot streams over TCP, both directions.

Sender (:class:`SnapshotSender`, one per :class:`~.link.PeerLink`)
    An InstallSnapshot is streamed by its own task on the peer's
    connection: SNAP_BEGIN (the message with empty data), SNAP_CHUNKs pulled
    one at a time from ``handler.snapshot_source`` in a worker thread, then
    SNAP_END with the byte count and CRC-32.  The link's writer keeps
    sending other messages in between, so a large snapshot never starves
    heartbeats.  Only the receiver's SNAP_RESULT turns into
    ``snapshot_status(peer, True)``; a lost connection turns into ``False``.
    One snapshot per peer is in flight; a newer InstallSnapshot meanwhile
    waits (the newest wins, the one it replaces is reported failed).
Receiver (:class:`SnapshotReceiver`, one per inbound connection)
    SNAP_BEGIN asks ``handler.snapshot_sink`` for a sink, every SNAP_CHUNK
    is written into it in a worker thread, and SNAP_END checks the count and
    CRC, commits the sink, delivers the header message and answers
    SNAP_RESULT.  A sink that fails is aborted and answered at once; the
    rest of that stream is discarded.

Every InstallSnapshot handed to the transport gets exactly one
``snapshot_status`` (docs/transport.md, "Transport contract").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import zlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from liferaft.codec import decode_message, encode_message
from liferaft.core.messages import InstallSnapshot, NodeId

from ._context import MAX_REASON, Context, InboundConn, why
from ._frames import FrameError, Kind, Reason, SnapEnd, SnapResult, control, frame, parse
from .base import SnapshotSink

_T = TypeVar("_T")
_LOG = logging.getLogger("liferaft.transport")


class Serial:
    """Runs blocking calls of one snapshot source or sink in a worker thread,
    one at a time and in order, even across a cancellation of the awaiting task."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self._pool = pool
        self._last: concurrent.futures.Future[Any] | None = None

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        cf = self._pool.submit(fn, *args)
        self._last = cf
        return await asyncio.wrap_future(cf)

    def then(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` (errors logged) after the call in flight, or now if none."""

        def run(_: object = None) -> None:
            try:
                fn()
            except Exception:
                _LOG.exception("snapshot cleanup failed")

        if self._last is not None and not self._last.done():
            self._last.add_done_callback(run)
        else:
            run()


class SnapshotSender:
    """The snapshot streams of one outbound link: the one in flight, the one
    waiting, and their counters.  ``drop`` is the link's way of dropping a
    message (it counts it and reports the snapshot failed)."""

    def __init__(
        self, ctx: Context, peer: NodeId, chunk: int, drop: Callable[[InstallSnapshot], None]
    ) -> None:
        self._ctx = ctx
        self._peer = peer
        self._chunk = chunk
        self._drop = drop
        self.task: asyncio.Task[None] | None = None
        self._result: asyncio.Future[tuple[bool, str]] | None = None
        # An InstallSnapshot waiting for the stream in flight (the newest wins).
        self.waiting: InstallSnapshot | None = None
        self.sent = 0
        self.failed = 0

    def offer(self, msg: InstallSnapshot, writer: asyncio.StreamWriter) -> None:
        """Stream ``msg`` on ``writer`` now, or after the stream in flight."""
        if self.task is not None:
            # One stream per peer at a time; the newest waiting one goes next.
            if self.waiting is not None:
                self._ctx.log.info("a newer snapshot for %s supersedes a waiting one", self._peer)
                self._drop(self.waiting)
            self.waiting = msg
            return
        loop = asyncio.get_running_loop()
        self._result = loop.create_future()
        self.task = loop.create_task(
            self._stream(msg, writer),
            name=f"liferaft-snapshot-{self._ctx.node_id}->{self._peer}",
        )

    def on_result(self, result: SnapResult) -> None:
        """The receiver's SNAP_RESULT for the stream in flight."""
        fut = self._result
        if fut is not None and not fut.done():
            fut.set_result((result.ok, result.reason))
        else:
            self._ctx.log.warning("unexpected snapshot result from %s", self._peer)

    async def end(self) -> None:
        """The connection ended: stop the stream in flight (it reports its
        failure) and drop the waiting one."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.waiting is not None:
            self._drop(self.waiting)
            self.waiting = None

    async def _stream(self, msg: InstallSnapshot, writer: asyncio.StreamWriter) -> None:
        ctx = self._ctx
        assert ctx.handler is not None and ctx.pool is not None
        ok, reason = False, "connection lost"
        cancelled = False
        serial = Serial(ctx.pool)
        source: Iterator[bytes] | None = None
        result = self._result
        assert result is not None
        try:
            header = dataclasses.replace(msg, snapshot=dataclasses.replace(msg.snapshot, data=b""))
            try:
                source = iter(ctx.handler.snapshot_source(msg))
            except Exception as e:
                ctx.log.exception("snapshot_source for %s failed", self._peer)
                reason = f"snapshot source failed: {e!r}"
                return
            writer.write(frame(Kind.SNAP_BEGIN, encode_message(header)))
            total, crc = 0, 0
            while True:
                try:
                    chunk = await serial.call(next, source, None)
                except Exception as e:
                    reason = f"snapshot source failed: {e!r}"
                    ctx.log.error("snapshot to %s: %s", self._peer, reason)
                    writer.write(control(Kind.SNAP_ABORT, Reason(reason[:MAX_REASON])))
                    return
                if chunk is None:
                    break
                view = memoryview(chunk)
                for off in range(0, len(view), self._chunk):
                    piece = view[off : off + self._chunk]
                    crc = zlib.crc32(piece, crc)
                    total += len(piece)
                    writer.write(frame(Kind.SNAP_CHUNK, piece))
                    await writer.drain()
                if result.done():  # the receiver gave up early
                    writer.write(control(Kind.SNAP_ABORT, Reason("the receiver failed")))
                    ok, reason = result.result()
                    return
            writer.write(control(Kind.SNAP_END, SnapEnd(total, crc)))
            await writer.drain()
            ok, reason = await result
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as e:  # the connection broke, or the header cannot be encoded
            reason = why(e)
        finally:
            if source is not None:
                close = getattr(source, "close", None)
                if close is not None:
                    serial.then(close)
            self._finished(msg, ok, reason, cancelled, writer)

    def _finished(
        self,
        msg: InstallSnapshot,
        ok: bool,
        reason: str,
        cancelled: bool,
        writer: asyncio.StreamWriter,
    ) -> None:
        mine = self.task is asyncio.current_task()
        if mine:
            self.task = None
            self._result = None
        if ok:
            self.sent += 1
            self._ctx.log.info("snapshot %d streamed to %s", msg.snapshot.index, self._peer)
        else:
            self.failed += 1
            self._ctx.log.warning(
                "snapshot %d to %s failed: %s", msg.snapshot.index, self._peer, reason
            )
        self._ctx.snapshot_status_soon(self._peer, ok)
        nxt = self.waiting
        if mine and nxt is not None and not cancelled and not writer.is_closing():
            self.waiting = None
            self.offer(nxt, writer)


@dataclasses.dataclass(eq=False)
class _InStream:
    """A snapshot being received."""

    header: InstallSnapshot
    sink: SnapshotSink | None  # None once it failed (the rest is discarded)
    serial: Serial
    total: int = 0
    crc: int = 0


class SnapshotReceiver:
    """The snapshot stream (at most one at a time) of one inbound connection."""

    def __init__(self, ctx: Context, conn: InboundConn) -> None:
        self._ctx = ctx
        self._conn = conn
        self._stream: _InStream | None = None

    def begin(self, body: memoryview) -> None:
        """SNAP_BEGIN: a new stream, and a sink for it."""
        ctx, conn = self._ctx, self._conn
        assert ctx.handler is not None and ctx.pool is not None
        if self._stream is not None:
            raise FrameError("SNAP_BEGIN while a snapshot stream is open")
        msg = decode_message(body)
        conn.check_addressing(msg, ctx.node_id)
        if not isinstance(msg, InstallSnapshot):
            raise FrameError(f"SNAP_BEGIN carries {type(msg).__name__}, not InstallSnapshot")
        if msg.snapshot.data:
            raise FrameError("SNAP_BEGIN must carry an empty snapshot.data")
        stream = _InStream(msg, None, Serial(ctx.pool))
        try:
            stream.sink = ctx.handler.snapshot_sink(msg)
        except Exception as e:
            ctx.log.exception("snapshot_sink for the snapshot from %s failed", conn.peer)
            self._send_result(False, f"no sink: {e!r}")
        self._stream = stream

    async def chunk(self, body: memoryview) -> None:
        """SNAP_CHUNK: into the sink, in a worker thread."""
        stream = self._stream
        if stream is None:
            raise FrameError("SNAP_CHUNK outside a snapshot stream")
        stream.total += len(body)
        stream.crc = zlib.crc32(body, stream.crc)
        sink = stream.sink
        if sink is None:
            return  # failed earlier: discard until SNAP_END
        try:
            await stream.serial.call(sink.write, bytes(body))
        except Exception as e:
            self._ctx.log.exception("writing the snapshot from %s failed", self._conn.peer)
            self._fail(stream, f"sink write failed: {e!r}")

    async def end(self, body: memoryview) -> None:
        """SNAP_END: check, commit, deliver the header, answer SNAP_RESULT."""
        end = parse(SnapEnd, body)
        stream = self._stream
        if stream is None:
            raise FrameError("SNAP_END outside a snapshot stream")
        self._stream = None
        sink = stream.sink
        if sink is None:
            return  # its failure was already reported
        if (end.total, end.crc32) != (stream.total, stream.crc):
            self._fail(stream, "checksum mismatch")
            raise FrameError(
                f"snapshot stream corrupt: {stream.total} bytes crc {stream.crc:08x}, "
                f"sender says {end.total} bytes crc {end.crc32:08x}"
            )
        try:
            await stream.serial.call(sink.commit)
        except Exception as e:
            self._ctx.log.exception("committing the snapshot from %s failed", self._conn.peer)
            self._fail(stream, f"sink commit failed: {e!r}")
            return
        stream.sink = None
        self._ctx.log.info(
            "snapshot %d from %s received (%d bytes)",
            stream.header.snapshot.index,
            self._conn.peer,
            stream.total,
        )
        self._ctx.deliver(stream.header)
        self._send_result(True, "")

    def aborted(self, body: memoryview) -> None:
        """SNAP_ABORT: the sender gave up."""
        if self._stream is None:
            raise FrameError("SNAP_ABORT outside a snapshot stream")
        self.drop(f"sender aborted: {parse(Reason, body).reason}")

    def drop(self, reason: str) -> None:
        """The stream will not finish: abort its sink (no result: the sender knows)."""
        stream, self._stream = self._stream, None
        if stream is not None and stream.sink is not None:
            self._ctx.log.warning(
                "snapshot %d from %s aborted: %s",
                stream.header.snapshot.index,
                self._conn.peer,
                reason,
            )
            sink, stream.sink = stream.sink, None
            stream.serial.then(sink.abort)

    def _fail(self, stream: _InStream, reason: str) -> None:
        sink, stream.sink = stream.sink, None
        if sink is not None:
            stream.serial.then(sink.abort)
        self._send_result(False, reason)

    def _send_result(self, ok: bool, reason: str) -> None:
        self._conn.writer.write(control(Kind.SNAP_RESULT, SnapResult(ok, reason[:MAX_REASON])))
