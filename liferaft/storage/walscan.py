"""Opening a WAL: index each segment once, tell a torn tail from corruption.

A record cut short at the very end of the last segment is a torn write and
is truncated away (only reported when read-only); anything else that fails
its checks is :class:`~liferaft.storage.errors.CorruptionError` with the file
and byte offset, or, when a repair was asked for, a :class:`RepairPlan` that
cuts the log at the first bad record.  See :mod:`liferaft.storage.wal`.
"""

from __future__ import annotations

import zlib
from array import array
from collections.abc import Callable
from pathlib import Path

from .errors import CorruptionError
from .fs import FileSystem
from .walformat import (
    _ENTRY,
    _HEADER,
    _REC,
    MAGIC,
    MAX_RECORD,
    REC_ENTRY,
    VERSION_PREALLOC,
    VERSIONS,
    FileCut,
    OpenReport,
    RepairPlan,
    Segment,
    _all_zero,
    _salvage,
    _used_bytes,
    _valid_record_after,
    _whole_under_wrong_length,
    _written_end,
    _zero_sector_tail,
    cut_segment,
)


class SegmentScanner:
    """Indexes segments into ``terms`` (the WAL's array of entry terms)."""

    def __init__(
        self,
        fs: FileSystem,
        terms: array[int],
        report: OpenReport,
        read_only: bool,
        last_index: Callable[[], int],
    ) -> None:
        self.fs = fs
        self._terms = terms
        self.report = report
        self.read_only = read_only
        self._last_index = last_index

    def scan(self, seg: Segment, last_segment: bool) -> bool:
        """Index one segment; False if it was an empty torn last segment (removed)."""
        data = self.fs.read(seg.path)
        if len(data) < _HEADER.size:
            if last_segment:
                # A segment torn while being created: nothing in it was synced.
                self.report.torn_tail_bytes += len(data)
                if not self.read_only:
                    self.fs.unlink(seg.path)
                return False
            raise CorruptionError(seg.path, 0, "segment shorter than its header")
        magic, version, first = _HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise CorruptionError(seg.path, 0, "bad magic: not a liferaft WAL segment")
        if version not in VERSIONS:
            raise CorruptionError(
                seg.path, 0, f"unsupported WAL format version {version} (this build reads "
                f"{' and '.join(map(str, VERSIONS))}; written by a newer liferaft?)"
            )  # fmt: skip
        if first != seg.first:
            raise CorruptionError(seg.path, 0, f"header says first index {first}")
        seg.version = version
        seg.allocated = len(data)
        prealloc = version == VERSION_PREALLOC
        off = _HEADER.size
        n = len(data)
        expect = seg.first
        terms = self._terms
        last_term = terms[-1] if terms else 0
        while off < n:
            if prealloc and data.count(0, off, off + _REC.size) == min(n, off + _REC.size) - off:
                # A record header of zeros: the records end here, and what
                # follows should be the preallocated zeros never written.
                # (A real header is never all zeros: its length is >= 17.)
                written = _written_end(data, off)
                if written == off:
                    break
                # Zeros, then written bytes.  Records synced behind a zeroed
                # stretch are corruption, never a silent end of the log.
                if not last_segment or _valid_record_after(data, off, expect):
                    raise CorruptionError(seg.path, off, "zeros where a record should be")
                self._torn(seg, off, written, last_segment, "zeros, then bytes of no record")
                break
            if n - off < _REC.size or (
                data.count(0, off, off + _REC.size) == _REC.size
                and _all_zero(data, off, last_segment)
            ):
                # A cut-short header, or a tail of zeros: the file grew but
                # nothing of the last write landed.  (A real record never has
                # an all-zero header: its length is at least 17, so the
                # whole-tail check runs at most once per open.)
                if n - off >= _REC.size:
                    self._torn(seg, off, n, last_segment, "a zero-filled tail")
                    break
                self._torn(seg, off, n, last_segment, "a record header cut short")
                break
            length, crc, rtype = _REC.unpack_from(data, off)
            body = off + _REC.size
            if length > MAX_RECORD or body + length > n:
                # Past the end of the file: a torn final write, unless a
                # valid record follows, which means this length field is
                # corrupt and synced data lies beyond it.
                end = _written_end(data, off) if prealloc else n
                if (
                    not last_segment
                    or _whole_under_wrong_length(data, off, end)
                    or _valid_record_after(data, body, expect)
                ):
                    raise CorruptionError(seg.path, off, f"record length {length} is corrupt")
                self._torn(seg, off, end, last_segment, "a record cut short")
                break
            payload = data[body : body + length]
            if zlib.crc32(payload, zlib.crc32(bytes((rtype,)))) != crc:
                # A bad CRC on the very last record of the log is a torn write
                # only if it looks like one: the file grew but its last
                # sectors were never written, so they read back as zeros.
                # Any other mismatch is a flipped bit: corruption.
                # In a preallocated segment "the last" means nothing but
                # zeros after it: a write in place cut short leaves the
                # zeros it was written over.
                end = max(_written_end(data, off), body + length) if prealloc else n
                rec_end = body + length
                if last_segment and rec_end == end and _zero_sector_tail(data, off, rec_end):
                    self._torn(seg, off, end, last_segment, "a checksum mismatch")
                    break
                raise CorruptionError(seg.path, off, "checksum mismatch")
            if rtype != REC_ENTRY or length < _ENTRY.size:
                raise CorruptionError(seg.path, off, f"unknown record type {rtype}")
            index, term, _etype = _ENTRY.unpack_from(payload, 0)
            if index != expect:
                raise CorruptionError(seg.path, off, f"entry {index} where {expect} was expected")
            if term < last_term:
                raise CorruptionError(seg.path, off, f"term {term} after term {last_term}")
            seg.offsets.append(off)
            terms.append(term)
            last_term = term
            expect += 1
            off = body + length
        seg.size = off
        return True

    def _torn(self, seg: Segment, off: int, end: int, last_segment: bool, what: str) -> None:
        """Drop the torn bytes ``off``..``end`` (a preallocated segment's
        zeros after them stay zeros), durably, so a later crash cannot
        bring them back as data."""
        if not last_segment:
            raise CorruptionError(seg.path, off, what + " in a sealed segment")
        self.report.torn_tail_bytes += end - off
        if self.read_only:
            return
        cut_segment(self.fs, seg, off)

    def plan_repair(self, seg: Segment, exc: CorruptionError, later: list[Path]) -> RepairPlan:
        """Work out the cut at ``exc``: keep what precedes it (in memory now),
        drop the rest.  Changes no file."""
        # Entries of this segment scanned before the bad record stay.
        good = len(seg.offsets)
        del self._terms[len(self._terms) - good :]
        seg.offsets = array("Q")
        cut = exc.offset if exc.offset >= _HEADER.size else 0
        data = self.fs.read(seg.path)
        if cut:
            self._scan_prefix(seg, cut)
        files = [FileCut(seg.path, cut or None, _used_bytes(data, cut) - cut)]
        dropped = _salvage(data, max(cut, _HEADER.size))
        for path in later:
            other = self.fs.read(path)
            files.append(FileCut(path, None, _used_bytes(other)))
            dropped += _salvage(other, _HEADER.size)
        terms = [t for _, t in dropped]
        return RepairPlan(
            path=seg.path,
            offset=exc.offset,
            reason=exc.reason,
            keep_last=self._last_index(),
            files=tuple(files),
            intact=len(dropped),
            intact_first=min((i for i, _ in dropped), default=0),
            intact_last=max((i for i, _ in dropped), default=0),
            term_min=min(terms, default=0),
            term_max=max(terms, default=0),
        )

    def _scan_prefix(self, seg: Segment, cut: int) -> None:
        data = self.fs.read(seg.path)[:cut]
        tmp = Segment(seg.path, seg.seq, seg.first)
        off = _HEADER.size
        while off < len(data):
            length, _, _ = _REC.unpack_from(data, off)
            index, term, _ = _ENTRY.unpack_from(data, off + _REC.size)
            tmp.offsets.append(off)
            self._terms.append(term)
            off += _REC.size + length
        seg.offsets = tmp.offsets
        seg.size = off
