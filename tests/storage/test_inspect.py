"""`liferaft inspect` lists what a data directory holds and names corruption."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from liferaft.cli import main
from liferaft.core import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from liferaft.storage import DiskStorage
from liferaft.storage.wal import _HEADER, _REC


def make(tmp: Path) -> Path:
    st = DiskStorage(tmp, segment_size=300)
    st.apply_snapshot(Snapshot(SnapshotMeta(1, 1, ConfState(voters=frozenset({"a", "b"}))), b"s"))
    for i in range(2, 40, 4):
        st.save(None, [Entry(j, 2, b"x" * 10) for j in range(i, i + 4)])
    st.save(HardState(2, "a", 30), [])
    st.close()
    return tmp


def test_inspect_prints_everything_and_exits_zero(tmp_path: Path) -> None:
    make(tmp_path)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "hard state: term=2 vote=a commit=30" in r.output
    assert "wal: entries 2..41" in r.output and "segment " in r.output
    assert "snapshot index=1 term=1: ok" in r.output
    assert "voters=['a', 'b']" in r.output


def test_inspect_reports_a_planted_corruption_with_file_and_offset(tmp_path: Path) -> None:
    make(tmp_path)
    seg = sorted((tmp_path / "wal").glob("*.wal"))[0]
    data = bytearray(seg.read_bytes())
    off = _HEADER.size + (_REC.size + 17 + 10)  # the second record
    data[off + 12] ^= 0xFF
    seg.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert r.exit_code == 1
    assert f"CORRUPT wal: {seg} at offset {off}: checksum mismatch" in r.output


def test_inspect_repair_with_force_truncates_and_says_what_it_dropped(tmp_path: Path) -> None:
    make(tmp_path)
    seg = sorted((tmp_path / "wal").glob("*.wal"))[0]
    data = bytearray(seg.read_bytes())
    data[_HEADER.size + 3 * (_REC.size + 27) + 15] ^= 0x01
    seg.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair", "--force", "--yes"])
    assert r.exit_code == 0, r.output
    assert "repaired:" in r.output and "truncated at offset" in r.output
    assert "commit lowered from 30 to 4" in r.output
    r2 = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert r2.exit_code == 0 and "wal: entries 2..4" in r2.output
    st = DiskStorage(tmp_path)
    assert st.last_index() == 4 and st.hard_state.commit == 4
    st.close()


def test_inspect_of_a_missing_directory_is_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope")])
    assert r.exit_code != 0 and "Traceback" not in r.output


def test_inspect_changes_nothing_without_repair(tmp_path: Path) -> None:
    make(tmp_path)
    seg = sorted((tmp_path / "wal").glob("*.wal"))[-1]
    with open(seg, "ab") as f:
        f.write(b"\x05\x00")  # a torn tail
    (tmp_path / "snap" / "x.tmp").write_bytes(b"leftover")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    r = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert r.exit_code == 0 and "torn tail of 2 bytes" in r.output
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before


def test_bench_wal_runs_from_the_cli(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        main, ["bench", "wal", "--dir", str(tmp_path), "--entries", "2000", "--seconds", "0.05"]
    )
    assert r.exit_code == 0, r.output
    assert "raw write(100B)+fdatasync" in r.output and "reopen of 2,000 entries" in r.output


# -- --repair never loses committed or intact entries by accident (issue 12) ----------

SEG = 4096


def make_long(tmp: Path, commit: int) -> list[Path]:
    """300 entries in about ten segments, hard state commit ``commit``; one
    bit flipped in the first segment (inside entry 5).  Returns the segments."""
    st = DiskStorage(tmp, segment_size=SEG)
    for i in range(1, 301):
        st.save(None, [Entry(i, 2, b"x" * 100)])
    st.save(HardState(3, "n1", commit), [])
    st.close()
    segs = sorted((tmp / "wal").glob("*.wal"))
    data = bytearray(segs[0].read_bytes())
    data[_HEADER.size + 4 * (_REC.size + 117) + 40] ^= 0x01
    segs[0].write_bytes(bytes(data))
    return segs


def used(p: Path) -> int:
    return len(p.read_bytes().rstrip(b"\x00"))


def snapshot_of(tmp: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in tmp.rglob("*") if p.is_file()}


def test_repair_refuses_to_cut_committed_entries_without_force(tmp_path: Path) -> None:
    make_long(tmp_path, commit=300)
    before = snapshot_of(tmp_path)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair"])
    assert r.exit_code == 1, r.output
    assert "refused" in r.output and "commit index 300" in r.output
    assert snapshot_of(tmp_path) == before  # nothing changed


def test_repair_refuses_to_drop_intact_entries_past_a_stale_commit(tmp_path: Path) -> None:
    # The commit index on disk is lazy: 4 here, though the node may well have
    # acknowledged all 300.  The 295 entries after the bad one check out.
    make_long(tmp_path, commit=4)
    before = snapshot_of(tmp_path)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair"])
    assert r.exit_code == 1, r.output
    assert "refused" in r.output and "295 intact entries" in r.output
    assert snapshot_of(tmp_path) == before


def test_repair_prints_exactly_what_it_would_drop_and_what_to_do_instead(
    tmp_path: Path,
) -> None:
    segs = make_long(tmp_path, commit=4)
    # The bytes written, not the preallocated file size (the rest is zeros;
    # every entry here ends in b"x").
    first = segs[0].read_bytes().rstrip(b"\x00")
    cut = _HEADER.size + 4 * (_REC.size + 117)
    dropped = len(first) - cut + sum(used(p) for p in segs[1:])
    r = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert r.exit_code == 1
    out = r.output
    assert "cut the log after entry 4" in out
    assert "entries 5..300" in out and "295 intact entries (6..300, terms 2..2)" in out
    assert f"{segs[0].name}: truncate at offset {cut} ({len(first) - cut} bytes)" in out
    for p in segs[1:]:
        assert f"{p.name}: remove ({used(p)} bytes)" in out
    assert f"{len(segs)} files, {dropped} bytes" in out
    assert "can lose acknowledged writes" in out
    assert "wipe" in out and "--join" in out  # the recommended path


def test_repair_asks_and_refuses_without_yes_when_not_interactive(tmp_path: Path) -> None:
    make(tmp_path)
    seg = sorted((tmp_path / "wal").glob("*.wal"))[-1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0x10  # the last record of the log; nothing intact after it
    seg.write_bytes(bytes(data))
    before = snapshot_of(tmp_path)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair"])
    assert r.exit_code == 1 and "--yes" in r.output, r.output
    assert snapshot_of(tmp_path) == before
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair", "--yes"])
    assert r.exit_code == 0, r.output
    assert "repaired:" in r.output
    st = DiskStorage(tmp_path)
    assert st.last_index() == 40
    st.close()


def test_repair_asks_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import liferaft.cli.inspect as inspect_cmd

    make(tmp_path)
    seg = sorted((tmp_path / "wal").glob("*.wal"))[-1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0x10
    seg.write_bytes(bytes(data))
    before = snapshot_of(tmp_path)
    monkeypatch.setattr(inspect_cmd, "_interactive", lambda: True)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair"], input="n\n")
    assert r.exit_code == 1 and "nothing changed" in r.output, r.output
    assert snapshot_of(tmp_path) == before
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair"], input="y\n")
    assert r.exit_code == 0 and "repaired:" in r.output, r.output


def test_inspect_shows_an_interrupted_reset_and_repair_finishes_it(tmp_path: Path) -> None:
    import random

    from liferaft.storage.fs import FaultFS, PowerCut

    fs = FaultFS(random.Random(1), os_sync=False)
    st = DiskStorage(tmp_path, segment_size=300, fs=fs)
    for i in range(1, 41, 4):
        st.save(None, [Entry(j, 2, b"x" * 10) for j in range(i, i + 4)])
    fs.crash_after(3)  # the mark is durable, a segment or so is gone
    with pytest.raises(PowerCut):
        st.wal.reset(61)
    st.wal.close()
    before = snapshot_of(tmp_path)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert r.exit_code == 0 and "a reset was cut short" in r.output, r.output
    assert snapshot_of(tmp_path) == before
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair", "--yes"])
    assert r.exit_code == 0 and "finished an interrupted reset" in r.output, r.output
    assert not list((tmp_path / "wal").glob("*.wal")) and not (tmp_path / "wal/RESET").exists()


# -- what --repair must still refuse (review of the fix above) -------------------------


def make_short(tmp: Path, commit: int) -> Path:
    """Entries 1..10 in one segment, hard state commit ``commit``; returns the segment."""
    st = DiskStorage(tmp)
    st.save(None, [Entry(i, 2, b"x" * 10) for i in range(1, 11)])
    st.save(HardState(2, "a", commit), [])
    st.close()
    seg = sorted((tmp / "wal").glob("*.wal"))[-1]
    # Without its preallocated zeros (a valid segment too), so that the
    # tests below damage the file's last bytes, as they mean to.
    seg.write_bytes(seg.read_bytes().rstrip(b"\x00"))
    return seg


def test_repair_refuses_when_the_hard_state_cannot_be_read(tmp_path: Path) -> None:
    # Damage at the very end of the log, nothing intact after it: a cut that
    # --repair allows above the commit index.  But the commit index is in the
    # corrupt file, so the cut may well be at or below it.
    seg = make_short(tmp_path, commit=10)
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0x10
    seg.write_bytes(bytes(data))
    hs = tmp_path / "hardstate"
    hs.write_bytes(hs.read_bytes()[:-1] + b"\x00")
    before = snapshot_of(tmp_path)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair", "--yes"])
    assert r.exit_code == 1, r.output
    assert "refused" in r.output and "hard state" in r.output
    assert "Traceback" not in r.output
    assert snapshot_of(tmp_path) == before


def test_repair_never_lowers_the_commit_index_without_force(tmp_path: Path) -> None:
    # A tail the WAL reads as torn, under the commit index (a disk that lied
    # about a sync): cutting it drops a committed entry, which needs --force.
    seg = make_short(tmp_path, commit=10)
    seg.write_bytes(seg.read_bytes()[:-3])
    before = snapshot_of(tmp_path)
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair", "--yes"])
    assert r.exit_code == 1, r.output
    assert "refused" in r.output and "commit index 10" in r.output
    assert snapshot_of(tmp_path) == before
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair", "--force", "--yes"])
    assert r.exit_code == 0 and "commit lowered from 10 to 9" in r.output, r.output
    DiskStorage(tmp_path).close()


def test_a_commit_index_past_the_log_is_reported_and_force_finishes_the_repair(
    tmp_path: Path,
) -> None:
    # A forced repair cut the log, then crashed before it lowered the commit
    # index: the node refuses to start.  inspect must say so (not exit 0),
    # and --repair --force must be able to finish the job.
    seg = make_short(tmp_path, commit=10)
    cut = _HEADER.size + 6 * (_REC.size + 17 + 10)
    seg.write_bytes(seg.read_bytes()[:cut])  # entries 1..6 left, commit 10
    r = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert r.exit_code == 1, r.output
    assert "commit 10 is past the last entry 6" in r.output
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair", "--yes"])
    assert r.exit_code == 1 and "refused" in r.output, r.output
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair", "--force", "--yes"])
    assert r.exit_code == 0 and "commit lowered from 10 to 6" in r.output, r.output
    st = DiskStorage(tmp_path)
    assert st.last_index() == 6
    st.close()
