"""``GET /v1/watch``: a watcher streamed as newline-delimited JSON.

Why NDJSON and not server-sent events: a browser's EventSource cannot send
an ``Authorization`` header, and the token must never go into a URL; a
streamed ``fetch`` of NDJSON can, and so can every HTTP client.  Each line
is one JSON object (docs/kv.md, "Watch"):

- first ``{"created": true, "start_revision": S, "revision": R}``;
- then one line per revision: ``{"revision": R, "events": [...]}``, every
  event of that revision in the watched range on the one line, so a client
  that saw a line has seen that revision whole and resumes from ``R + 1``
  after a dropped connection, missing nothing and repeating nothing;
- ``{"progress": R}`` when the watcher was idle: every event up to ``R`` was
  sent (resume from ``R + 1``);
- last, when the server ends the stream: ``{"error": code, "message": ...}``
  with ``resume_revision`` (cut off: too slow, the state was replaced, or
  the node is stopping) or ``compact_revision`` (history compacted).
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from .errors import KVError
from .requests import item
from .watch import Watcher
from .watch_types import EventKind, Progress, WatchEvent

#: Items taken from the watcher per write (one chunk on the wire).
_BATCH = 256

_encode = msgspec.json.Encoder().encode


def event_json(ev: WatchEvent) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "put" if ev.kind is EventKind.PUT else "delete",
        "kv": item(ev.kv),
    }
    if ev.prev_kv is not None:
        out["prev_kv"] = item(ev.prev_kv)
    return out


def _lines(pending: list[WatchEvent]) -> bytes:
    """One line per revision of ``pending`` (in revision order)."""
    out = bytearray()
    i = 0
    while i < len(pending):
        rev = pending[i].revision
        j = i
        while j < len(pending) and pending[j].revision == rev:
            j += 1
        out += _encode({"revision": rev, "events": [event_json(e) for e in pending[i:j]]})
        out += b"\n"
        i = j
    return bytes(out)


async def stream(
    request: web.Request, watcher: Watcher, revision: int, live: set[Watcher]
) -> web.StreamResponse:
    """Stream ``watcher`` to the client until either side ends it.  It is in
    ``live`` meanwhile, for :func:`stop_all`."""
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    # No compression or buffering in between: a line is due when it is ready.
    await resp.prepare(request)
    head = {"created": True, "start_revision": watcher.start_revision, "revision": revision}
    live.add(watcher)
    try:
        await resp.write(_encode(head) + b"\n")
        await _pump(resp, watcher)
    except (ConnectionError, RuntimeError):
        pass  # the client went away (RuntimeError: aiohttp's closed transport)
    finally:
        live.discard(watcher)
        watcher.close()
    return resp


def stop_all(live: set[Watcher]) -> None:
    """The HTTP server is shutting down: end every stream with a
    ``watch_cut_off`` line (reason ``stopping``, and where to resume).
    aiohttp waits for open handlers before it stops, and an idle watch
    would otherwise hold the shutdown until its timeout."""
    for w in list(live):
        w.cut_off("stopping")


async def _pump(resp: web.StreamResponse, watcher: Watcher) -> None:
    pending: list[WatchEvent] = []
    while True:
        try:
            items = watcher.ready(_BATCH)
        except KVError as exc:
            await resp.write(_lines(pending) + _error_line(exc))
            return
        out = bytearray()
        for it in items:
            if isinstance(it, Progress):
                out += _lines(pending)
                pending = []
                out += _encode({"progress": it.revision}) + b"\n"
            else:
                pending.append(it)
        if len(items) == _BATCH and pending:
            # More may follow at once, maybe of the last revision: keep it.
            last = pending[-1].revision
            done = [e for e in pending if e.revision < last]
            pending = pending[len(done) :]
            out += _lines(done)
        else:
            # Nothing more is ready: the watcher's queue and its replay hold
            # whole revisions, so everything taken is complete.
            out += _lines(pending)
            pending = []
        if out:
            await resp.write(bytes(out))
        if not items and not await watcher.wait_ready():
            return


def _error_line(exc: KVError) -> bytes:
    return _encode({"error": exc.code, "message": str(exc), **exc.extra}) + b"\n"
