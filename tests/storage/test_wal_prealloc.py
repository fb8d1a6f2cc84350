"""WAL format 2: preallocated segments written in place.

The log in a preallocated segment ends at the first all-zero record header;
a zeroed stretch followed by synced records is still corruption; whatever is
cut off is zeros again, durably; format 1 segments still read; a build that
does not know a format refuses it by name.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from liferaft.cli import main
from liferaft.core import Entry
from liferaft.storage import WAL, CorruptionError, DiskStorage, StorageError, walscan
from liferaft.storage.fs import REAL, FaultFS, FileSystem, PowerCut
from liferaft.storage.wal import _HEADER, _REC, SPARE, VERSION_APPEND, VERSION_PREALLOC

SEG = 4096
REC = _REC.size + 17 + 10  # one record of ents()


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(i, term, bytes([i % 251 or 1]) * 10) for i in range(lo, hi)]


def segs(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def spare_ready(w: WAL) -> None:
    """Wait for the helper thread preparing the spare: on real files it
    runs beside the append that started it (a check of its size right after
    the append raced it and saw the empty file)."""
    assert w._spare is not None
    w._spare.result(timeout=10)


def test_new_segments_are_preallocated_and_written_in_place(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=SEG) as w:
        w.append(ents(1, 11))
        seg = w.segments[-1]
        assert seg.preallocated and seg.allocated == SEG
        # Ten records inside the allocation: the file size never moved.
        assert segs(tmp_path)[-1].stat().st_size == SEG
        spare_ready(w)
        assert (tmp_path / SPARE).stat().st_size == SEG  # the next one, ready
    data = segs(tmp_path)[-1].read_bytes()
    assert _HEADER.unpack_from(data)[1] == VERSION_PREALLOC
    assert data[_HEADER.size + 10 * REC :] == bytes(SEG - _HEADER.size - 10 * REC)
    with WAL(tmp_path, segment_size=SEG) as w:
        assert w.entries(1, 11) == ents(1, 11) and w.report.torn_tail_bytes == 0
        w.append(ents(11, 13))  # continues in place after the last record
    with WAL(tmp_path, segment_size=SEG, tail_cache=0) as w:
        assert w.entries(1, 13) == ents(1, 13) and len(segs(tmp_path)) == 1


def test_rollover_takes_the_spare_and_reads_cross_segments(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=600) as w:
        for i in range(1, 101, 5):
            w.append(ents(i, i + 5))
    assert len(segs(tmp_path)) > 3
    assert all(p.stat().st_size >= 600 for p in segs(tmp_path))
    with WAL(tmp_path, segment_size=600, tail_cache=0) as w:
        assert w.entries(1, 101) == ents(1, 101) and w.report.torn_tail_bytes == 0


def test_format_1_segments_still_read_and_new_ones_are_format_2(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=600, preallocate=False) as w:
        for i in range(1, 41, 5):
            w.append(ents(i, i + 5))
    old = segs(tmp_path)
    assert all(_HEADER.unpack_from(p.read_bytes())[1] == VERSION_APPEND for p in old)
    with WAL(tmp_path, segment_size=600) as w:  # the upgraded build
        assert w.entries(1, 41) == ents(1, 41)
        for i in range(41, 81, 5):
            w.append(ents(i, i + 5))
    versions = [_HEADER.unpack_from(p.read_bytes())[1] for p in segs(tmp_path)]
    assert versions[: len(old)] == [VERSION_APPEND] * len(old)
    assert versions[-1] == VERSION_PREALLOC
    with WAL(tmp_path, segment_size=600, tail_cache=0) as w:
        assert w.entries(1, 81) == ents(1, 81)


def test_a_build_that_reads_only_format_1_refuses_format_2_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a build before format 2 does (its scanner accepts version 1
    only): it refuses the segment, naming the version; it never misreads."""
    with WAL(tmp_path, segment_size=SEG) as w:
        w.append(ents(1, 5))
    monkeypatch.setattr(walscan, "VERSIONS", (VERSION_APPEND,))
    with pytest.raises(CorruptionError, match="unsupported WAL format version 2") as exc:
        WAL(tmp_path, segment_size=SEG)
    assert exc.value.offset == 0 and exc.value.path == segs(tmp_path)[0]


