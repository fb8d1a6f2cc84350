"""liferaft-kv: the replicated key-value server (HTTP API in DESIGN.md)."""

from .state import KV, Delete, KVStore, Put, WriteResult, encode_command

__all__ = ["KV", "Delete", "KVStore", "Put", "WriteResult", "encode_command"]
