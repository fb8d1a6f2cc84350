"""The runtime entry format: the envelope of the leader's time around the user's bytes.

Theory of operation
-------------------

The leader-time stamp belongs to the runtime, not to the core and not to
the user's bytes (issue 13, section 1; docs/statemachine.md, "The durable
contract").  In a cluster of *entry format 2* every NORMAL, non-empty entry
the runtime appends is::

    | u8 version = 2 | f64 little-endian leader_time | user bytes |

a 9-byte header, defined here and nowhere else.  The leader fills
``leader_time`` with its clock's ``time.time()`` when it appends the entry,
so every replica hands the state machine the same time without trusting any
client's clock; the state machine receives ``apply(index, user_bytes, *,
leader_time=...)`` and never sees the header.

The entry format is a property of the *cluster*, fixed at bootstrap and
carried in the runtime snapshot header, so every member agrees on it:

- format 1 (:data:`ENTRY_FORMAT_RAW`): every existing data dir and cluster.
  Entries are the user's bytes as proposed; ``stamp_time=True`` overwrites
  ``data[0:8]`` with the leader's time (:func:`stamp_legacy`), as before this
  module existed.  The state machine is told ``leader_time=0.0``.
- format 2 (:data:`ENTRY_FORMAT_ENVELOPED`): the envelope above.

Empty data is never wrapped: the core's no-op entry (thesis §6.4: a new
leader's first entry) is empty, and an empty entry reaches no state machine.

This is not the command envelope of :mod:`liferaft.runtime.commands`: that
one is inside the user's bytes, and its version follows the entry format.

A reader never guesses.  An entry of a version this build does not know is
refused with an :class:`EnvelopeError` naming the version found and the ones
this build reads; a short entry or a non-finite time is refused too.
"""

from __future__ import annotations

import math
import struct
from typing import Final

__all__ = [
    "ENTRY_FORMATS",
    "ENTRY_FORMAT_ENVELOPED",
    "ENTRY_FORMAT_RAW",
    "ENVELOPE_VERSION",
    "header",
    "read_header",
    "split",
    "HEADER_SIZE",
    "READABLE_VERSIONS",
    "EnvelopeError",
    "check_format",
    "decode",
    "encode",
    "stamp_legacy",
    "unwrap",
    "wrap",
]

#: Entry format 1: raw user bytes (legacy stamp in ``data[0:8]`` if asked).
ENTRY_FORMAT_RAW: Final = 1
#: Entry format 2: every normal, non-empty entry is enveloped.
ENTRY_FORMAT_ENVELOPED: Final = 2
#: The entry formats this build knows, oldest first.
ENTRY_FORMATS: Final = (ENTRY_FORMAT_RAW, ENTRY_FORMAT_ENVELOPED)

#: The version byte this build writes.  It equals the entry format that
#: introduced it; format 1 has no envelope and so no version byte.
ENVELOPE_VERSION: Final = 2
#: The envelope versions :func:`decode` accepts.
READABLE_VERSIONS: Final = (ENVELOPE_VERSION,)

_HEADER = struct.Struct("<Bd")  # version, leader time; no padding with "<"
#: Bytes before the user's data: version (1) + leader time (8).
HEADER_SIZE: Final = _HEADER.size
#: ``(version, leader_time)`` of an entry at least :data:`HEADER_SIZE` long,
#: unchecked: the apply loop's inline fast path (it checks the version byte
#: and that the time is finite itself, and falls back to :func:`split`).
read_header: Final = _HEADER.unpack_from
_LEGACY_STAMP = struct.Struct("<d")  # format 1: data[0:8], written by the leader


class EnvelopeError(ValueError):
    """An entry is not a runtime envelope this build can read.

    Short, of an unknown version, or carrying a leader time that is not a
    finite number.  The message is one line.
    """


def check_format(fmt: int) -> int:
    """Return ``fmt`` if this build knows it; else :class:`EnvelopeError` naming both."""
    if fmt not in ENTRY_FORMATS:
        known = ", ".join(map(str, ENTRY_FORMATS))
        raise EnvelopeError(f"entry format {fmt} is unknown; this build reads formats {known}")
    return fmt


