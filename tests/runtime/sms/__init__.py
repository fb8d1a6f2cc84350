"""State machines for the runtime's tests of the durable contract (issue 13, section 1).

See docs/statemachine.md, "The durable contract".  ``volatile`` holds the
in-memory ones, ``sqlite`` the durable one with crash injection.
"""

from .sqlite import (
    CHECKPOINT_VERSION,
    SCHEMA_VERSION,
    ConcurrentCallError,
    CrashPoint,
    InjectedCrash,
    SQLiteStateMachine,
)
from .volatile import (
    REFUSE,
    Applied,
    BatchRecordingStateMachine,
    LegacyStateMachine,
    RecordingStateMachine,
    RefusedError,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "REFUSE",
    "SCHEMA_VERSION",
    "Applied",
    "BatchRecordingStateMachine",
    "ConcurrentCallError",
    "CrashPoint",
    "InjectedCrash",
    "LegacyStateMachine",
    "RecordingStateMachine",
    "RefusedError",
    "SQLiteStateMachine",
]
