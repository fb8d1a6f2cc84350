"""TCP frames: ``length u32 | kind u8 | body``.

``length`` is big-endian and counts the kind byte and the body, so the
smallest frame has length 1.  A length of 0 or above the receiver's
``max_frame`` is refused before any body byte is read.

Kinds and bodies (docs/transport.md has the full story)::

    HELLO       client -> server   msgpack [magic, version, cluster_id, from, to]
    WELCOME     server -> client   msgpack [version, cluster_id, node_id]
    REFUSE      server -> client   msgpack [reason]
    MSG         client -> server   liferaft.codec message
    SNAP_BEGIN  client -> server   liferaft.codec InstallSnapshot, data emptied
    SNAP_CHUNK  client -> server   raw snapshot bytes
    SNAP_END    client -> server   msgpack [total_bytes, crc32]
    SNAP_ABORT  client -> server   msgpack [reason]
    SNAP_RESULT server -> client   msgpack [ok, reason]

Traffic is one-way per connection: each node dials every peer and sends on
that connection; the only frames that come back are the handshake reply
and snapshot results.
"""

from __future__ import annotations

import asyncio
import enum
import struct
from typing import Annotated, TypeVar, cast

import msgspec
from msgspec import Meta

PROTOCOL_VERSION = 1
MAGIC = "liferaft"

HEADER = struct.Struct(">IB")
LENGTH = struct.Struct(">I")

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
MIN_MAX_FRAME = 64 * 1024
SNAPSHOT_CHUNK = 256 * 1024

_Str = Annotated[str, Meta(max_length=1024)]
_Id = Annotated[str, Meta(min_length=1, max_length=1024)]
_Uint = Annotated[int, Meta(ge=0)]


class Kind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    REFUSE = 3
    MSG = 16
    SNAP_BEGIN = 32
    SNAP_CHUNK = 33
    SNAP_END = 34
    SNAP_ABORT = 35
    SNAP_RESULT = 36


class FrameError(Exception):
    """A peer broke the framing or the protocol; the connection must close."""


class _Body(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    pass


class Hello(_Body, frozen=True):
    magic: _Str
    version: _Uint
    cluster_id: _Str
    frm: _Id
    to: _Id


class Welcome(_Body, frozen=True):
    version: _Uint
    cluster_id: _Str
    node_id: _Id


class Reason(_Body, frozen=True):
    reason: _Str


class SnapEnd(_Body, frozen=True):
    total: _Uint
    crc32: Annotated[int, Meta(ge=0, le=0xFFFFFFFF)]


class SnapResult(_Body, frozen=True):
    ok: bool
    reason: _Str


T = TypeVar("T")

_encoder = msgspec.msgpack.Encoder()
_decoders: dict[type, msgspec.msgpack.Decoder[object]] = {
    cls: msgspec.msgpack.Decoder(cls) for cls in (Hello, Welcome, Reason, SnapEnd, SnapResult)
}


def frame(kind: Kind, body: bytes | bytearray | memoryview = b"") -> bytes:
    """One complete frame, ready to write."""
    return HEADER.pack(len(body) + 1, kind) + body


def control(kind: Kind, body: _Body) -> bytes:
    """A frame whose body is a msgpack control struct."""
    return frame(kind, _encoder.encode(body))


def parse(cls: type[T], body: bytes | memoryview) -> T:
    """Decode a control body; :class:`FrameError` if it is malformed."""
    try:
        return cast(T, _decoders[cls].decode(body))
    except msgspec.DecodeError as e:
        raise FrameError(f"malformed {cls.__name__.lower()} frame: {e}") from None


async def read_frame(reader: asyncio.StreamReader, max_frame: int) -> tuple[Kind, memoryview]:
    """Read one frame.

    Raises :class:`FrameError` for a zero or oversized length or an unknown
    kind, and ``asyncio.IncompleteReadError`` if the stream ends mid-frame
    (``partial == b""`` means it ended cleanly between frames).
    """
    (length,) = LENGTH.unpack(await reader.readexactly(4))
    if length == 0:
        raise FrameError("zero-length frame")
    if length > max_frame:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    data = await reader.readexactly(length)
    try:
        kind = Kind(data[0])
    except ValueError:
        raise FrameError(f"unknown frame kind {data[0]}") from None
    return kind, memoryview(data)[1:]
