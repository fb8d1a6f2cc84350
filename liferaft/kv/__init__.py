"""liferaft-kv: the replicated key-value server (HTTP API in docs/kv.md)."""

from .state import (
    KV,
    Delete,
    KVStore,
    Opened,
    OpenSession,
    Put,
    SessionRef,
    WriteResult,
    encode_command,
)

__all__ = [
    "KV",
    "Delete",
    "KVStore",
    "Opened",
    "OpenSession",
    "Put",
    "SessionRef",
    "WriteResult",
    "encode_command",
]
