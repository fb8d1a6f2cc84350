"""TCP frames: ``length u32 | kind u8 | body``.

``length`` is big-endian and counts the kind byte and the body, so the
smallest frame has length 1.  A length of 0 or above the receiver's
``max_frame`` is refused before any body byte is read.

Kinds and bodies (docs/transport.md has the full story)::

    HELLO       client -> server   msgpack [magic, version, cluster_id, from, to(, epoch)]
    CALLER      client -> server   msgpack [magic, version, cluster_id, from, to or ""(, epoch)]
    CHALLENGE   server -> client   msgpack [node_id, nonce]
    PROOF       client -> server   msgpack [nonce, proof]
    WELCOME     server -> client   msgpack [version, cluster_id, node_id, proof(, epoch)]
    REFUSE      server -> client   msgpack [reason]
    REMOVED     server -> client   msgpack [epoch, reason, proof]

The epoch is left out when it is 0 (:func:`control`), so a node of a
cluster never forced sends the very bytes of the builds before epochs.
    MSG         client -> server   liferaft.codec message
    SNAP_BEGIN  client -> server   liferaft.codec InstallSnapshot, data emptied
    SNAP_CHUNK  client -> server   raw snapshot bytes
    SNAP_END    client -> server   msgpack [total_bytes, crc32]
    SNAP_ABORT  client -> server   msgpack [reason]
    SNAP_RESULT server -> client   msgpack [ok, reason]
    CALL        client -> server   call_id u64 | payload
    REPLY       server -> client   call_id u64 | ok u8 | payload, or UTF-8 error text

The handshake's rules live in :mod:`.handshake`; every handshake frame is
read with a limit of :data:`MAX_HANDSHAKE_FRAME`, whatever ``max_frame`` is.

Raft traffic is one-way per connection: each node dials every peer and
sends on that connection; the only frames that come back are the handshake
reply, snapshot results and call replies.  A CALLER handshake opens a
connection that carries calls only (a node that is not a peer yet asking to
join).
"""

from __future__ import annotations

import asyncio
import enum
import struct
from typing import Annotated, TypeVar, cast

import msgspec
from msgspec import Meta

from .handshake import MAGIC as MAGIC  # re-exported: the wire constants live with the rules
from .handshake import NONCE_SIZE, PROOF_SIZE
from .handshake import PROTOCOL_VERSION as PROTOCOL_VERSION

HEADER = struct.Struct(">IB")
LENGTH = struct.Struct(">I")
CALL_HEAD = struct.Struct(">Q")
REPLY_HEAD = struct.Struct(">QB")
# Frame bytes besides the payload: the kind byte and the call header.
CALL_OVERHEAD = 1 + CALL_HEAD.size
REPLY_OVERHEAD = 1 + REPLY_HEAD.size

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
MIN_MAX_FRAME = 64 * 1024
SNAPSHOT_CHUNK = 256 * 1024
# Every frame before the handshake completes: an unproven dialer cannot
# make a node buffer more than this.
MAX_HANDSHAKE_FRAME = 4096

_Str = Annotated[str, Meta(max_length=1024)]
_Id = Annotated[str, Meta(min_length=1, max_length=1024)]
_Uint = Annotated[int, Meta(ge=0)]
_Nonce = Annotated[bytes, Meta(min_length=NONCE_SIZE, max_length=NONCE_SIZE)]
_Proof = Annotated[bytes, Meta(max_length=PROOF_SIZE)]  # b"" or an HMAC-SHA256


class Kind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    REFUSE = 3
    CALLER = 4
    CHALLENGE = 5
    PROOF = 6
    REMOVED = 7
    MSG = 16
    SNAP_BEGIN = 32
    SNAP_CHUNK = 33
    SNAP_END = 34
    SNAP_ABORT = 35
    SNAP_RESULT = 36
    CALL = 48
    REPLY = 49


class FrameError(Exception):
    """A peer broke the framing or the protocol; the connection must close."""


