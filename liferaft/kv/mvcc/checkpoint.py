"""A checkpoint of the MVCC store on the wire: a framed, digested database copy.

Raft snapshots of the KV machine are the database itself (docs/kv.md, "The
KV state machine"): a follower that needs one is streamed a consistent copy
of ``data.mdb`` (:meth:`MVCCStore.stream_copy`, from one LMDB read
transaction, with no second copy of the state in memory or on disk).  On
the wire the copy is framed so a receiver can tell a whole, intact copy
from a truncated or damaged one *before* it trusts a byte of it:

    magic "LRKM" | version u8 | frames... | 0 u32 | length u64 | blake2b-256 digest

A frame is ``length u32 | bytes`` (big-endian; never empty, at most
:data:`MAX_FRAME`); the zero length ends them; the trailer is the total
length and the BLAKE2b-256 digest of the copy's bytes.  A stream that stops
anywhere before the end of the trailer, has bytes after it, or whose
digest or length differs is refused with
:class:`~liferaft.kv.mvcc.ops.StoreFormatError` (a ``SnapshotFormatError``:
one line).  The digest guards against damage on the way (a disk, a buggy
proxy), not against a malicious sender: peers are trusted
(docs/architecture.md, "Trust model").
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from liferaft.kv.mvcc.ops import StoreFormatError
from liferaft.runtime.statemachine import ChunkReader, SnapshotFormatError

MAGIC = b"LRKM"
CHECKPOINT_VERSION = 1
#: The largest frame a receiver accepts (a damaged length must not make it
#: buffer gigabytes); the sender's frames are its chunk size, 64 KiB.
MAX_FRAME = 16 << 20
DATA_FILE = "data.mdb"

_LEN = struct.Struct(">I")
_TRAILER = struct.Struct(">Q32s")


def _digest() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=32)


def frame(copy: Iterable[bytes], align: tuple[int, int] | None = None) -> Iterator[bytes]:
    """The checkpoint stream of a database copy given as chunks.

    ``align=(m, r)``: zero bytes (one frame, at most ``m``) end the copy so
    that the stream's length is ``r`` modulo ``m``.  LMDB ignores bytes past
    the last page its meta names, so the store is the same; etcdctl 3.4
    keeps a snapshot only if its length is 32 modulo 512 (where etcd's
    SHA-256 ends a bbolt file; here the trailer's digest does)."""
    h, n = _digest(), 0
    head = MAGIC + bytes([CHECKPOINT_VERSION])
    out = len(head)
    yield head
    for piece in copy:
        for i in range(0, len(piece), MAX_FRAME):
            part = piece[i : i + MAX_FRAME]
            h.update(part)
            n += len(part)
            out += _LEN.size + len(part)
            yield _LEN.pack(len(part)) + part
    end = _LEN.size + _TRAILER.size
    if align is not None and (out + end) % align[0] != align[1]:
        pad = (align[1] - out - end - _LEN.size) % align[0] or align[0]
        part = bytes(pad)
        h.update(part)
        n += pad
        yield _LEN.pack(pad) + part
    yield _LEN.pack(0) + _TRAILER.pack(n, h.digest())


def receive(chunks: Iterable[bytes], path: str | os.PathLike[str]) -> None:
    """Write the copy in checkpoint ``chunks`` as ``path/data.mdb`` (``path``
    new), durably; :class:`StoreFormatError` if the stream is not a whole,
    intact checkpoint (the caller removes ``path`` then)."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=False)
    r = ChunkReader(chunks)
    try:
        head = r.read_exact(len(MAGIC) + 1)
        if head[:4] != MAGIC:
            raise StoreFormatError("not a liferaft-kv checkpoint (bad magic)")
        if head[4] != CHECKPOINT_VERSION:
            raise StoreFormatError(
                f"liferaft-kv checkpoint version {head[4]}; this build reads version "
                f"{CHECKPOINT_VERSION}"
            )
        h, n = _digest(), 0
        with open(d / DATA_FILE, "wb") as f:
            while size := _LEN.unpack(r.read_exact(_LEN.size))[0]:
                if size > MAX_FRAME:
                    raise StoreFormatError(f"checkpoint frame of {size} bytes (damaged?)")
                part = r.read_exact(size)
                h.update(part)
                n += size
                f.write(part)
            length, digest = _TRAILER.unpack(r.read_exact(_TRAILER.size))
            if length != n or digest != h.digest():
                raise StoreFormatError(
                    f"checkpoint damaged: {n} bytes received, the sender sent {length}, "
                    "and the digests differ" if length != n else
                    "checkpoint damaged: its digest does not match its bytes"
                )
            if not r.at_eof():
                raise StoreFormatError("checkpoint has bytes after its trailer")
            f.flush()
            os.fsync(f.fileno())
    except SnapshotFormatError as exc:
        if isinstance(exc, StoreFormatError):
            raise
        raise StoreFormatError(f"checkpoint truncated: {exc}") from None
    fsync_dir(d)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, so the names in it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
