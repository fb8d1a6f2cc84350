"""The control channel between bench/raft_bench.py and the processes it starts.

Protocol: JSON lines over TCP on 127.0.0.1.  A request is
``{"id": n, "op": name, ...arguments}``; its reply is ``{"id": n, "ok": true,
...results}`` or ``{"id": n, "ok": false, "error": text}``.  Every request is
served by its own task, so many may be in flight on one connection (the
failover client keeps a write going to every node every few milliseconds).

Life of a child process: it listens for control connections on a port the OS
picks, prints one line ``{"ctl": port}`` on stdout, and exits when its stdin
reaches end of file (the parent is done, or died) or after ``max_life``
seconds, whichever comes first.  So no child outlives a run, even one whose
parent was killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from benchkit.stats import summarize

__all__ = ["LINE_LIMIT", "Ctl", "CtlError", "announce", "exit_with_parent", "serve", "summarize"]

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

# A reply line may carry a latency summary, never raw samples: 1 MiB is plenty.
LINE_LIMIT = 1 << 20


class CtlError(Exception):
    """The other side answered ``ok: false`` (the text is its error)."""


async def serve(handlers: dict[str, Handler]) -> asyncio.Server:
    """Serve ``handlers`` (op name -> coroutine) on 127.0.0.1, a free port."""

    async def handle(req: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        rid = req.get("id")
        try:
            fn = handlers[req["op"]]
            rep = {"id": rid, "ok": True, **await fn(req)}
        except Exception as exc:  # every failure goes back to the caller as text
            rep = {"id": rid, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not writer.is_closing():
            writer.write(json.dumps(rep).encode() + b"\n")

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while line := await reader.readline():
                t = asyncio.create_task(handle(json.loads(line), writer))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        except (ConnectionError, ValueError):
            pass
        finally:
            for t in list(tasks):
                t.cancel()
            writer.close()

    return await asyncio.start_server(on_conn, "127.0.0.1", 0, limit=LINE_LIMIT)


def announce(server: asyncio.Server, **extra: Any) -> None:
    """Tell the parent where the control port is (the first stdout line)."""
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"ctl": port, "pid": os.getpid(), **extra}) + "\n")
    sys.stdout.flush()


def exit_with_parent(max_life: float, on_line: Callable[[str], None] | None = None) -> None:
    """Exit this process when stdin closes, or after ``max_life`` seconds.

    ``on_line`` (optional) gets every stdin line first, in the reader thread.
    ``os._exit`` is deliberate: nothing of a benchmark node is worth a clean
    shutdown, and a hung shutdown would be worse.
    """

    def reader() -> None:
        for raw in sys.stdin:
            if on_line is not None:
                on_line(raw)
        os._exit(0)

    def timer() -> None:
        sys.stderr.write(f"pid {os.getpid()}: max life of {max_life:.0f} s reached, exiting\n")
        sys.stderr.flush()
        os._exit(3)

    threading.Thread(target=reader, name="bench-stdin", daemon=True).start()
    t = threading.Timer(max_life, timer)
    t.daemon = True
    t.start()


class Ctl:
    """The client side of one control connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.closed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int, timeout: float = 5.0) -> Ctl:
        async with asyncio.timeout(timeout):
            r, w = await asyncio.open_connection("127.0.0.1", port, limit=LINE_LIMIT)
        return cls(r, w)

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                rep = json.loads(line)
                f = self._waiting.pop(rep.get("id"), None)
                if f is not None and not f.done():
                    f.set_result(rep)
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            self.closed.set()
            for f in self._waiting.values():
                if not f.done():
                    f.set_exception(ConnectionError("control connection closed"))
            self._waiting.clear()

    async def call(self, op: str, timeout: float = 30.0, **kw: Any) -> dict[str, Any]:
        """Send one request; its reply, or :class:`CtlError`, ``TimeoutError``,
        ``ConnectionError``."""
        if self.closed.is_set():
            raise ConnectionError("control connection closed")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self._writer.write(json.dumps({"id": rid, "op": op, **kw}).encode() + b"\n")
        try:
            async with asyncio.timeout(timeout):
                rep = await fut
        finally:
            self._waiting.pop(rid, None)
        if not rep.get("ok"):
            raise CtlError(rep.get("error", "unknown error"))
        return rep

    async def close(self) -> None:
        self._writer.close()
        self._task.cancel()
        # asyncio.wait never raises the reader's own CancelledError, and lets a
        # cancellation of *this* task (Ctrl-C) through.
        await asyncio.wait([self._task], timeout=1.0)
