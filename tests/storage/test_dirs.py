"""Directories that storage creates are durable: a new directory's name is
only on disk once its parent directory is fsynced, like a new file's."""

from __future__ import annotations

from pathlib import Path

from liferaft.storage import DiskStorage
from liferaft.storage.fs import FileSystem


class RecordingFS(FileSystem):
    """The real file system, remembering which directories were fsynced."""

    def __init__(self) -> None:
        self.fsynced_dirs: list[Path] = []

    def fsync_dir(self, d: Path) -> None:
        super().fsync_dir(d)
        self.fsynced_dirs.append(d)


def test_a_fresh_data_directory_is_made_durable_in_its_parent(tmp_path: Path) -> None:
    fs = RecordingFS()
    data = tmp_path / "cluster" / "n1"
    DiskStorage(data, fs=fs).close()
    assert data.is_dir()
    # cluster/ lives in tmp_path, n1/ in cluster/, wal/ and snap/ in n1/.
    for parent in (tmp_path, tmp_path / "cluster", data):
        assert parent in fs.fsynced_dirs, f"{parent} was never fsynced"


def test_reopening_an_existing_data_directory_creates_nothing(tmp_path: Path) -> None:
    DiskStorage(tmp_path / "n1").close()
    fs = RecordingFS()
    DiskStorage(tmp_path / "n1", fs=fs).close()
    assert tmp_path not in fs.fsynced_dirs
