"""liferaft.storage: durable log, hard state and snapshots.

Work in progress (issue 3).  Today: the segmented, checksummed WAL, the
atomic hard-state file, the streamed snapshot store, and DiskStorage, which
puts them behind the core's LogReader contract.
"""

from .disk import DiskStorage
from .errors import CorruptionError, StorageError
from .hardstate import HardStateStore
from .snapshots import SnapshotStore, SnapshotWriter
from .wal import WAL, OpenReport

__all__ = [
    "WAL",
    "DiskStorage",
    "CorruptionError",
    "HardStateStore",
    "OpenReport",
    "SnapshotStore",
    "SnapshotWriter",
    "StorageError",
]
