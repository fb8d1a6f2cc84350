"""Watch in the client: ``GET /v1/watch``'s NDJSON stream (docs/kv.md,
"Watch") as an async iterator of typed :class:`~liferaft.client.Event`\\ s
that resumes by itself.

    async with client.watch(prefix="svc/") as w:
        async for ev in w:
            print(ev.type, ev.key, ev.value, ev.revision)

Every line of the stream holds one whole revision, so the stream keeps
``next_revision``: the last revision it delivered + 1, or a progress
notification's revision + 1, or the ``resume_revision`` of a server's cut-off.
When the connection drops, goes quiet for ``idle_timeout`` (the server sends
progress to idle watchers every 10 s by default), or the node cuts the watch
off, it watches again from ``next_revision`` on the next endpoint: no event
is repeated or skipped, and revisions come in order.  A node that has not
applied that far yet simply waits before it sends.  A start revision that
compaction removed raises :class:`~liferaft.client.RevisionCompactedError` (with
``compact_revision``).  If no endpoint serves the watch for
``give_up_after`` seconds, it raises :class:`~liferaft.client.UnavailableError`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import aiohttp

from .errors import ClientError, RevisionCompactedError, UnavailableError, typed_error
from .model import Event, Progress, event_of

#: Seconds without a byte after which a stream is taken for dead: three of
#: the server's default progress intervals (10 s), and a bit.
IDLE_TIMEOUT = 35.0
#: Seconds without any endpoint serving the watch before it gives up.
GIVE_UP_AFTER = 60.0


class _Retry(Exception):  # noqa: N818 - internal signal, never raised to callers
    """This stream ended; watch again from ``next_revision`` elsewhere."""


class WatchStream:
    """One watch (``client.watch(...)``): iterate it for events; ``aclose``
    (or ``async with``) ends it.  ``endpoint`` is the node it streams from
    now; ``next_revision`` where it would resume (0 until the first node
    answered, for a watch from now)."""

    def __init__(
        self,
        client: Any,
        query: dict[str, str],
        *,
        start_revision: int,
        prev_kv: bool,
        progress: bool,
        idle_timeout: float | None,
        give_up_after: float | None,
    ) -> None:
        self._client = client
        self._query = {**query, **({"prev_kv": "true"} if prev_kv else {})}
        self.next_revision = start_revision
        self.progress = progress
        self.idle_timeout = idle_timeout
        self.give_up_after = give_up_after
        self.endpoint: str | None = None
        self.reconnects = 0
        self._gen = self._run()

    def __aiter__(self) -> AsyncIterator[Event | Progress]:
        return self

    async def __anext__(self) -> Event | Progress:
        return await self._gen.__anext__()

    async def __aenter__(self) -> WatchStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def _run(self) -> AsyncGenerator[Event | Progress, None]:
        loop = asyncio.get_running_loop()
        eps: list[str] = self._client.endpoints
        rotate = 0
        backoff = 0.05
        served_at = loop.time()  # the last time a node served the watch
        last = "no endpoint answered"
        while True:
            ep = eps[rotate % len(eps)]
            self.endpoint = ep
            try:
                async for item in self._stream(ep):
                    if item is None:  # the created line: this node serves it
                        backoff = 0.05
                        served_at = loop.time()
                        continue
                    served_at = loop.time()
                    yield item
            except _Retry as exc:
                last = f"{ep}: {exc}"
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                # ValueError: a line that is not JSON (a proxy's page, a cut line).
                last = f"{ep}: {type(exc).__name__} {exc}".strip()
            rotate += 1
            self.reconnects += 1
            if self.give_up_after is not None and loop.time() - served_at > self.give_up_after:
                raise UnavailableError(
                    f"no node served the watch for {self.give_up_after:g} s ({last}); "
                    f"resume from revision {self.next_revision}",
                    503,
                    "no_leader",
                )
            await asyncio.sleep(backoff)
            backoff = min(1.0, backoff * 2)

    async def _stream(self, ep: str) -> AsyncGenerator[Event | Progress | None, None]:
        """One connection's items (None for its created line); ends by
        raising :class:`_Retry` or a transport error, or a typed error for
        one no other node would answer differently."""
        c = self._client
        q = dict(self._query)
        if self.next_revision:
            q["start_revision"] = str(self.next_revision)
        url = f"{c._scheme}://{ep}/v1/watch?{urllib.parse.urlencode(q)}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=c.dial_timeout)
        async with c._http().get(url, ssl=c._ssl, timeout=timeout) as r:
            if r.status != 200:
                try:
                    data = await r.json(content_type=None)
                except ValueError:
                    data = {}
                data = data if isinstance(data, dict) else {}
                code = str(data.get("error", ""))
                if r.status in (502, 503, 504):
                    raise _Retry(f"{r.status} {code}")
                raise typed_error(r.status, code, str(data.get("message", code)), data, "")
            buf = b""
            while True:
                if self.idle_timeout is None:
                    chunk = await r.content.readany()
                else:
                    async with asyncio.timeout(self.idle_timeout):
                        chunk = await r.content.readany()
                if not chunk:
                    raise _Retry("the stream ended")
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for raw in lines:
                    if raw.strip():
                        for item in self._items(json.loads(raw)):
                            yield item

    def _items(self, d: dict[str, Any]) -> list[Event | Progress | None]:
        """What one line gives; it moves ``next_revision`` past it."""
        if d.get("created"):
            if not self.next_revision:
                self.next_revision = int(d["start_revision"])
            return [None]
        if "events" in d:
            rev = int(d["revision"])
            if rev < self.next_revision:
                return []  # already delivered (a node never sends it; be sure)
            self.next_revision = rev + 1
            return [event_of(rev, e) for e in d["events"]]
        if "progress" in d:
            rev = int(d["progress"])
            self.next_revision = max(self.next_revision, rev + 1)
            return [Progress(rev)] if self.progress else []
        if "error" in d:
            code = str(d["error"])
            if code == "compacted":
                msg = str(d.get("message", code))
                raise RevisionCompactedError(msg, int(d["compact_revision"]))
            if "resume_revision" in d:
                self.next_revision = max(self.next_revision, int(d["resume_revision"]))
                raise _Retry(f"cut off: {d.get('message', code)}")
            if code in ("too_many_watchers", "stopping", "no_leader"):
                raise _Retry(code)
            raise ClientError(f"watch ended: {d.get('message', code)}", 0, code)
        return []


class WatchCalls:
    """``watch``, for the client."""

    def watch(
        self,
        key: str | None = None,
        *,
        prefix: str | None = None,
        end: str | None = None,
        start_revision: int = 0,
        prev_kv: bool = False,
        progress: bool = False,
        idle_timeout: float | None = IDLE_TIMEOUT,
        give_up_after: float | None = GIVE_UP_AFTER,
    ) -> WatchStream:
        """Changes to ``key``, to keys under ``prefix``, or to ``[key, end)``,
        from ``start_revision`` (0: from the next one), each once and in
        order, across reconnects (the module's docstring says how).  With
        ``prev_kv`` an event carries the key before it; with ``progress`` the
        iteration also yields :class:`~liferaft.client.Progress`."""
        if (key is None) == (prefix is None):
            raise ValueError("watch a key or a prefix (one of them)")
        if prefix is not None:
            if end is not None:
                raise ValueError("give prefix or end, not both")
            query = {"prefix": prefix}
        else:
            assert key is not None
            query = {"key": key} if end is None else {"start": key, "end": end}
        if start_revision < 0:
            raise ValueError("start_revision must be >= 0 (0: from now)")
        return WatchStream(
            self, query, start_revision=start_revision, prev_kv=prev_kv, progress=progress,
            idle_timeout=idle_timeout, give_up_after=give_up_after,
        )  # fmt: skip


