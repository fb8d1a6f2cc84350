"""The WAL keeps every synced entry, detects every corruption, and names where."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liferaft.core import Entry, EntryType, LogCompactedError, LogUnavailableError
from liferaft.storage import WAL as _WAL
from liferaft.storage import CorruptionError, StorageError
from liferaft.storage.fs import REAL
from liferaft.storage.wal import _HEADER, _REC

# These tests edit segment files byte by byte as format 1 lays them out (the
# file ends where the records do), so they write format 1: it is still read
# and appended to.  Format 2 (preallocated) has its own in test_wal_prealloc.py.
WAL = partial(_WAL, preallocate=False)


def ents(lo: int, hi: int, term: int = 1, size: int = 10) -> list[Entry]:
    return [Entry(i, term, bytes([i % 251]) * size) for i in range(lo, hi)]


def segs(d: Path) -> list[Path]:
    return sorted(d.glob("*.wal"))


def fill(w: WAL, lo: int, hi: int, batch: int = 5) -> None:
    """Append in batches: a segment rolls over between batches, never within one."""
    for i in range(lo, hi, batch):
        w.append(ents(i, min(i + batch, hi)))


def test_append_reopen_round_trip(tmp_path: Path) -> None:
    with WAL(tmp_path) as w:
        w.append(ents(1, 50))
        w.append([Entry(50, 2, b"conf", EntryType.CONF_CHANGE)])
    with WAL(tmp_path) as w:
        assert (w.first_index, w.last_index) == (1, 50)
        got = w.entries(1, 51)
        assert got == [*ents(1, 50), Entry(50, 2, b"conf", EntryType.CONF_CHANGE)]
        assert w.term(50) == 2 and w.report.torn_tail_bytes == 0


def test_segments_roll_over_and_reads_cross_them(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=500) as w:
        for i in range(1, 101, 5):
            w.append(ents(i, i + 5))
    assert len(segs(tmp_path)) > 3
    with WAL(tmp_path, segment_size=500, tail_cache=0) as w:
        assert w.entries(1, 101) == ents(1, 101)
        assert w.entries(37, 64) == ents(37, 64)


def test_bounds_are_typed_errors(tmp_path: Path) -> None:
    with WAL(tmp_path) as w:
        w.append(ents(5, 10))
        with pytest.raises(LogCompactedError):
            w.term(4)
        with pytest.raises(LogUnavailableError):
            w.entries(8, 11)
        with pytest.raises(StorageError, match="gap"):
            w.append(ents(12, 13))


def test_truncate_suffix_across_segments_is_durable(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=400) as w:
        fill(w, 1, 60)
        n = len(segs(tmp_path))
        w.append(ents(20, 25, term=2))  # overwrites 20.. (a new leader's entries)
        assert w.last_index == 24 and len(segs(tmp_path)) < n
    with WAL(tmp_path, segment_size=400) as w:
        assert w.last_index == 24
        assert w.entries(1, 25) == ents(1, 20) + ents(20, 25, term=2)


def test_compact_drops_whole_segments_only(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=400) as w:
        fill(w, 1, 80)
        before = len(segs(tmp_path))
        dropped = w.compact(40)
        assert dropped >= 1 and len(segs(tmp_path)) == before - dropped
        assert w.first_index <= 40
        assert w.entries(w.first_index, 80) == ents(w.first_index, 80)
    with WAL(tmp_path, segment_size=400) as w:
        assert w.first_index <= 40 and w.last_index == 79


def test_torn_tail_is_truncated_on_open(tmp_path: Path) -> None:
    with WAL(tmp_path) as w:
        w.append(ents(1, 11))
    seg = segs(tmp_path)[-1]
    full = seg.stat().st_size
    with open(seg, "ab") as f:  # half of a record that never finished
        f.write(b"\x20\x00\x00\x00\x01\x02")
    with WAL(tmp_path) as w:
        assert w.last_index == 10 and w.report.torn_tail_bytes == 6
    assert seg.stat().st_size == full


def test_torn_last_record_payload_is_truncated(tmp_path: Path) -> None:
    with WAL(tmp_path) as w:
        w.append(ents(1, 11))
    seg = segs(tmp_path)[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(size - 3)
    with WAL(tmp_path) as w:
        assert w.last_index == 9


def test_corruption_before_the_tail_names_file_and_offset(tmp_path: Path) -> None:
    with WAL(tmp_path) as w:
        w.append(ents(1, 21))
    seg = segs(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    rec = _REC.size + 17 + 10
    off = _HEADER.size + 5 * rec  # the 6th record
    data[off + _REC.size + 20] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as exc:
        WAL(tmp_path)
    assert exc.value.path == seg and exc.value.offset == off
    assert "checksum" in str(exc.value) and str(off) in str(exc.value)


def test_repair_cuts_at_the_corruption_and_reports(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=300) as w:
        fill(w, 1, 40)
    first = segs(tmp_path)[0]
    data = bytearray(first.read_bytes())
    rec = _REC.size + 17 + 10
    data[_HEADER.size + 2 * rec + 9] ^= 0x80
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptionError):
        WAL(tmp_path, segment_size=300)
    with WAL(tmp_path, segment_size=300, repair=True) as w:
        assert w.last_index == 2
        assert any("truncated at offset" in r for r in w.report.repaired)
        assert any("removed" in r for r in w.report.repaired)
        w.append(ents(3, 5))
    with WAL(tmp_path, segment_size=300) as w:
        assert w.entries(1, 5) == ents(1, 5)


def _flip_third_record(d: Path) -> None:
    first = segs(d)[0]
    data = bytearray(first.read_bytes())
    data[_HEADER.size + 2 * (_REC.size + 17 + 10) + 9 + 20] ^= 0x80
    first.write_bytes(bytes(data))


def test_a_read_only_repair_only_plans_the_cut(tmp_path: Path) -> None:
    with WAL(tmp_path, segment_size=300) as w:
        fill(w, 1, 40)
    _flip_third_record(tmp_path)
    before = {p: p.read_bytes() for p in segs(tmp_path)}
    with WAL(tmp_path, segment_size=300, repair=True, read_only=True) as w:
        plan = w.report.repair
        assert w.last_index == 2 and not w.report.repaired
    assert {p: p.read_bytes() for p in segs(tmp_path)} == before
    assert plan is not None and plan.keep_last == 2
    assert plan.intact == 36 and (plan.intact_first, plan.intact_last) == (4, 39)
    assert [f.path for f in plan.files] == sorted(before)
    assert plan.dropped_bytes == sum(len(b) for b in before.values()) - plan.files[0].offset


def test_a_crash_inside_a_repair_leaves_the_same_cut_to_make(tmp_path: Path) -> None:
    import random

    from liferaft.storage.fs import FaultFS, PowerCut
    from liferaft.storage.wal import apply_repair

    crashes = 0
    for step in range(100):  # bounded; a repair of a few segments takes ~10 steps
        d = tmp_path / f"s{step}"
        with WAL(d, segment_size=300) as w:
            fill(w, 1, 40)
        _flip_third_record(d)
        fs = FaultFS(random.Random(step), os_sync=False)
        with WAL(d, segment_size=300, repair=True, read_only=True, fs=fs) as w:
            plan = w.report.repair
        assert plan is not None
        fs.crash_after(step)
        try:
            apply_repair(plan, fs)
        except PowerCut:
            fs.crash()
            with WAL(d, segment_size=300, repair=True, read_only=True, fs=fs) as w:
                again = w.report.repair
            assert again is not None and again.keep_last == 2  # the same cut, still to make
            crashes += 1
            continue
        with WAL(d, segment_size=300) as w:
            assert w.entries(1, 3) == ents(1, 3) and w.last_index == 2
        assert crashes == step > 3  # every step was hit first
        break
    else:
        pytest.fail("the repair never finished within the step bound")


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / f"{1:016x}-{1:016x}.wal").write_bytes(b"NOTAWAL" + b"\x00" * 20)
    with pytest.raises(CorruptionError, match="magic"):
        WAL(tmp_path)


def test_reset_replaces_the_log(tmp_path: Path) -> None:
    with WAL(tmp_path) as w:
        w.append(ents(1, 10))
        w.reset(101)
        assert w.last_index == 100
        w.append(ents(101, 103))
    with WAL(tmp_path) as w:
        assert (w.first_index, w.last_index) == (101, 102)


def test_write_error_is_typed_and_memory_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WAL(tmp_path) as w:
        w.append(ents(1, 5))

        def full(fd: int, data: bytes) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", full)
        with pytest.raises(StorageError, match="No space left"):
            w.append(ents(5, 7))
        assert w.last_index == 4
        monkeypatch.undo()
        w.append(ents(5, 7))  # space is back: writes resume
    with WAL(tmp_path) as w:
        assert w.entries(1, 7) == ents(1, 7)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.integers(1, 12), min_size=1, max_size=12),
    cut=st.integers(0, 10_000),
    seg_size=st.sampled_from([200, 600, 1 << 20]),
)
def test_any_crash_cut_keeps_a_prefix_of_what_was_written(
    tmp_path_factory: pytest.TempPathFactory, batches: list[int], cut: int, seg_size: int
) -> None:
    """Cut the last segment anywhere (unsynced bytes lost, torn record): the
    reopened log is a prefix of what was written, in order, nothing invented,
    and every sealed segment survives whole."""
    d = tmp_path_factory.mktemp("wal")
    written: list[Entry] = []
    with WAL(d, segment_size=seg_size) as w:
        i = 1
        for n in batches:
            w.append(ents(i, i + n))
            written += ents(i, i + n)
            i += n
    last = segs(d)[-1]
    size = last.stat().st_size
    with open(last, "r+b") as f:
        f.truncate(min(size, _HEADER.size + cut % max(1, size - _HEADER.size + 1)))
    with WAL(d, segment_size=seg_size) as w:
        got = w.entries(w.first_index, w.last_index + 1) if w.last_index >= 1 else []
        assert got == written[: len(got)]
        sealed = sum(1 for s in segs(d)[:-1])
        assert w.last_index >= 0 and sealed == len(segs(d)) - 1


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.integers(2, 30), pos=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_bit_flip_is_detected(
    tmp_path_factory: pytest.TempPathFactory, n: int, pos: int, bit: int
) -> None:
    """A flipped bit anywhere in a sealed record is reported, never served."""
    d = tmp_path_factory.mktemp("wal")
    with WAL(d) as w:
        w.append(ents(1, n + 1))
    seg = segs(d)[-1]
    data = bytearray(seg.read_bytes())
    rec = _REC.size + 17 + 10
    # Stay out of the last record, which a reopen may treat as a torn tail.
    p = pos % (len(data) - rec)
    data[p] ^= 1 << bit
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError):
        WAL(d)


def test_every_single_bit_flip_before_the_last_record_is_detected(tmp_path: Path) -> None:
    """Exhaustive: each bit of a 4-entry segment, except the final record
    (which a crash may legitimately tear), flipped one at a time."""
    with WAL(tmp_path) as w:
        w.append(ents(1, 5))
    seg = segs(tmp_path)[-1]
    clean = seg.read_bytes()
    last_rec = _REC.size + 17 + 10
    missed = []
    for p in range(len(clean) - last_rec):
        for bit in range(8):
            data = bytearray(clean)
            data[p] ^= 1 << bit
            seg.write_bytes(bytes(data))
            try:
                WAL(tmp_path).close()
                missed.append((p, bit))
            except CorruptionError:
                pass
    seg.write_bytes(clean)
    assert missed == []


def test_a_torn_tail_of_garbage_with_a_huge_length_is_truncated(tmp_path: Path) -> None:
    """Found by the simulator on real files (tests/storage/test_sim_on_disk.py
    seed 0): half a record of random bytes can claim any length; at the end
    of the log, with nothing valid after it, that is a torn write."""
    with WAL(tmp_path) as w:
        w.append(ents(1, 6))
    seg = segs(tmp_path)[-1]
    with open(seg, "ab") as f:
        f.write(b"\xed\xfe\xf0\xb8" + b"\x01\x02\x03\x04\x05")
    with WAL(tmp_path) as w:
        assert w.last_index == 5 and w.report.torn_tail_bytes == 9


def test_a_huge_length_before_valid_records_is_corruption(tmp_path: Path) -> None:
    with WAL(tmp_path) as w:
        w.append(ents(1, 6))
    seg = segs(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    off = _HEADER.size + (_REC.size + 27)  # second record's length field
    data[off + 3] = 0xF0
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as exc:
        WAL(tmp_path)
    assert exc.value.offset == off


def test_a_partial_write_before_enospc_is_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC can strike after part of a batch reached the file.  Those bytes
    must not stay between the last good record and the next append, or the
    log would be corrupt in the middle once space returns."""
    real_write = os.write
    with WAL(tmp_path) as w:
        w.append(ents(1, 5))

        def half_then_full(fd: int, data: bytes) -> int:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(StorageError, match="No space left"):
            w.append(ents(5, 9))
        monkeypatch.undo()
        w.append(ents(5, 9))
    with WAL(tmp_path) as w:
        assert w.entries(1, 9) == ents(1, 9)


