"""liferaft-kv: the replicated key-value server (HTTP API in docs/kv.md)."""

from .machine import KVMachine
from .mvcc.codec import (
    Command,
    LeaseGrant,
    LeaseRevoke,
    OpenSession,
    SessionRef,
    Write,
    decode_command,
    encode_command,
)

__all__ = [
    "Command",
    "KVMachine",
    "LeaseGrant",
    "LeaseRevoke",
    "OpenSession",
    "SessionRef",
    "Write",
    "decode_command",
    "encode_command",
]
