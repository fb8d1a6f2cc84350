"""Hard state (term, vote, commit) on disk, replaced atomically.

The file is written whole to ``hardstate.tmp``, fsynced, renamed over
``hardstate`` and the directory fsynced, so a crash leaves either the old or
the new state, never a mix (§5.1: "updated on stable storage before
responding to RPCs").  A CRC guards against corruption.  The state never goes
backwards: a lower term, or a second vote in the same term, is refused, and
the commit index only grows.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from liferaft.core import HardState

from .errors import CorruptionError, StorageError
from .fs import REAL, FileSystem

MAGIC = b"LRHS"
VERSION = 1
_HEAD = struct.Struct("<4sHQQH")  # magic, version, term, commit, vote length
NAME = "hardstate"


def encode(hs: HardState) -> bytes:
    vote = (hs.vote or "").encode()
    body = _HEAD.pack(MAGIC, VERSION, hs.term, hs.commit, len(vote)) + vote
    return body + struct.pack("<I", zlib.crc32(body))


def decode(data: bytes, path: Path) -> HardState:
    if len(data) < _HEAD.size + 4:
        raise CorruptionError(path, 0, "hard state file is truncated")
    body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
    if zlib.crc32(body) != crc:
        raise CorruptionError(path, 0, "hard state checksum mismatch")
    magic, version, term, commit, vlen = _HEAD.unpack_from(body, 0)
    if magic != MAGIC or version != VERSION or len(body) != _HEAD.size + vlen:
        raise CorruptionError(path, 0, "not a liferaft hard state file (or another version)")
    vote = body[_HEAD.size :].decode() or None
    return HardState(term, vote, commit)


class HardStateStore:
    """The durable hard state of one node."""

    def __init__(self, directory: str | os.PathLike[str], fs: FileSystem = REAL) -> None:
        self.dir = Path(directory)
        self.fs = fs
        fs.makedirs(self.dir)
        self.path = self.dir / NAME
        tmp = self.dir / (NAME + ".tmp")
        if fs.exists(tmp):
            fs.unlink(tmp)  # a write that never reached its rename
        exists = fs.exists(self.path)
        self.current = decode(fs.read(self.path), self.path) if exists else HardState()

    def save(self, hs: HardState) -> HardState:
        """Persist ``hs`` durably; returns what was stored (commit never shrinks)."""
        cur = self.current
        if hs.term < cur.term:
            raise StorageError(f"hard state term would go back from {cur.term} to {hs.term}")
        if hs.term == cur.term and cur.vote is not None and hs.vote != cur.vote:
            raise StorageError(
                f"a second vote in term {hs.term}: {cur.vote!r} then {hs.vote!r}"
            )
        new = HardState(hs.term, hs.vote, max(hs.commit, cur.commit))
        if new == cur:
            return cur
        return self._write(new)

    def lower_commit(self, commit: int) -> HardState:
        """Lower the stored commit index to ``commit`` (term and vote stay).

        Only for ``liferaft inspect --repair --force``, after an operator cut
        the log below it: a node refuses to start with a commit index past its
        log.  Nothing else ever moves the commit index back."""
        cur = self.current
        if commit >= cur.commit:
            return cur
        return self._write(HardState(cur.term, cur.vote, commit))

    def _write(self, new: HardState) -> HardState:
        tmp = self.dir / (NAME + ".tmp")
        try:
            self.fs.create(tmp, encode(new))
            self.fs.replace(tmp, self.path)
            self.fs.fsync_dir(self.dir)
        except OSError as exc:
            raise StorageError(f"hard state write failed: {exc.strerror or exc}") from exc
        self.current = new
        return new