class _Body(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    pass


class HelloHead(msgspec.Struct, array_like=True, frozen=True):
    """The first two fields of any version's HELLO: read before the rest, so
    a dialer of another version is refused by name, never misread."""

    magic: _Str
    version: _Uint


class Hello(_Body, frozen=True):
    """The body of HELLO and of CALLER (where ``to`` may be ``""``: "whoever you are")."""

    magic: _Str
    version: _Uint
    cluster_id: _Str
    frm: _Id
    to: _Str
    epoch: _Uint = 0  # the dialer's cluster epoch; absent (0) before epochs


class Welcome(_Body, frozen=True):
    version: _Uint
    cluster_id: _Str
    node_id: _Id
    proof: _Proof  # the listener's proof of the cluster secret (b"" without one)
    epoch: _Uint = 0  # the listener's cluster epoch; absent (0) before epochs


class Removed(_Body, frozen=True):
    """The listener's answer to a peer of an older epoch: its own epoch,
    why, and its proof over both epochs (handshake.prove_removed)."""

    epoch: _Uint
    reason: _Str
    proof: _Proof


class Challenge(_Body, frozen=True):
    """The listener's answer to a HELLO it may accept: who it is, and a fresh nonce."""

    node_id: _Id
    nonce: _Nonce


class Proof(_Body, frozen=True):
    """The dialer's fresh nonce and its proof of the cluster secret (b"" without one)."""

    nonce: _Nonce
    proof: _Proof


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
    cls: msgspec.msgpack.Decoder(cls)
    for cls in (HelloHead, Hello, Challenge, Proof, Welcome, Removed, Reason, SnapEnd, SnapResult)
}


def frame(kind: Kind, body: bytes | bytearray | memoryview = b"") -> bytes:
    """One complete frame, ready to write."""
    return HEADER.pack(len(body) + 1, kind) + body


def control(kind: Kind, body: _Body) -> bytes:
    """A frame whose body is a msgpack control struct.  A HELLO's or
    WELCOME's epoch of 0 is left out: the frame is then byte for byte what
    builds before epochs send, and what they accept (rolling upgrades)."""
    if isinstance(body, (Hello, Welcome)) and body.epoch == 0:
        return frame(kind, _encoder.encode(msgspec.structs.astuple(body)[:-1]))
    return frame(kind, _encoder.encode(body))


def call_frame(call_id: int, payload: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
    """A CALL frame, as parts for ``writelines`` (the payload is not copied)."""
    head = HEADER.pack(len(payload) + CALL_OVERHEAD, Kind.CALL) + CALL_HEAD.pack(call_id)
    return [head, memoryview(payload)]


def reply_frame(
    call_id: int, ok: bool, payload: bytes | bytearray | memoryview
) -> list[bytes | memoryview]:
    """A REPLY frame, as parts for ``writelines``."""
    head = HEADER.pack(len(payload) + REPLY_OVERHEAD, Kind.REPLY) + REPLY_HEAD.pack(call_id, ok)
    return [head, memoryview(payload)]


def parse_call(body: memoryview) -> tuple[int, memoryview]:
    """``(call_id, payload)`` of a CALL body; :class:`FrameError` if too short."""
    if len(body) < CALL_HEAD.size:
        raise FrameError("CALL frame shorter than its header")
    (call_id,) = CALL_HEAD.unpack_from(body)
    return call_id, body[CALL_HEAD.size :]


def parse_reply(body: memoryview) -> tuple[int, bool, memoryview]:
    """``(call_id, ok, payload)`` of a REPLY body; :class:`FrameError` if malformed."""
    if len(body) < REPLY_HEAD.size:
        raise FrameError("REPLY frame shorter than its header")
    call_id, ok = REPLY_HEAD.unpack_from(body)
    if ok > 1:
        raise FrameError(f"REPLY ok flag {ok} is neither 0 nor 1")
    return call_id, bool(ok), body[REPLY_HEAD.size :]


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