def test_when_the_rollback_fails_too_the_wal_refuses_writes_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    w = WAL(tmp_path)
    w.append(ents(1, 5))

    def half_then_eio(fd: int, data: bytes) -> int:
        real_write(fd, bytes(data[:7]))
        raise OSError(5, "Input/output error")

    def no_truncate(*a: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "write", half_then_eio)
    monkeypatch.setattr(REAL, "truncate", no_truncate)
    with pytest.raises(StorageError, match="Input/output"):
        w.append(ents(5, 6))
    monkeypatch.undo()
    with pytest.raises(StorageError, match="reopen"):
        w.append(ents(5, 6))
    w.close()
    with WAL(tmp_path) as w2:  # the reopen truncates the torn bytes
        assert w2.last_index == 4 and w2.report.torn_tail_bytes == 7
        w2.append(ents(5, 6))
        assert w2.entries(1, 6) == ents(1, 6)


def test_a_tail_of_zeros_is_a_torn_write(tmp_path: Path) -> None:
    """The file size reached the disk but the last write's data did not."""
    with WAL(tmp_path) as w:
        w.append(ents(1, 6))
    seg = segs(tmp_path)[-1]
    with open(seg, "ab") as f:
        f.write(bytes(1000))
    with WAL(tmp_path) as w:
        assert w.last_index == 5 and w.report.torn_tail_bytes == 1000


