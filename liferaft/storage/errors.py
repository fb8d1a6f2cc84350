"""Typed storage errors.  Corruption always names the file and byte offset."""

from __future__ import annotations

from pathlib import Path


class StorageError(Exception):
    """A storage operation failed (e.g. ENOSPC or EIO); the node must stop writing."""


class CorruptionError(StorageError):
    """Data on disk failed a check.  Never skipped silently."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason
