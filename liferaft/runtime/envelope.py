"""The command envelope: the bytes of one log entry per command call.

This module owns the wire format of a :class:`~liferaft.runtime.commands.Replicated`
entry, and nothing else (the descriptors build the body, ``Replicated.apply``
reads it).  Version 1, in every log written so far::

    offset 0   float64 little-endian  leader time, zero when proposed; the leader
                                      overwrites it (Proposer stamp_time=True)
    offset 8   u8                     envelope version, 1
    offset 9   msgpack                [command_name: str, [arg0, arg1, ...]]

Versions.  Every version keeps its version byte at offset 8
(:data:`VERSION_OFFSET`), so :func:`decode_envelope` reads it before it
knows the layout and hands the entry to that version's decoder in
``_DECODERS``.  Version 2 (planned by issue 13, section 1: the leader-time
stamp moves into a runtime envelope around the user's bytes) adds a
``_decode_v2`` there and a leader time passed in by the runtime; version-1
entries stay in people's logs and keep decoding with ``_decode_v1``, whose
bytes ``tests/runtime/golden/envelope_v1.bin`` pins.  Another version is
refused with :class:`BadEnvelopeError` naming both.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from .errors import BadEnvelopeError

__all__ = [
    "ENVELOPE_VERSION",
    "STAMP",
    "VERSION_OFFSET",
    "Envelope",
    "decode_body",
    "decode_envelope",
    "encode_envelope",
]

#: Version byte this replica writes (offset 8 of every entry).
ENVELOPE_VERSION = 1
#: Offset 0: the leader time, written by the leader (float64 little-endian).
STAMP = struct.Struct("<d")
#: Where every version keeps its version byte.
VERSION_OFFSET = STAMP.size
_V1_PREFIX = VERSION_OFFSET + 1  # leader time + version byte

_BODY_DECODER = msgspec.msgpack.Decoder(tuple[str, list[msgspec.Raw]])


class Envelope(NamedTuple):
    """A decoded command entry.  ``args`` are still-encoded msgpack values."""

    leader_time: float
    command: str
    args: list[msgspec.Raw]


def encode_envelope(body: bytes) -> bytes:
    """A version-1 entry around ``body`` (msgpack ``[name, args]``), leader time zero."""
    return bytes(STAMP.size) + bytes((ENVELOPE_VERSION,)) + body


def decode_body(body: bytes | memoryview) -> tuple[str, list[msgspec.Raw]]:
    """Split a msgpack ``[name, [args...]]`` body; raises ``msgspec.DecodeError``."""
    return _BODY_DECODER.decode(body)


def decode_envelope(data: bytes) -> Envelope:
    """Split an entry into leader time, command name and encoded arguments.

    Raises :class:`BadEnvelopeError` for anything that is not an envelope of
    a version this replica reads.
    """
    if len(data) < _V1_PREFIX:
        raise BadEnvelopeError(f"entry of {len(data)} bytes is too short for a command envelope")
    version = data[VERSION_OFFSET]
    decoder = _DECODERS.get(version)
    if decoder is None:
        raise BadEnvelopeError(
            f"unsupported command envelope version {version} (this replica reads "
            f"version {ENVELOPE_VERSION})"
        )
    return decoder(data)


def _decode_v1(data: bytes) -> Envelope:
    (leader_time,) = STAMP.unpack_from(data, 0)
    if not math.isfinite(leader_time):
        raise BadEnvelopeError(f"leader time {leader_time!r} is not a finite number")
    try:
        name, args = decode_body(memoryview(data)[_V1_PREFIX:])
    except msgspec.DecodeError as e:
        raise BadEnvelopeError(f"malformed command envelope: {e}") from None
    return Envelope(leader_time, name, args)


# Decoders by version byte.  A new version adds its decoder here; an old one
# is never removed while logs that hold it may exist.
_DECODERS: dict[int, Callable[[bytes], Envelope]] = {1: _decode_v1}