def test_a_last_record_with_a_zeroed_sector_is_torn_but_a_flip_is_not(tmp_path: Path) -> None:
    with WAL(tmp_path) as w:
        w.append(ents(1, 3))
        w.append([Entry(3, 1, b"z" * 2000)])
    seg = segs(tmp_path)[-1]
    clean = seg.read_bytes()
    size = len(clean)
    # Zero the last full sector inside the final record: a torn write.
    k = (size // 512 - 1) * 512
    seg.write_bytes(clean[:k] + bytes(512) + clean[k + 512 :])
    with WAL(tmp_path) as w:
        assert w.last_index == 2 and w.report.torn_tail_bytes > 0
    # The same record with one flipped bit instead: corruption.
    data = bytearray(clean)
    data[size - 100] ^= 4
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="checksum"):
        WAL(tmp_path)


def test_a_flipped_high_bit_in_the_last_records_length_is_corruption(tmp_path: Path) -> None:
    """The last record is whole and its CRC checks out over the bytes that
    remain: only its length field is wrong.  A torn write never leaves that
    (its length is right; the file is short), so dropping the record as
    "torn" would silently lose an fsynced, perhaps acknowledged, entry."""
    with WAL(tmp_path) as w:
        w.append(ents(1, 6))
    seg = segs(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    off = len(data) - (_REC.size + 27)  # the last record's length field
    data[off + 2] ^= 0x40
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="length") as exc:
        WAL(tmp_path)
    assert exc.value.offset == off
