"""The WAL's on-disk format: segment names and headers, records, repair plans.

Everything here is pure bytes-in, answer-out (plus :func:`apply_repair`,
which carries out a plan the operator agreed to), so the scanner
(:mod:`.walscan`) and the log (:mod:`.wal`) share one definition of the
format.  The format itself is described in :mod:`liferaft.storage.wal`.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from liferaft.core import Entry

from .fs import REAL, FileSystem

MAGIC = b"LRWAL\x00"
#: Format 1: the file holds records and ends where the last one ends (written
#: by appending).  Format 2: the file is preallocated (zeros up to its full
#: size) and written in place; the records end at the first record header
#: that is all zeros, or at the end of the file.  New segments are format 2
#: unless preallocation is switched off; both are read.
VERSION_APPEND = 1
VERSION_PREALLOC = 2
VERSION = VERSION_PREALLOC
VERSIONS = (VERSION_APPEND, VERSION_PREALLOC)
_HEADER = struct.Struct("<6sHQ")  # magic, version, first index
_REC = struct.Struct("<IIB")  # length, crc, type
_ENTRY = struct.Struct("<QQB")  # index, term, entry type

REC_ENTRY = 1
MAX_RECORD = 64 << 20

#: The next segment, preallocated ahead of need (never part of the log: it
#: gets its header, then its segment name, when a segment rolls over).
SPARE = "spare.tmp"

#: Present only while a reset is under way (see :meth:`WAL.reset`); holds the
#: index the log restarts at, in ASCII.
RESET_MARK = "RESET"


_ENTRY_TYPE_CRC = zlib.crc32(bytes((REC_ENTRY,)))  # the CRC starts with the type byte


def encode_entry(e: Entry) -> bytes:
    """One ENTRY record, ready to write."""
    payload = _ENTRY.pack(e.index, e.term, e.type) + e.data
    return _REC.pack(len(payload), zlib.crc32(payload, _ENTRY_TYPE_CRC), REC_ENTRY) + payload


def _valid_record_after(data: bytes, start: int, min_index: int) -> bool:
    """Is there a checksummed ENTRY record of index >= ``min_index`` anywhere
    from ``start`` on?  Used only to tell a torn tail from a corrupt length
    field, so it may be slow: it runs on at most one record per open."""
    n = len(data)
    type_byte = bytes((REC_ENTRY,))
    p = start - 1
    while True:
        # Only a position whose type byte (offset 8) is an ENTRY's can start
        # one: jump between those, so a preallocated segment's megabytes of
        # zeros cost one find().
        q = data.find(type_byte, p + 1 + 8)
        if q < 0 or q - 8 > n - _REC.size - _ENTRY.size:
            return False
        p = q - 8
        length, crc, rtype = _REC.unpack_from(data, p)
        end = p + _REC.size + length
        if rtype != REC_ENTRY or length < _ENTRY.size or end > n:
            continue
        payload = data[p + _REC.size : end]
        if (
            zlib.crc32(payload, zlib.crc32(bytes((rtype,)))) == crc
            and _ENTRY.unpack_from(payload, 0)[0] >= min_index
        ):
            return True


def _whole_under_wrong_length(data: bytes, off: int, n: int | None = None) -> bool:
    """Is the rest of the file, from the record at ``off``, one whole record
    whose CRC checks out, though its length field points past the end?  A
    torn write never looks like that (its length is right and its bytes are
    short), so only the length field was damaged: corruption, not a tear."""
    n = len(data) if n is None else n  # where the written bytes end
    _, crc, rtype = _REC.unpack_from(data, off)
    body = off + _REC.size
    return n - body >= _ENTRY.size and (
        zlib.crc32(data[body:n], zlib.crc32(bytes((rtype,)))) == crc
    )


def _record_at(data: bytes, p: int) -> tuple[int, int, int] | None:
    """The checksummed ENTRY record at ``p``, as (index, term, end), or None."""
    n = len(data)
    if p + _REC.size + _ENTRY.size > n:
        return None
    length, crc, rtype = _REC.unpack_from(data, p)
    end = p + _REC.size + length
    if rtype != REC_ENTRY or length < _ENTRY.size or end > n:
        return None
    if zlib.crc32(data[p + _REC.size : end], _ENTRY_TYPE_CRC) != crc:
        return None
    index, term, _ = _ENTRY.unpack_from(data, p + _REC.size)
    return index, term, end


def _salvage(data: bytes, start: int) -> list[tuple[int, int]]:
    """(index, term) of every checksummed ENTRY record from ``start`` on,
    found by following lengths and, past a bad record, by trying each later
    position whose type byte is an ENTRY's.  For reporting what a cut would
    drop, never for reading the log."""
    found: list[tuple[int, int]] = []
    p = start
    type_byte = bytes((REC_ENTRY,))
    while p + _REC.size + _ENTRY.size <= len(data):
        rec = _record_at(data, p)
        if rec is not None:
            found.append((rec[0], rec[1]))
            p = rec[2]
            continue
        q = data.find(type_byte, p + 9)  # the type byte sits at offset 8 of a record
        if q < 0:
            break
        p = q - 8
    return found


SECTOR = 512


def _zero_sector_tail(data: bytes, off: int, n: int | None = None) -> bool:
    """Does the last record (``off`` to ``n``, the end of the file unless
    given) hold a whole sector's worth of zeros that starts on a sector
    boundary?  That is what a crash leaves when the file size reached the
    disk but some of the record's sectors did not, or when a write in place
    into a preallocated file was cut (the rest reads as the zeros it was).
    (etcd's WAL uses the same test.)  The part of the record before its
    first sector boundary was written with its header, so it is not checked.
    """
    n = len(data) if n is None else n
    k = (off // SECTOR + 1) * SECTOR
    while k < n:
        end = min(k + SECTOR, n)
        if data.count(0, k, end) == end - k:
            return True
        k = end
    return False


def _all_zero(data: bytes, off: int, last_segment: bool) -> bool:
    return last_segment and data.count(0, off) == len(data) - off


def _written_end(data: bytes, start: int = 0) -> int:
    """Where the non-zero bytes of a preallocated segment end (at least
    ``start``).  Skips zeros from the end a chunk at a time, copying nothing."""
    end = len(data)
    while end > start:
        lo = max(start, end - 65536)
        if data.count(0, lo, end) != end - lo:
            return lo + len(data[lo:end].rstrip(b"\x00"))
        end = lo
    return start


def _segment_name(seq: int, first: int) -> str:
    return f"{seq:016x}-{first:016x}.wal"


def _parse_name(name: str) -> tuple[int, int] | None:
    if not name.endswith(".wal"):
        return None
    try:
        seq, first = name[:-4].split("-")
        return int(seq, 16), int(first, 16)
    except ValueError:
        return None


@dataclass
class Segment:
    path: Path
    seq: int
    first: int
    # Offsets of each entry record, in index order from ``first``.
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    #: Where the records end: the next one is written here.
    size: int = 0
    version: int = VERSION_APPEND
    #: The file's length when it was opened or preallocated (format 2: the
    #: records and the zeros after them; format 1: the same as ``size``).
    allocated: int = 0

    @property
    def preallocated(self) -> bool:
        return self.version == VERSION_PREALLOC

    @property
    def last(self) -> int:
        return self.first + len(self.offsets) - 1


@dataclass(frozen=True)
class FileCut:
    """One file a repair changes: truncated at ``offset``, or removed (None)."""

    path: Path
    offset: int | None
    dropped_bytes: int


@dataclass(frozen=True)
class RepairPlan:
    """What cutting the log at its first corrupt record drops.

    ``keep_last`` is the last entry kept (the log is a prefix up to it).
    Everything after goes: the bad record and all that follows it, in
    ``files``.  ``intact`` counts the dropped ENTRY records whose checksum
    is still valid: entries this node held whole, and perhaps acknowledged.
    """

    path: Path
    offset: int
    reason: str
    keep_last: int
    files: tuple[FileCut, ...]
    intact: int = 0
    intact_first: int = 0
    intact_last: int = 0
    term_min: int = 0
    term_max: int = 0

    @property
    def dropped_bytes(self) -> int:
        return sum(f.dropped_bytes for f in self.files)

    @property
    def last_seen(self) -> int:
        """The highest index among the dropped records that check out (or the
        first one dropped, if none do)."""
        return max(self.intact_last, self.keep_last + 1)


@dataclass
class OpenReport:
    """What opening the WAL found and did."""

    segments: int = 0
    entries: int = 0
    torn_tail_bytes: int = 0
    repaired: list[str] = field(default_factory=list)
    #: Segments an interrupted reset left behind (deleted on open, unless read-only).
    interrupted_reset: int = 0
    #: With ``repair=True``: the cut at the first corruption (None if none).
    repair: RepairPlan | None = None


def _used_bytes(data: bytes, start: int = 0) -> int:
    """Where a segment's written bytes end: the file's end, or in a
    preallocated one, where its zeros begin."""
    if len(data) >= _HEADER.size and _HEADER.unpack_from(data)[1] == VERSION_PREALLOC:
        return _written_end(data, start)
    return len(data)


def preallocate(fs: FileSystem, path: Path, size: int) -> bool:
    """Allocate ``path`` up to ``size`` bytes of zeros, durably (False where
    the file system refuses: see :meth:`FileSystem.preallocate`)."""
    fd = fs.open_write(path)
    try:
        return fs.preallocate(fd, size)
    finally:
        fs.close(fd)


def cut_segment(fs: FileSystem, seg: Segment, at: int) -> None:
    """Drop everything in ``seg`` from offset ``at`` on, durably.  A
    preallocated segment is cut, then allocated (zeros) to its old length
    again: the cut bytes must read as zeros, never as stale records, and the
    next writes should stay inside the allocation."""
    fs.truncate(seg.path, at)
    if seg.preallocated and seg.allocated > at:
        preallocate(fs, seg.path, seg.allocated)


def fsync_dir(path: Path) -> None:
    REAL.fsync_dir(path)

def apply_repair(plan: RepairPlan, fs: FileSystem = REAL) -> list[str]:
    """Carry out a :class:`RepairPlan`: truncate or remove exactly its files,
    durably.  Returns a line per file for the report.

    The later segments go first (newest first), the segment holding the bad
    record last: a crash part-way leaves that record in place, so running
    the repair again finds the same cut."""
    done = []
    bad, *later = plan.files
    d = bad.path.parent
    for f in reversed(later):
        fs.unlink(f.path)
        done.append(f"{f.path}: removed (after the corruption)")
    if later:
        fs.fsync_dir(d)
    if bad.offset:
        fs.truncate(bad.path, bad.offset)
        done.append(f"{bad.path}: truncated at offset {bad.offset} ({plan.reason})")
    else:
        fs.unlink(bad.path)
        fs.fsync_dir(d)
        done.append(f"{bad.path}: removed ({plan.reason})")
    done.reverse()  # in log order
    return done
