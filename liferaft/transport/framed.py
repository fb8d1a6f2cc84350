"""Inbound peer frames parsed in the socket callback.

An accepted connection starts as an ordinary asyncio stream: the handshake
(:mod:`.greeting`) reads its few small frames with ``readexactly``.  Once a
peer connection is proven, :meth:`PeerProtocol.frames` switches it to
parsing frames in ``data_received``: a MSG or CALL is handled right there,
in the callback that brought its bytes, instead of waking the connection's
task to read it (one task step per message fewer, on every node, for every
append and every ack; issue 18).  Frames that need to await (snapshot
chunks go to the disk in a worker thread) are queued, in order, for the
connection's task, which takes them with :meth:`PeerProtocol.next_frame`;
while any frame is queued, or the task is still handling the last one it
took (it asks for the next when done), later ones queue behind it, so the
order the peer sent them in is the order they are handled in.

Limits are those of :func:`._frames.read_frame`: a length of 0 or above
``max_frame`` is refused from its header, before any body byte is kept,
and so is an unknown kind.  A bad frame, or a frame the inline handler
refuses (it raises), ends the parsing: reading stops and :meth:`next_frame`
raises the error once the frames before it are handled, so the connection's
task logs it and closes the connection exactly as before.

Flow control: the queue for the task is bounded by bytes.  Above
``QUEUE_HIGH`` reading is paused (TCP then pushes back on the sender), and
resumed once the task has brought it under ``QUEUE_LOW``: the bound the
StreamReader kept before (twice its 256 KiB limit).  Frames handled inline
go at once to the node's inbox, as the reader task delivered them before:
at most one read (64 KiB) per connection per loop iteration.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import cast

from ._frames import HEADER, LENGTH, FrameError, Kind

__all__ = ["QUEUE_HIGH", "QUEUE_LOW", "HandshakeReader", "PeerProtocol", "new_protocol"]

# Bytes queued for the connection's task at which reading pauses / resumes.
QUEUE_HIGH = 512 * 1024
QUEUE_LOW = QUEUE_HIGH // 2

_KINDS = {int(k): k for k in Kind}
_HEAD = HEADER.size  # length u32 and kind u8

# handle(kind, body) for frames handled in the callback.  It may raise (a
# FrameError, a DecodeError): that ends the connection.
InlineHandler = Callable[[Kind, memoryview], None]
# asyncio's client_connected_cb: called with the streams once connected.
Connected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None] | None]


class HandshakeReader(asyncio.StreamReader):
    """The stream the handshake reads; gives up what it holds when the
    connection switches to frames."""

    def take_buffered(self) -> bytes:
        """The bytes received but not read yet (a peer may send its first
        frames right behind the handshake's last)."""
        buffer: bytearray = getattr(self, "_buffer")  # noqa: B009 (the base's own)
        data = bytes(buffer)
        buffer.clear()
        return data


class PeerProtocol(asyncio.StreamReaderProtocol):
    """A stream protocol that can switch to parsing frames in the callback.

    Until :meth:`frames` it is asyncio's StreamReaderProtocol, unchanged.
    After it, bytes no longer reach the StreamReader; writing, draining and
    closing still go through the StreamWriter, whose waits this class's base
    keeps serving.
    """

    def __init__(
        self,
        reader: HandshakeReader,
        connected: Connected | None = None,
    ) -> None:
        super().__init__(reader, connected)
        self.handshake_reader = reader
        self._tp: asyncio.Transport | None = None
        self._inline: InlineHandler | None = None
        self._inline_kinds: frozenset[Kind] = frozenset()
        self._max_frame = 0
        self._framing = False
        # A partial frame, and how many bytes it needs in all (4 while its
        # length is unknown).
        self._partial = bytearray()
        self._need = 4
        self._queue: collections.deque[tuple[Kind, memoryview]] = collections.deque()
        self._queued_bytes = 0
        # The task took a frame and has not asked for the next yet: it may be
        # awaiting (SNAP_END commits, then delivers), so nothing goes inline.
        self._busy = False
        self._paused = False
        # What next_frame raises once the queue is empty; parsing stops when set.
        self._end: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._lost = False

    # -- asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but are one.
        self._tp = cast(asyncio.Transport, transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._framing:
            self._finish(exc)
        super().connection_lost(exc)

    def eof_received(self) -> bool:
        self._eof = True
        if self._framing:
            self._finish(None)
        return bool(super().eof_received())

    def data_received(self, data: bytes) -> None:
        if not self._framing:
            super().data_received(data)
        elif self._end is None:
            self._parse(data)

    # -- switching ---------------------------------------------------------------------

    def frames(self, max_frame: int, inline: InlineHandler, inline_kinds: frozenset[Kind]) -> None:
        """From now on parse frames in the callback: ``inline_kinds`` go to
        ``inline`` there, the rest to :meth:`next_frame`."""
        assert not self._framing
        self._framing = True
        self._max_frame = max_frame
        self._inline = inline
        self._inline_kinds = inline_kinds
        held = self.handshake_reader.take_buffered()
        tp = self._tp
        if tp is not None and not self._lost and not tp.is_closing() and not tp.is_reading():
            tp.resume_reading()  # the StreamReader may have paused it, full
        if held:
            self._parse(held)
        if self._lost or self._eof:
            self._finish(None)

    def stop(self) -> None:
        """Handle nothing more (the connection is being closed)."""
        self._inline = None
        if self._end is None:
            self._end = ConnectionAbortedError("closed by this node")
        self._pause()
        self._wake()

    async def next_frame(self) -> tuple[Kind, memoryview]:
        """The next frame not handled inline.  Raises like
        :func:`._frames.read_frame`: :class:`FrameError` (or the inline
        handler's error), ``asyncio.IncompleteReadError`` at the end of the
        stream (``partial == b""`` between frames), or the connection's error."""
        self._busy = False  # done with the frame it took before
        while not self._queue and self._end is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._queue:
            kind, body = self._queue.popleft()
            self._queued_bytes -= len(body) + _HEAD
            if self._paused and self._queued_bytes <= QUEUE_LOW and self._end is None:
                self._resume()
            self._busy = True
            return kind, body
        assert self._end is not None
        raise self._end

    # -- parsing -----------------------------------------------------------------------

    def _parse(self, data: bytes) -> None:
        partial = self._partial
        if partial:
            partial += data
            if len(partial) < self._need:
                return
            if self._need == 4:
                self._need = self._frame_size(partial, 0)
                if not self._need or len(partial) < self._need:
                    return
            data = bytes(partial)  # one copy, once the frame is whole
            partial.clear()
        view = memoryview(data)
        n = len(data)
        off = 0
        while n - off >= 4:
            size = self._frame_size(data, off)
            if not size:
                return
            end = off + size
            if end > n:
                break
            self._frame(data[off + 4], view[off + _HEAD : end])
            if self._end is not None:
                return
            off = end
        if off < n:
            partial += view[off:]
            self._need = 4 if n - off < 4 else self._frame_size(partial, 0)

    def _frame_size(self, buf: bytes | bytearray, off: int) -> int:
        """The whole size of the frame at ``off`` (its 4-byte length is
        there); 0 after ending the parsing on a bad length."""
        length: int = LENGTH.unpack_from(buf, off)[0]
        if length == 0:
            self._fail(FrameError("zero-length frame"))
            return 0
        if length > self._max_frame:
            limit = self._max_frame
            self._fail(FrameError(f"frame of {length} bytes exceeds the limit of {limit}"))
            return 0
        return 4 + length

    def _frame(self, code: int, body: memoryview) -> None:
        kind = _KINDS.get(code)
        if kind is None:
            self._fail(FrameError(f"unknown frame kind {code}"))
            return
        inline = self._inline
        if inline is not None and not self._queue and not self._busy and kind in self._inline_kinds:
            try:
                inline(kind, body)
            except Exception as e:  # ends this connection only, logged by its task
                self._fail(e)
            return
        self._queue.append((kind, body))
        self._queued_bytes += len(body) + _HEAD
        if self._queued_bytes > QUEUE_HIGH:
            self._pause()
        self._wake()

    # -- ending, waking, pausing -------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        self._end = exc
        self._partial.clear()
        self._pause()
        self._wake()

    def _finish(self, exc: Exception | None) -> None:
        """The stream ended: after the queue, the task sees why."""
        if self._end is not None:
            return
        if exc is not None:
            self._end = exc
        else:
            partial = bytes(self._partial)
            self._end = asyncio.IncompleteReadError(partial, self._need if partial else 4)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _pause(self) -> None:
        tp = self._tp
        if not self._paused and tp is not None and not tp.is_closing():
            self._paused = True
            tp.pause_reading()

    def _resume(self) -> None:
        tp = self._tp
        self._paused = False
        if tp is not None and not tp.is_closing():
            tp.resume_reading()


def new_protocol(
    limit: int,
    connected: Connected | None = None,
) -> PeerProtocol:
    """A fresh protocol for an accepted connection, its handshake stream
    limited to ``limit`` buffered bytes (as ``asyncio.start_server``'s)."""
    return PeerProtocol(HandshakeReader(limit=limit), connected)
