"""Per-write trace: when each stage of a write happened, in every process.

Off by default.  ``LIFERAFT_TRACE_WRITES=PATH`` in a node's environment
turns it on for that process: every stage of a write is then appended to
``PATH.<pid>`` as a line ``<monotonic ns> <stage> <log index> [<peer>]``,
and ``liferaft bench trace`` (:mod:`liferaft.harness.trace_bench`) merges
the files of the three nodes by log index into a stage table
(docs/bench.md, "Tracing a write").  CLOCK_MONOTONIC is one clock for every
process of a machine, so the lines of different processes compare.

Off, each hook site costs one module attribute load and a test for None
(``t = write_trace.tracer; if t is not None: ...``).

Stages (``STAGES``) and who records them:

    arrive     kv service, a write handed to the node (request parsed)
    propose    runtime, the write given its log index
    wal_start, wal_end   runtime, the Ready's entries saved (write + fsync)
    send       runtime, an AppendEntries carrying the index handed to the transport
    recv       runtime, an AppendEntries carrying it delivered by the transport
    ack_sent   runtime, the AppendResponse for it handed to the transport
    ack_recv   runtime, that AppendResponse delivered at the leader
    commit     runtime, the index in a Ready's committed entries
    apply      runtime, its batch handed to the state machine (an off-loop one,
               like liferaft-kv's, applies it in a worker thread after that)
    respond    kv service, the write's outcome handed back to the front end

``arrive`` and ``respond`` carry no index where they happen; they are
paired with the proposals in order, which is exact at one connection with
nothing else proposing (the trace's use), approximate otherwise.
"""

from __future__ import annotations

import atexit
import collections
import os
import time
from collections.abc import Iterable, Sequence
from typing import TextIO

from liferaft.core.messages import AppendEntries, AppendResponse, Entry, Message

__all__ = ["ENV", "STAGES", "WriteTrace", "tracer"]

ENV = "LIFERAFT_TRACE_WRITES"
STAGES = (
    "arrive", "propose", "wal_start", "wal_end", "send", "recv", "ack_sent", "ack_recv",
    "commit", "apply", "respond",
)  # fmt: skip


class WriteTrace:
    """The recorder of one process (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = f"{path}.{os.getpid()}"
        self._f: TextIO | None = open(self.path, "w", buffering=1 << 16)  # noqa: SIM115
        self._now = time.monotonic_ns
        self._arrivals: collections.deque[int] = collections.deque()
        self._proposed: collections.deque[int] = collections.deque()
        atexit.register(self.close)

    def stage(self, stage: str, index: int, peer: str = "", at: int = 0) -> None:
        f = self._f
        if f is not None:
            f.write(f"{at or self._now()} {stage} {index} {peer}\n")

    def arrived(self) -> None:
        """A write handed to the node; its index comes with its proposal."""
        self._arrivals.append(self._now())

    def proposed(self, index: int) -> None:
        if self._arrivals:
            self.stage("arrive", index, at=self._arrivals.popleft())
            self._proposed.append(index)
        self.stage("propose", index)

    def responded(self) -> None:
        if self._proposed:
            self.stage("respond", self._proposed.popleft())

    def saving(self, entries: Sequence[Entry], done: bool) -> None:
        if entries:
            self.stage("wal_end" if done else "wal_start", entries[-1].index)

    def committed(self, entries: Iterable[Entry], stage: str = "commit") -> None:
        for e in entries:
            self.stage(stage, e.index)

    def sending(self, messages: Iterable[Message]) -> None:
        for m in messages:
            if type(m) is AppendEntries and m.entries:
                self.stage("send", m.entries[-1].index, m.to)
            elif type(m) is AppendResponse and not m.reject:
                self.stage("ack_sent", m.index, m.to)

    def received(self, m: Message) -> None:
        if type(m) is AppendEntries and m.entries:
            self.stage("recv", m.entries[-1].index, m.frm)
        elif type(m) is AppendResponse and not m.reject:
            self.stage("ack_recv", m.index, m.frm)

    def close(self) -> None:
        f, self._f = self._f, None
        if f is not None:
            f.close()


def _from_env() -> WriteTrace | None:
    path = os.environ.get(ENV)
    return WriteTrace(path) if path else None


# The process's recorder, or None (off): read at each hook site.
tracer: WriteTrace | None = _from_env()
