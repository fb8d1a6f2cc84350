"""The write-ahead log: append-only segments of checksummed records.

Theory of operation
-------------------
The log is a directory of segment files named ``{seq:016x}-{first:016x}.wal``
(sequence number, index of the first entry).  A segment starts with a
16-byte header (magic, format version, first index) and holds records::

    | length u32 | crc32 u32 | type u8 | payload (length bytes) |

The CRC (zlib's CRC-32) covers the type byte and the payload, so a flipped
bit anywhere in a record is detected.  An ENTRY record's payload is
``index u64 | term u64 | entry type u8 | data``.

* **Append** writes a batch of records with one ``write`` and, when asked,
  one ``fdatasync`` (group commit).  A segment that grows past
  ``segment_size`` is closed and a new one started.
* **Preallocation** (format 2, the default): a new segment is allocated
  :data:`FIRST_ALLOCATION` bytes of zeros before it is used (the next one
  is prepared ahead, in a helper thread), and records are written in place;
  a write that would pass the allocation first doubles it, up to
  ``segment_size`` (a handful of times per segment).  A write inside the
  allocation leaves the file size alone, so its fdatasync does not commit
  the size to the file system's journal.  Doubling rather than allocating
  the whole segment at once keeps a small log small: a node that writes
  little holds about 2 MiB, not 128 MiB (a segment and its spare); a test
  suite that starts hundreds of nodes filled a disk with 56 GB of zeros.  The
  records end at the first record header that is all zeros; whatever is
  ever cut off (a torn tail, a truncated suffix, a failed write) is made
  zeros again, durably, so stale bytes never read as records.
* **Truncate suffix** (a new leader overwrote our conflicting tail) deletes
  whole later segments, then cuts the file holding the first removed entry at
  that entry's offset, and syncs.
* **Compact** deletes segments whose entries all precede a durable snapshot,
  oldest first, each unlink made durable (directory fsync) before the next:
  POSIX does not order directory operations, and a crash that kept a later
  unlink but not an earlier one would leave a gap in the log.
* **Reset** (a snapshot from the leader replaced the log) first writes a
  ``RESET`` mark durably, then deletes every segment, then the mark.  A
  crash at any point in between leaves the mark, and the next open finishes
  the job before reading anything: a half-deleted log never reaches the
  store above (it would start past the snapshot, or have holes).

Opening a WAL reads every segment once and builds the in-memory index
(entry index -> segment and offset, plus the entry's term).  A record that is
cut short at the very end of the last segment is a torn write: it is
truncated away.  Anything else that fails its checks (a CRC mismatch, a bad
length, a gap in the indices, a bad header) is corruption, reported with the
file and byte offset, and the WAL refuses to open.  ``repair=True`` cuts the
log at the first bad record instead, and reports what it dropped; nothing is
ever skipped silently.  With ``read_only=True`` as well, it only works out
that cut (:class:`RepairPlan`: which files, how many bytes, and how many of
the dropped records still check out) and changes nothing, so that
``liferaft inspect`` can show it and ask before :func:`apply_repair`.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

from liferaft.core import Entry, EntryType, LogCompactedError, LogUnavailableError

from .errors import CorruptionError, StorageError
from .fs import REAL, FileSystem
from .walformat import (
    _ENTRY,
    _HEADER,
    _REC,
    MAGIC,
    MAX_RECORD,
    REC_ENTRY,
    RESET_MARK,
    SECTOR,
    SPARE,
    VERSION,
    VERSION_APPEND,
    VERSION_PREALLOC,
    FileCut,
    OpenReport,
    RepairPlan,
    Segment,
    _parse_name,
    _segment_name,
    apply_repair,
    cut_segment,
    encode_entry,
    fsync_dir,
)
from .walscan import SegmentScanner

#: The format's names, re-exported: callers and tests import them from here.
__all__ = [
    "MAGIC",
    "MAX_RECORD",
    "REC_ENTRY",
    "RESET_MARK",
    "SECTOR",
    "SPARE",
    "VERSION",
    "VERSION_APPEND",
    "VERSION_PREALLOC",
    "WAL",
    "FileCut",
    "OpenReport",
    "RepairPlan",
    "Segment",
    "_ENTRY",
    "_HEADER",
    "_REC",
    "apply_repair",
    "encode_entry",
    "fsync_dir",
]


#: The first allocation of a new segment; it doubles as the segment fills.
FIRST_ALLOCATION = 1 << 20

class WAL:
    """A segmented, checksummed log of entries.  Not thread-safe: one owner
    calls it at a time (in a node, DiskStorage, under its lock).

    ``first_index``..``last_index`` are the entries present; an empty WAL
    has ``last_index == first_index - 1``.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        segment_size: int = 64 << 20,
        tail_cache: int = 8192,
        repair: bool = False,
        read_only: bool = False,
        fs: FileSystem = REAL,
        preallocate: bool = True,
    ) -> None:
        """``preallocate=False`` writes new segments in format 1 (appended,
        readable by builds before format 2); segments of either format are
        read, and appended to in their own format."""
        self.dir = Path(directory)
        self.fs = fs
        if not read_only:
            fs.makedirs(self.dir)
        self.segment_size = segment_size
        self.segments: list[Segment] = []
        # Terms of every entry present, from first_index (compact: 8 bytes each).
        self._terms = array("Q")
        self._first = 1
        # The most recent entries, contiguous up to last_index, so replication
        # reads of the hot tail never touch the disk.  Trimmed in bulk.
        self._tail: list[Entry] = []
        self._tail_cap = tail_cache
        self._fd: int | None = None
        self._broken = False
        # A reset is under way (its RESET mark may be on disk): see reset().
        self._resetting = False
        self.report = OpenReport()
        #: Called with the seconds each fdatasync took (the runtime's
        #: metrics set it); None costs nothing.
        self.on_fsync: Callable[[float], None] | None = None
        # Read-only (for inspection): a torn tail is reported, not truncated,
        # and a repair is only planned (report.repair), not carried out.
        self.read_only = read_only
        self.preallocate = preallocate
        # The next segment, being preallocated (see _start_spare).
        self._spare: Future[int] | None = None
        # The file system refused fallocate once: segments grow as written.
        self._refused = False
        self._open(repair)

    # -- opening -------------------------------------------------------------------------

    def _open(self, repair: bool) -> None:
        found = []
        names = self.fs.listdir(self.dir)
        for name in names:
            parsed = _parse_name(name)
            if parsed is not None:
                found.append((parsed[0], parsed[1], self.dir / name))
        found.sort()
        if RESET_MARK in names:
            # A reset was cut short: every segment here belongs to the log it
            # was replacing.  Finish it before looking at any of them.
            self.report.interrupted_reset = len(found)
            first = self._read_mark()
            if not self.read_only:
                self._finish_reset([p for _, _, p in found])
            self._first = first
            return
        scanner = SegmentScanner(
            self.fs, self._terms, self.report, self.read_only, lambda: self.last_index
        )
        expect: int | None = None
        for i, (seq, first, path) in enumerate(found):
            last_segment = i == len(found) - 1
            seg = Segment(path, seq, first)
            try:
                if expect is not None and first != expect:
                    raise CorruptionError(
                        path, 0, f"segment starts at index {first}, expected {expect}"
                    )
                keep = scanner.scan(seg, last_segment)
            except CorruptionError as exc:
                if not repair:
                    raise
                plan = scanner.plan_repair(seg, exc, [p for _, _, p in found[i + 1 :]])
                self.report.repair = plan
                if not self.read_only:
                    self.report.repaired.extend(apply_repair(plan, self.fs))
                if seg.offsets:
                    self._add_segment(seg)
                break
            if keep:
                self._add_segment(seg)
                expect = seg.last + 1
        if self.segments:
            self._first = self.segments[0].first
        self.report.segments = len(self.segments)
        self.report.entries = len(self._terms)

    def _add_segment(self, seg: Segment) -> None:
        if not self.segments:
            self._first = seg.first
        self.segments.append(seg)

    # -- reading -------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self._first

    @property
    def last_index(self) -> int:
        return self._first + len(self._terms) - 1

    def term(self, index: int) -> int:
        if index < self._first:
            raise LogCompactedError(f"index {index} is before the WAL's first {self._first}")
        if index > self.last_index:
            raise LogUnavailableError(f"index {index} is after the WAL's last {self.last_index}")
        return self._terms[index - self._first]

    def _locate(self, index: int) -> tuple[Segment, int]:
        lo, hi = 0, len(self.segments) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.segments[mid].first <= index:
                lo = mid
            else:
                hi = mid - 1
        seg = self.segments[lo]
        return seg, seg.offsets[index - seg.first]

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries in [lo, hi); the recent tail comes from memory."""
        if lo < self._first:
            raise LogCompactedError(f"index {lo} is before the WAL's first {self._first}")
        if hi > self.last_index + 1:
            raise LogUnavailableError(f"[{lo}, {hi}) is past the WAL's last {self.last_index}")
        tail = self._tail
        if tail and lo >= tail[0].index:
            start = tail[0].index
            return tail[lo - start : hi - start]
        return list(self._read(lo, hi))

    def _read(self, lo: int, hi: int) -> Iterator[Entry]:
        i = lo
        while i < hi:
            seg, off = self._locate(i)
            end = min(hi, seg.last + 1)
            with open(seg.path, "rb") as f:
                f.seek(off)
                for idx in range(i, end):
                    head = f.read(_REC.size)
                    length, crc, rtype = _REC.unpack(head)
                    payload = f.read(length)
                    if zlib.crc32(payload, zlib.crc32(bytes((rtype,)))) != crc:
                        raise CorruptionError(seg.path, seg.offsets[idx - seg.first],
                                              "checksum mismatch on read")
                    index, term, etype = _ENTRY.unpack_from(payload, 0)
                    yield Entry(index, term, payload[_ENTRY.size :], EntryType(etype))
            i = end

    # -- writing -------------------------------------------------------------------------

    def _writer(self) -> int:
        if self._fd is None:
            seg = self.segments[-1] if self.segments else None
            if seg is None or seg.size >= self.segment_size:
                seg = self._new_segment(self.last_index + 1)
            if seg.preallocated:
                self._fd = self.fs.open_write(seg.path)
            else:
                self._fd = self.fs.open_append(seg.path)
            if self.preallocate and self._spare is None:
                self._start_spare()
        return self._fd

    def _new_segment(self, first: int) -> Segment:
        # Seal the old segment durably first: a later fdatasync only covers
        # the new file, and a crash must never leave a hole in the middle.
        if self._fd is not None:
            self._fdatasync(self._fd)
        self._close_writer()
        seq = self.segments[-1].seq + 1 if self.segments else 1
        path = self.dir / _segment_name(seq, first)
        if self.preallocate:
            allocated = self._take_spare()
            spare = self.dir / SPARE
            fd = self.fs.open_write(spare)
            try:
                # The header is durable before the name is: a segment that
                # a crash leaves behind always says what it is.
                self.fs.pwrite_all(fd, _HEADER.pack(MAGIC, VERSION_PREALLOC, first), 0)
                self.fs.fdatasync(fd)
            finally:
                self.fs.close(fd)
            self.fs.replace(spare, path)
            seg = Segment(path, seq, first, size=_HEADER.size, version=VERSION_PREALLOC,
                          allocated=max(allocated, _HEADER.size))  # fmt: skip
        else:
            self.fs.create(path, _HEADER.pack(MAGIC, VERSION_APPEND, first))
            seg = Segment(path, seq, first, size=_HEADER.size, allocated=_HEADER.size)
        self.fs.fsync_dir(self.dir)
        if not self.segments:
            self._first = first
        self.segments.append(seg)
        return seg

    # The spare: the next segment's file, preallocated ahead of need so that
    # a rollover only writes its header and renames it.  On the real file
    # system a helper thread prepares it (fallocate of 64 MiB can take
    # milliseconds); it touches nothing but the spare's file.  FaultFS runs
    # it inline, in the one order a simulation can replay.

    def _prepare_spare(self) -> int:
        """Create the spare, allocated to :data:`FIRST_ALLOCATION` (at most
        ``segment_size``); returns the bytes allocated (0 where the file
        system refused)."""
        size = min(self.segment_size, FIRST_ALLOCATION)
        fd = self.fs.open_new(self.dir / SPARE)
        try:
            return size if self.fs.preallocate(fd, size) else 0
        finally:
            self.fs.close(fd)

    def _grow(self, fd: int, seg: Segment, end: int) -> None:
        """Double ``seg``'s allocation (up to ``segment_size``, or ``end``
        for a batch larger than that) before a write that would pass it, so
        the write's fdatasync still commits no file size."""
        if end <= seg.allocated or self._refused:
            return
        want = max(end, min(self.segment_size, 2 * max(seg.allocated, FIRST_ALLOCATION // 2)))
        if self.fs.preallocate(fd, want):
            seg.allocated = want
        else:
            self._refused = True

    def _start_spare(self) -> None:
        fut: Future[int] = Future()
        if not self.fs.threads:
            fut.set_result(self._prepare_spare())  # a failure leaves no spare
            self._spare = fut
            return
        self._spare = fut

        def run() -> None:
            try:
                fut.set_result(self._prepare_spare())
            except BaseException as exc:  # handed to _take_spare
                fut.set_exception(exc)

        threading.Thread(target=run, name="wal-spare", daemon=True).start()

    def _take_spare(self) -> int:
        """Wait for the spare (prepare it now if none is under way); returns
        the bytes allocated."""
        fut, self._spare = self._spare, None
        if fut is not None:
            try:
                return fut.result()
            except OSError:
                pass  # try once more here, where a failure reaches the caller
        return self._prepare_spare()

    def _close_writer(self) -> None:
        if self._fd is not None:
            self.fs.close(self._fd)
            self._fd = None

    def append(self, ents: list[Entry] | tuple[Entry, ...], sync: bool = True) -> None:
        """Append entries (truncating a conflicting suffix first), then sync once."""
        if not ents:
            return
        if self._resetting:
            raise StorageError("a reset of the WAL did not finish; retry it or reopen")
        first = ents[0].index
        if not self.segments and not self._terms:
            self._first = first
        last = self._first + len(self._terms) - 1
        if first <= last:
            self.truncate_suffix(first)
            last = self.last_index
        if first != last + 1:
            raise StorageError(f"append at {first} leaves a gap after the last index {last}")
        try:
            if self.segments and self.segments[-1].size >= self.segment_size:
                self._new_segment(first)
            fd = self._writer()
        except OSError as exc:
            # Nothing of the batch was written; a half-made segment (no name,
            # or a name with only its header) is made again by the next try.
            self._close_writer()
            raise StorageError(f"WAL segment creation failed: {exc.strerror or exc}") from exc
        seg = self.segments[-1]
        buf = bytearray()
        off = seg.size
        offsets, terms = seg.offsets, self._terms
        for e in ents:
            rec = encode_entry(e)
            offsets.append(off)
            off += len(rec)
            buf += rec
        if self._broken:
            raise StorageError("the WAL could not undo a failed write; reopen it to recover")
        try:
            if seg.preallocated:
                if self.preallocate:
                    self._grow(fd, seg, off)
                self.fs.pwrite_all(fd, buf, seg.size)
            else:
                self.fs.write_all(fd, buf)
            if sync:
                self._fdatasync(fd)
        except OSError as exc:
            # ENOSPC or EIO.  Memory stays as it was; bytes of this batch that
            # did reach the file are cut off again, so that once space returns
            # the next batch does not land behind half a record.
            del offsets[len(offsets) - len(ents) :]
            self._close_writer()
            try:
                cut_segment(self.fs, seg, seg.size)
            except OSError:
                self._broken = True  # a reopen truncates the torn tail instead
            raise StorageError(f"WAL write failed: {exc.strerror or exc}") from exc
        seg.size = off
        terms.extend([e.term for e in ents])
        if self._tail_cap:
            tail = self._tail
            tail.extend(ents)
            if len(tail) > 2 * self._tail_cap:
                del tail[: len(tail) - self._tail_cap]

    def _fdatasync(self, fd: int) -> None:
        observe = self.on_fsync
        if observe is None:
            self.fs.fdatasync(fd)
            return
        t0 = time.perf_counter()
        self.fs.fdatasync(fd)
        observe(time.perf_counter() - t0)

    def sync(self) -> None:
        if self._fd is not None:
            self._fdatasync(self._fd)

    # Pipelined group commit: the caller writes batch k+1 (append with
    # sync=False) while batch k's fdatasync runs in another thread.
    # ``begin_sync`` runs on the writer's thread; ``finish_sync`` may run on
    # any thread, concurrently with further appends, and returns the index up
    # to which everything is now durable.  Segments are sealed with their own
    # fdatasync when they roll over, so one sync of the current segment covers
    # all earlier ones.  The caller must not truncate the suffix it is waiting
    # on (a leader never truncates its own log).

    def begin_sync(self) -> tuple[int, int]:
        """A token ``(fd, last_index)`` for :meth:`finish_sync`."""
        if self._broken:
            raise StorageError("the WAL could not undo a failed write; reopen it to recover")
        if self._fd is None:
            return -1, self.last_index
        return self.fs.dup(self._fd), self.last_index

    def finish_sync(self, token: tuple[int, int]) -> int:
        """fdatasync for a :meth:`begin_sync` token; thread-safe.  Returns the
        index through which the log is durable."""
        fd, index = token
        if fd < 0:
            return index
        try:
            self._fdatasync(fd)
        except OSError as exc:
            raise StorageError(f"WAL sync failed: {exc.strerror or exc}") from exc
        finally:
            self.fs.close(fd)
        return index

    def truncate_suffix(self, index: int) -> None:
        """Remove every entry at ``index`` and after, durably."""
        if index > self.last_index:
            return
        if index < self._first:
            raise StorageError(f"cannot truncate at {index}: before the first index {self._first}")
        self._close_writer()
        while self.segments and self.segments[-1].first >= index and len(self.segments) > 1:
            # Newest first, each durable before the next (as in compact):
            # whatever a crash keeps is then a prefix of the log.
            self.fs.unlink(self.segments.pop().path)
            self.fs.fsync_dir(self.dir)
        seg = self.segments[-1]
        keep = index - seg.first
        cut = seg.offsets[keep] if keep < len(seg.offsets) else seg.size
        cut_segment(self.fs, seg, cut)
        self.fs.fsync_dir(self.dir)
        del seg.offsets[keep:]
        seg.size = cut
        del self._terms[index - self._first :]
        tail = self._tail
        if tail:
            del tail[max(0, index - tail[0].index) :]

    def compact(self, index: int) -> int:
        """Drop segments whose entries all precede ``index``; returns how many."""
        dropped = 0
        while len(self.segments) > 1 and self.segments[1].first <= index:
            seg = self.segments.pop(0)
            # One at a time, each durable before the next: a crash that
            # undid an earlier unlink but kept a later one would leave a hole.
            self.fs.unlink(seg.path)
            self.fs.fsync_dir(self.dir)
            n = len(seg.offsets)
            del self._terms[:n]
            self._first += n
            dropped += 1
        if dropped:
            tail = self._tail
            if tail and tail[0].index < self._first:
                del tail[: self._first - tail[0].index]
        return dropped

    def reset(self, first: int) -> None:
        """Drop everything (a snapshot replaced the log); the next entry is ``first``.

        Crash-safe: the ``RESET`` mark is durable before the first segment
        goes, and is removed (durably) only after the last one has, so a
        reopen either sees the whole old log, or the mark and finishes the
        reset (see the module doc).  Nothing new is written while the mark
        exists, so a reopen never deletes entries appended after a reset: if
        a delete fails, the WAL refuses appends until a retried reset (or a
        reopen) has finished the job.
        """
        self._close_writer()
        self.segments.clear()
        self._terms = array("Q")
        self._tail.clear()
        self._first = first
        # Every segment on disk, not only those in memory: a reset that failed
        # part-way forgot the ones it had not deleted yet.
        names = self.fs.listdir(self.dir)
        paths = [self.dir / n for n in names if _parse_name(n) is not None]
        if not paths and RESET_MARK not in names:
            self._resetting = False
            return
        self._resetting = True
        try:
            self.fs.create(self.dir / RESET_MARK, b"%d\n" % first)
            self.fs.fsync_dir(self.dir)
            self._finish_reset(paths)
        except OSError as exc:
            raise StorageError(f"WAL reset failed: {exc.strerror or exc}") from exc
        self._resetting = False

    def _read_mark(self) -> int:
        raw = self.fs.read(self.dir / RESET_MARK)
        try:
            return int(raw.decode("ascii").strip())
        except ValueError:
            # Torn or empty: the mark is created whole and fsynced before it
            # counts, so this one was never durable; its first index is
            # learned again from the snapshot (DiskStorage resets once more).
            return 1

    def _finish_reset(self, paths: list[Path]) -> None:
        # Newest first, so that even a reader that stops here sees a prefix
        # of the old log rather than one with its start cut away.
        for path in sorted(paths, reverse=True):
            self.fs.unlink(path)
        self.fs.fsync_dir(self.dir)
        self.fs.unlink(self.dir / RESET_MARK)
        self.fs.fsync_dir(self.dir)

    def close(self) -> None:
        self._close_writer()
        # No helper thread outlives the WAL: wait for the spare (kept on
        # disk for the next open to reuse or remake).
        fut, self._spare = self._spare, None
        if fut is not None:
            fut.exception()

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
