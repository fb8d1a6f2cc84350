"""The KV state machine's command codec: Raft entry bytes <-> commands.

An entry is one **version byte** followed by one msgpack-encoded command, a
msgspec tagged union (the ``type`` field names the command):

- :class:`Write`: a :class:`~liferaft.kv.mvcc.ops.Put`,
  :class:`~liferaft.kv.mvcc.ops.DeleteRange` or :class:`~liferaft.kv.mvcc.ops.Txn`,
  with the client :class:`SessionRef` it is sent under (None: a plain write);
- :class:`OpenSession`: open a client session (its id is the entry's index);
- :class:`LeaseGrant`, :class:`LeaseRevoke`: leases (:mod:`.leases`);
- :class:`~liferaft.kv.mvcc.ops.Compact`: drop history below a revision.

Why both: the union grows by new tags without a new version (an old build
refuses an unknown tag like any undecodable entry), and the version byte is
for a change of encoding itself.  It also tells these entries from those of
the in-memory store of earlier builds, which are msgpack maps and so start
with a byte >= 0x80: never version 1.

Empty data is what the runtime hands a batch state machine for a no-op or
membership entry (docs/statemachine.md): no command.  Bytes that do not
decode raise :class:`CommandFormatError`, which the machine returns as that
entry's result, alike on every replica: a committed entry never raises out
of apply (docs/architecture.md, "Trust model").
"""

from __future__ import annotations

import hashlib

import msgspec

from liferaft.kv.errors import KVError
from liferaft.kv.mvcc.nesting import deeper_than
from liferaft.kv.mvcc.ops import Compact, DeleteRange, Put, Txn

#: The encoding this build writes and reads (the entry's first byte).
CODEC_VERSION = 1

#: The deepest nesting of msgpack containers an entry may have.  A command
#: nests at most 4 deep (Write > Txn > its ops > an op); anything deeper is
#: refused before decoding, since msgspec's recursion limit depends on the
#: caller's stack and would not refuse it alike on every replica
#: (:mod:`.nesting`).
MAX_NESTING = 16


class SessionRef(msgspec.Struct, array_like=True, frozen=True):
    """Which session a write belongs to, and where its client stands.

    ``id`` is the log index of the session's OpenSession entry; ``seq``
    numbers the client's writes from 1; ``lowest_pending`` is the lowest
    ``seq`` whose answer the client still awaits (so it holds every answer
    below it, and the machine may drop those outcomes)."""

    id: int
    seq: int
    lowest_pending: int


class Write(msgspec.Struct, frozen=True, tag=True, omit_defaults=True):
    """A write op, applied at most once per ``session`` seq (None: each time)."""

    op: Put | DeleteRange | Txn
    session: SessionRef | None = None


class OpenSession(msgspec.Struct, frozen=True, tag=True):
    """Open a client session; its id is the index of this entry."""


class LeaseGrant(msgspec.Struct, frozen=True, tag=True):
    """Grant lease ``id`` (0: the entry's log index) of ``ttl`` whole seconds."""

    id: int
    ttl: int


class LeaseRevoke(msgspec.Struct, frozen=True, tag=True):
    """End lease ``id`` and delete every key attached to it, at one revision."""

    id: int


Command = Write | OpenSession | LeaseGrant | LeaseRevoke | Compact


class CommandFormatError(KVError):
    """Entry bytes that are not a command of this build (truncated, another
    version, an unknown command).  The entry is applied as a no-op."""

    code = "bad_command"


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Command).decode
_VERSION = bytes([CODEC_VERSION])


def encode_command(cmd: Command) -> bytes:
    """The entry bytes of ``cmd``."""
    return _VERSION + _encode(cmd)


def decode_command(data: bytes) -> Command | None:
    """The command in ``data`` (None for empty data: a no-op or membership
    entry); :class:`CommandFormatError` (one line) if it is not one."""
    if not data:
        return None
    if data[0] != CODEC_VERSION:
        raise CommandFormatError(
            f"command format version {data[0]}; this build reads version {CODEC_VERSION}"
            + (" (an entry of the in-memory store of earlier builds?)" if data[0] >= 0x80 else "")
        )
    body = memoryview(data)[1:]
    if deeper_than(body, MAX_NESTING):
        raise CommandFormatError(f"not a kv command: nested more than {MAX_NESTING} deep")
    try:
        cmd: Command = _decode(body)
    except msgspec.DecodeError as exc:
        raise CommandFormatError(f"not a kv command: {exc}") from None
    return cmd


def op_digest(op: Put | DeleteRange | Txn) -> int:
    """What a retry must repeat: the op without its session (``lowest_pending``
    may move between retries).  Computed from the decoded op, which every
    replica decodes alike, so every replica computes the same digest."""
    return int.from_bytes(hashlib.blake2b(_encode(op), digest_size=8).digest(), "little")
