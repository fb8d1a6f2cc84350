"""A KVMachine fed commands at consecutive log indexes, like the runtime (tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liferaft.kv.machine import Committed, KVMachine
from liferaft.kv.mvcc import TO_END, KeyValue, Put, Range
from liferaft.kv.mvcc.codec import Command, SessionRef, Write, encode_command
from liferaft.runtime.statemachine import ApplyEntry


class Recorder:
    """A listener that keeps what it is told."""

    def __init__(self) -> None:
        self.batches: list[Committed] = []
        self.restores: list[int] = []

    def committed(self, batch: Committed) -> None:
        self.batches.append(batch)

    def restored(self, revision: int) -> None:
        self.restores.append(revision)


class Log:
    """Applies commands to a machine at consecutive indices."""

    def __init__(self, path: Path, index: int | None = None, **kw: Any) -> None:
        self.listener = Recorder()
        self.m = KVMachine(path, listener=self.listener, **kw)
        self.index = self.m.applied_index() if index is None else index

    def entry(self, cmd: Command | bytes | None) -> ApplyEntry:
        self.index += 1
        data = cmd if isinstance(cmd, bytes) else b"" if cmd is None else encode_command(cmd)
        return ApplyEntry(self.index, data, 0.0)

    def batch(self, *cmds: Command | bytes | None) -> list[Any]:
        return self.m.apply_batch([self.entry(c) for c in cmds])

    def apply(self, cmd: Command | bytes | None) -> Any:
        return self.batch(cmd)[0]

    def get(self, key: bytes) -> KeyValue | None:
        with self.m.read() as view:
            return view.get(key)

    def everything(self, revision: int = 0) -> list[KeyValue]:
        return list(self.m.range(Range(b"\x00", TO_END, revision=revision)).kvs)


def sput(key: bytes, value: bytes, sid: int, seq: int, lowest: int, **kw: Any) -> Write:
    """A put in session ``sid``."""
    return Write(Put(key, value, **kw), SessionRef(sid, seq, lowest))
