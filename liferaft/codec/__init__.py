"""liferaft.codec: the versioned, typed binary encoding of Raft messages.

Every buffer is one version byte (:data:`VERSION`) followed by a msgpack
array written and validated by msgspec.  The encoding is typed (never
pickle): decoding builds only the core's own message and record types, and
checks every field on the way.

Example::

    buf = encode_message(Heartbeat(term=3, frm="n1", to="n2", commit=7))
    msg = decode_message(buf)   # == the Heartbeat; DecodeError if malformed

:func:`decode_message` raises :class:`DecodeError` (a ``ValueError``), and
nothing else, whatever bytes it is given.  Both functions are pure and safe
to call from any thread.
"""

from ._messages import decode_message, decode_record, encode_message, encode_record
from ._wire import MAX_NODE_ID, VERSION
from .errors import CodecError, DecodeError, EncodeError

__all__ = [
    "MAX_NODE_ID",
    "VERSION",
    "CodecError",
    "DecodeError",
    "EncodeError",
    "decode_message",
    "decode_record",
    "encode_message",
    "encode_record",
]
