"""`liferaft inspect` lists what a data directory holds and names corruption."""

from __future__ import annotations

from pathlib import Path

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


def test_inspect_repair_truncates_and_says_what_it_dropped(tmp_path: Path) -> None:
    make(tmp_path)
    seg = sorted((tmp_path / "wal").glob("*.wal"))[0]
    data = bytearray(seg.read_bytes())
    data[_HEADER.size + 3 * (_REC.size + 27) + 15] ^= 0x01
    seg.write_bytes(bytes(data))
    r = CliRunner().invoke(main, ["inspect", str(tmp_path), "--repair"])
    assert "repaired:" in r.output and "truncated at offset" in r.output
    r2 = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert r2.exit_code == 0 and "wal: entries 2..4" in r2.output


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