def test_an_unknown_format_is_refused_by_name(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=SEG) as w:
        w.append(ents(1, 5))
    seg = segs(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    data[6] = 3  # a format from the future
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="unsupported WAL format version 3"):
        WAL(tmp_path, segment_size=SEG)


def test_zeros_before_synced_records_are_corruption_not_the_end(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=SEG) as w:
        w.append(ents(1, 11))
    seg = segs(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    off = _HEADER.size + 3 * REC
    data[off : off + REC] = bytes(REC)  # the 4th record zeroed; 5..10 follow
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="zeros where a record should be") as exc:
        WAL(tmp_path, segment_size=SEG)
    assert exc.value.offset == off
    with WAL(tmp_path, segment_size=SEG, repair=True, read_only=True) as w:
        plan = w.report.repair
        assert plan is not None and plan.keep_last == 3 and plan.intact == 6


def test_a_sealed_segment_with_bytes_after_its_zeros_is_corruption(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=600) as w:
        for i in range(1, 41, 5):
            w.append(ents(i, i + 5))
    first = segs(tmp_path)[0]
    data = bytearray(first.read_bytes())
    data[-1] = 7  # in the zeros after the sealed segment's records
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="sealed"):
        WAL(tmp_path, segment_size=600)


def test_a_record_torn_into_the_zeros_is_dropped_and_stays_dropped(tmp_path: Path) -> None:
    """The final record's last sectors never landed (they read as the zeros
    they were written over): a torn write.  It is dropped and zeroed
    durably, appends continue in its place, and a second crash with no
    write at all cannot bring the old bytes back as a record."""
    with WAL(tmp_path, segment_size=8192) as w:
        w.append(ents(1, 3))
        w.append([Entry(3, 1, b"z" * 2000)])
    seg = segs(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    end = _HEADER.size + 2 * REC + _REC.size + 17 + 2000
    k = (end // 512 - 1) * 512  # a whole sector inside the final record
    data[k:end] = bytes(end - k)
    seg.write_bytes(bytes(data))
    fs = FaultFS(random.Random(1))
    with WAL(tmp_path, segment_size=8192, fs=fs) as w:
        assert w.last_index == 2 and w.report.torn_tail_bytes == end - (_HEADER.size + 2 * REC)
        assert seg.stat().st_size == 8192  # still preallocated
    assert seg.read_bytes()[_HEADER.size + 2 * REC :] == bytes(8192 - _HEADER.size - 2 * REC)
    fs.crash()
    with WAL(tmp_path, segment_size=8192, fs=fs) as w:
        assert w.last_index == 2 and w.report.torn_tail_bytes == 0
        w.append(ents(3, 5))
    with WAL(tmp_path, segment_size=8192) as w:
        assert w.entries(1, 5) == ents(1, 5)


def test_a_flipped_bit_in_the_final_record_is_still_corruption(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=SEG) as w:
        w.append(ents(1, 6))
    seg = segs(tmp_path)[0]
    data = bytearray(seg.read_bytes())
    data[_HEADER.size + 5 * REC - 3] ^= 0x04  # inside entry 5's data: no zero sector
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="checksum"):
        WAL(tmp_path, segment_size=SEG)


def test_a_truncated_suffix_reads_as_zeros_after_any_crash(tmp_path: Path) -> None:
    fs = FaultFS(random.Random(4))
    w = WAL(tmp_path, segment_size=SEG, fs=fs)
    w.append(ents(1, 21))
    w.append(ents(8, 10, term=2))  # a new leader's entries replace 8..20
    w.close()
    fs.crash()
    data = segs(tmp_path)[0].read_bytes()
    assert data[_HEADER.size + 9 * REC :] == bytes(len(data) - _HEADER.size - 9 * REC)
    with WAL(tmp_path, segment_size=SEG, fs=fs) as w2:
        assert w2.entries(1, 10) == ents(1, 8) + ents(8, 10, term=2)
        assert w2.last_index == 9


class NoFallocateFS(FileSystem):
    """A file system that refuses fallocate (as some do)."""

    def preallocate(self, fd: int, size: int) -> bool:
        return False


def test_where_fallocate_is_refused_segments_grow_as_written(tmp_path: Path) -> None:
    fs = NoFallocateFS()
    with WAL(tmp_path, segment_size=SEG, fs=fs) as w:
        w.append(ents(1, 11))
        assert w.segments[-1].preallocated and w.segments[-1].allocated == _HEADER.size
    assert segs(tmp_path)[0].stat().st_size == _HEADER.size + 10 * REC
    with WAL(tmp_path, segment_size=SEG, fs=fs) as w:
        assert w.entries(1, 11) == ents(1, 11)
        w.append(ents(11, 12))
    with WAL(tmp_path, segment_size=SEG) as w:
        assert w.last_index == 11


def test_the_spare_is_prepared_in_a_helper_thread_on_real_files(tmp_path: Path) -> None:
    assert REAL.threads and not FaultFS(random.Random(0)).threads
    with WAL(tmp_path, segment_size=SEG) as w:
        w.append(ents(1, 2))
        spare = w._spare
        assert spare is not None
    assert spare.done()  # close() waited for it
    assert spare.result() == SEG


def test_inspect_shows_a_preallocated_segment(tmp_path: Path) -> None:
    st = DiskStorage(tmp_path, segment_size=SEG)
    st.save(None, ents(1, 11))
    st.close()
    r = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert r.exit_code == 0, r.output
    used = _HEADER.size + 10 * REC
    assert f"entries 1..10 ({used} bytes, preallocated {SEG} (format 2))" in r.output
    assert "torn" not in r.output
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "-w", "json"])
    assert '"format": 2' in r.output and f'"file_bytes": {SEG}' in r.output