def _check_time(leader_time: float) -> None:
    if not math.isfinite(leader_time):
        raise EnvelopeError(f"leader time {leader_time!r} is not a finite number")


def encode(leader_time: float, user_bytes: bytes) -> bytes:
    """Wrap ``user_bytes`` in a version-:data:`ENVELOPE_VERSION` envelope.

    Raises :class:`EnvelopeError` for a non-finite ``leader_time``: a reader
    would refuse the entry, so it must never be written.
    """
    _check_time(leader_time)
    return _HEADER.pack(ENVELOPE_VERSION, leader_time) + user_bytes


def decode(data: bytes) -> tuple[float, bytes]:
    """Split an enveloped entry into ``(leader_time, user_bytes)``.

    Raises :class:`EnvelopeError` for an entry shorter than the header, of a
    version not in :data:`READABLE_VERSIONS`, or with a non-finite time.
    """
    if len(data) < HEADER_SIZE:
        raise EnvelopeError(
            f"entry of {len(data)} bytes is shorter than the {HEADER_SIZE}-byte "
            "runtime envelope header"
        )
    version, leader_time = _HEADER.unpack_from(data, 0)
    if version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise EnvelopeError(
            f"runtime envelope version {version}; this build reads versions {readable}"
        )
    _check_time(leader_time)
    return leader_time, bytes(data[HEADER_SIZE:])


def stamp_legacy(leader_time: float, data: bytes) -> bytes:
    """Format 1's ``stamp_time=True``: ``data[0:8]`` replaced by ``leader_time``.

    Kept so old clusters keep working (their state machines read the time
    from the first 8 bytes, e.g. the version-1 command envelope of
    :mod:`liferaft.runtime.commands`).  Shorter data grows to 8 bytes.
    """
    return _LEGACY_STAMP.pack(leader_time) + data[_LEGACY_STAMP.size :]


def header(leader_time: float) -> bytes:
    """The format-2 header for ``leader_time``: prepend it to a batch's user
    bytes (every entry of a batch carries the same time) without a call per
    entry on the write path.  :class:`EnvelopeError` for a non-finite time."""
    return encode(leader_time, b"")


def split(data: bytes) -> tuple[float, bytes]:
    """:func:`decode`, with the common case (a well-formed version-2 entry)
    on a fast path: the apply of every entry runs it."""
    if len(data) >= HEADER_SIZE and data[0] == ENVELOPE_VERSION:
        t: float = _HEADER.unpack_from(data, 0)[1]
        if t - t == 0.0:  # finite (inf - inf and nan - nan are nan)
            return t, data[HEADER_SIZE:]
    return decode(data)


def wrap(fmt: int, leader_time: float, data: bytes, *, stamp_time: bool = False) -> bytes:
    """The bytes the leader appends for a proposal of ``data`` in format ``fmt``.

    Format 1: ``data`` unchanged, or :func:`stamp_legacy` with ``stamp_time``.
    Format 2: :func:`encode` (``stamp_time`` is moot: every entry carries the
    time).  Empty data is never wrapped, in either format.
    """
    check_format(fmt)
    if not data:
        return data
    if fmt == ENTRY_FORMAT_RAW:
        return stamp_legacy(leader_time, data) if stamp_time else data
    return encode(leader_time, data)


def unwrap(fmt: int, data: bytes) -> tuple[float, bytes]:
    """``(leader_time, user_bytes)`` of a committed normal entry of format ``fmt``.

    Format 1: ``(0.0, data)``, the bytes unchanged (a legacy stamp stays in
    them, where the state machine reads it).  Format 2: :func:`decode`.
    Empty data, never wrapped, is ``(0.0, b"")`` in both.
    """
    check_format(fmt)
    if fmt == ENTRY_FORMAT_RAW or not data:
        return 0.0, data
    return decode(data)
