"""liferaft.storage: durable log, hard state and snapshots.

Work in progress (issue 3).  Today: the segmented, checksummed WAL.
"""

from .errors import CorruptionError, StorageError
from .wal import WAL, OpenReport

__all__ = ["WAL", "CorruptionError", "OpenReport", "StorageError"]
