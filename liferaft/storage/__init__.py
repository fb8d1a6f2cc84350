"""liferaft.storage: durable log, hard state and snapshots.

Work in progress (issue 3).  Today: the segmented, checksummed WAL and the
atomic hard-state file.
"""

from .errors import CorruptionError, StorageError
from .hardstate import HardStateStore
from .wal import WAL, OpenReport

__all__ = ["WAL", "CorruptionError", "HardStateStore", "OpenReport", "StorageError"]