def test_a_segment_is_allocated_small_and_doubles_as_it_fills(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new segment gets FIRST_ALLOCATION, and a write that would pass the
    allocation doubles it first (up to segment_size): a node that writes
    little keeps a small WAL, and a write inside the allocation still
    leaves the file size alone.  Everything reads back after a reopen, and a
    crash at any point of the growth loses nothing synced."""
    from liferaft.storage import wal as wal_mod

    monkeypatch.setattr(wal_mod, "FIRST_ALLOCATION", 1024)
    size = 8192
    with WAL(tmp_path, segment_size=size) as w:
        w.append(ents(1, 3))
        assert w.segments[-1].allocated == 1024
        spare_ready(w)
        assert (tmp_path / SPARE).stat().st_size == 1024  # the spare is small too
        sizes = []
        for i in range(3, 200, 4):
            w.append(ents(i, i + 4))
            seg = w.segments[-1]
            assert seg.size <= seg.allocated == segs(tmp_path)[-1].stat().st_size
            sizes.append(seg.allocated)
        # It doubled, one step at a time, and never past the segment size
        # (a new segment starts small again).
        assert set(sizes) >= {2048, 4096, 8192} and max(sizes) <= size
    with WAL(tmp_path, segment_size=size, tail_cache=0) as w:
        assert w.entries(1, 203) == ents(1, 203) and w.report.torn_tail_bytes == 0

    # A power cut at each file operation of a growing log keeps every synced entry.
    for cut in range(40):
        d = tmp_path / f"cut{cut}"
        fs = FaultFS(random.Random(cut))
        synced = 0
        w = WAL(d, segment_size=size, fs=fs)
        fs.crash_after(cut)
        try:
            for i in range(1, 120, 6):
                w.append(ents(i, i + 6))
                synced = i + 5
        except (PowerCut, StorageError):
            pass  # the cut: this WAL object is dead from here on
        fs.crash_after(None)
        fs.crash()
        with WAL(d, segment_size=size, fs=fs) as back:
            assert back.last_index >= synced, cut
            assert back.entries(1, synced + 1) == ents(1, synced + 1), cut
