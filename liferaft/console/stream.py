"""``GET /v1/console/stream``: the cluster's view as newline-delimited JSON.

NDJSON over a streamed response, as ``/v1/watch``: a browser's fetch can
send the Authorization header (EventSource cannot, and a token never goes
into a URL).  The first line comes at once, with ``history`` (the rates of
the last 5 minutes) and the whole ``timeline``; then one line a second,
never faster, with only the timeline entries newer than the previous
line's (docs/console.md, "The stream").

What a client cannot do to the node: hold more than :data:`MAX_STREAMS`
streams (then 503), or grow its memory by not reading.  Each line is built
when the previous one is written, from the latest view (a slow reader skips
views, it never queues them), and a write that stays blocked for
:data:`WRITE_TIMEOUT` seconds drops the client.  A client that goes away
ends its handler, and the last stream to end stops the gathering.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec
from aiohttp import web

from liferaft.kv.http_util import error_response

from .gather import Gatherer
from .rates import Rates
from .timeline import Timeline

#: Console streams one node serves at once.
MAX_STREAMS = 32
#: Seconds a line may wait to be taken by the client before it is dropped.
WRITE_TIMEOUT = 10.0
#: Shortest time between two lines of one stream.
MIN_GAP = 1.0

_encode = msgspec.json.Encoder().encode


class Streams:
    """The open console streams of one node."""

    def __init__(
        self,
        gatherer: Gatherer,
        timeline: Timeline,
        rates: Rates,
        max_streams: int = MAX_STREAMS,
        write_timeout: float = WRITE_TIMEOUT,
    ) -> None:
        self.gatherer = gatherer
        self.timeline = timeline
        self.rates = rates
        self.max_streams = max_streams
        self.write_timeout = write_timeout
        self.open = 0
        self.closing = False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.closing:
            return error_response(503, "stopping", "this node is stopping; use another member")
        if self.open >= self.max_streams:
            return error_response(
                503,
                "too_many_streams",
                f"this node serves at most {self.max_streams} console streams at once; "
                "close one, or open the console on another member",
            )
        self.open += 1
        self.gatherer.acquire()
        resp = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
        )
        try:
            await resp.prepare(request)
            await self._pump(request, resp)
        except (ConnectionError, RuntimeError):
            pass  # the client went away (RuntimeError: aiohttp's closed transport)
        finally:
            self.open -= 1
            self.gatherer.release()
        return resp

    async def _pump(self, request: web.Request, resp: web.StreamResponse) -> None:
        got = await self.gatherer.fresh()
        if got is None:
            return
        view, gen = got
        entries = self.timeline.since(0)
        if not await self._write(request, resp, {**view, "history": list(self.rates.history),
                                                 "timeline": entries}):  # fmt: skip
            return
        seq = entries[-1]["seq"] if entries else 0
        while True:
            wrote = time.monotonic()
            got = await self.gatherer.after(gen)
            if got is None:
                return
            view, gen = got
            await asyncio.sleep(max(0.0, wrote + MIN_GAP - time.monotonic()))
            entries = self.timeline.since(seq)
            if entries:
                seq = entries[-1]["seq"]
            if not await self._write(request, resp, {**view, "timeline": entries}):
                return

    async def _write(self, request: web.Request, resp: web.StreamResponse, line: Any) -> bool:
        """Write one line; False if the client is too slow (then dropped)."""
        try:
            async with asyncio.timeout(self.write_timeout):
                await resp.write(_encode(line) + b"\n")
        except TimeoutError:
            transport = request.transport
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.abort()  # unsent bytes and all: it reads nothing
            return False
        return True
