"""etcd's Watch service: one bidirectional stream carrying any number of
watchers, over the node's watch hub (liferaft/kv/watch.py).

Theory of operation (docs/etcd.md, "Watch")
-------------------------------------------
A stream (:class:`WatchStream`) reads requests in one task and runs one
small task per watcher; every response goes through one outbox, bounded in
responses and in bytes, which the handler yields to the client.  One
watcher task of a stream at a time turns events into responses (copies of
the values), so a stream holds at most the outbox and one batch however
many watchers it has.  So a client that stops reading
fills the outbox, the watcher tasks stop taking events, and each hub
watcher's own bounded queue fills until the hub cuts it off (reason
"slow").  The stream then opens a new hub watcher for the same watch id
from the first revision it did not deliver: its replay reads the store
lazily, as the client takes responses, so a slow client costs bounded
memory and never blocks the event loop, and it still gets every event
once, in order, as etcd's "unsynced" watchers do.  A store replaced by a
snapshot ("restored") resumes the same way; a node that stops ends the
stream with UNAVAILABLE "etcdserver: server stopped", which etcd clients
retry on another endpoint from the last revision they saw.

What follows etcd 3.4 (checked against a real etcd 3.4.23):

- ``create_request`` answers ``created`` with the watch id (client-chosen,
  or the stream's next free id from 0) and the header at the revision the
  watch starts after; an id in use, or an empty range, answers
  ``created`` and ``canceled`` with watch id -1 and etcd's
  ``cancel_reason``.  ``key`` empty means ``"\\0"``, ``range_end``
  ``"\\0"`` means every key from ``key`` on.
- A start revision below what history keeps answers ``created``, then
  ``canceled`` with ``compact_revision``: the first revision a watch may
  start at (etcd names the compaction revision itself, which it can still
  replay; liferaft's history starts one above it, docs/kv.md).  The id
  stays in use until the client cancels it, as in etcd.
- Events: one response per revision while live; a replay puts several
  revisions in one response (etcd batches up to 1,000).  A revision is
  never split.  Filters drop events, and a response left empty is not
  sent.
- ``cancel_request`` answers ``canceled``; an unknown id gets no answer.
- ``progress_request`` answers watch id -1 with the header revision once
  every watcher of the stream has delivered everything up to it (at once
  if they have).
- ``progress_notify``: an idle watcher gets an empty response with the
  header revision every hub progress interval (``--watch-progress-interval``,
  10 s by default; etcd: 10 min).
- The request side may end (a JSON gateway body does): the responses go
  on, as in etcd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from liferaft.kv.errors import KVError, KVUnavailableError
from liferaft.kv.watch import Watcher
from liferaft.kv.watch_types import (
    CompactedError,
    EventKind,
    KeyRange,
    Progress,
    WatchCutOffError,
    WatchEvent,
    WatchItem,
    WatchLimitError,
)

from . import errors
from .calls import Call
from .context import EtcdContext
from .kv import key_value
from .proto import kv_pb2 as mvccpb
from .proto import rpc_pb2 as pb

log = logging.getLogger("liferaft.etcd")

#: Responses queued for the client at most (then the watchers wait).
OUTBOX = 64
#: Bytes of responses queued for the client at most (one response is
#: always let in, however large).
OUTBOX_BYTES = 1 << 20
#: Items taken from a hub watcher at once.
BATCH = 256
#: etcd's texts for a create it refuses.
DUPLICATE_ID = "mvcc: duplicate watch ID provided on the WatchStream"
EMPTY_RANGE = "mvcc: watcher range is empty"
NO_ID = -1

_NOPUT = pb.WatchCreateRequest.NOPUT
_NODELETE = pb.WatchCreateRequest.NODELETE


@dataclass(eq=False)
class _Watch:
    """One watch id of a stream."""

    id: int
    key_range: KeyRange
    prev_kv: bool
    progress_notify: bool
    drop: frozenset[EventKind]
    watcher: Watcher | None = None  # None: canceled by the server (compacted)
    task: asyncio.Task[None] | None = None
    pending: list[WatchEvent] = field(default_factory=list)  # a revision not yet whole
    busy: bool = False  # holds items taken from the hub, not yet in the outbox

    def synced(self) -> bool:
        """Everything the hub published for it is in the outbox."""
        w = self.watcher
        return w is None or not (w.replaying or w.queued[0] or self.pending or self.busy)


def key_range(c: pb.WatchCreateRequest) -> KeyRange | None:
    """The keys a create request watches, as etcd reads them; None: empty."""
    key = c.key or b"\0"  # etcd: an empty key is the smallest key
    if not c.range_end:
        return KeyRange.single(key)
    if c.range_end == b"\0":
        return KeyRange(key, None)
    if c.range_end <= key:
        return None
    return KeyRange(key, c.range_end)


class WatchStream:
    """The server side of one Watch stream (see the module docstring)."""

    def __init__(self, ctx: EtcdContext) -> None:
        self.ctx = ctx
        self.hub = ctx.service.hub
        self.out: asyncio.Queue[tuple[pb.WatchResponse, int] | None] = asyncio.Queue(OUTBOX)
        self._queued_bytes = 0
        self._room = asyncio.Event()  # set when the client takes a response
        # Held by the one watcher task turning hub items into responses.
        self._building = asyncio.Lock()
        self.error: BaseException | None = None
        self.watches: dict[int, _Watch] = {}
        self._next_id = 0
        self._progress_wanted = False

    # -- the handler ---------------------------------------------------------------------

    async def serve(
        self, requests: AsyncIterator[pb.WatchRequest]
    ) -> AsyncIterator[pb.WatchResponse]:
        reader = asyncio.create_task(self._read(requests))
        try:
            while True:
                got = await self.out.get()
                if got is None:
                    assert self.error is not None
                    raise self.error
                resp, size = got
                self._queued_bytes -= size
                self._room.set()
                yield resp
        finally:
            reader.cancel()
            self.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    def close(self) -> None:
        """End every watcher of the stream (the client went or it failed)."""
        for w in list(self.watches.values()):
            self._end(w)
        self.watches.clear()

    def _fail(self, exc: BaseException) -> None:
        """End the stream with ``exc``: what was queued is dropped (the
        client resumes from the last revision it saw)."""
        if self.error is not None:
            return
        self.error = exc
        while not self.out.empty():
            self.out.get_nowait()
        self._queued_bytes = 0
        self._room.set()
        self.out.put_nowait(None)

    def _header(self, revision: int | None = None) -> pb.ResponseHeader:
        return self.ctx.header(self.hub.revision if revision is None else revision)

    # -- requests ------------------------------------------------------------------------

    async def _read(self, requests: AsyncIterator[pb.WatchRequest]) -> None:
        try:
            async for req in requests:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    await self._create(req.create_request)
                elif kind == "cancel_request":
                    await self._cancel(req.cancel_request.watch_id)
                elif kind == "progress_request":
                    self._progress_wanted = True
                    await self._maybe_progress()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad request body ends the stream
            self._fail(exc)
        # The client closed its side: keep sending, as etcd does.

    async def _create(self, c: pb.WatchCreateRequest) -> None:
        kr = key_range(c)
        if kr is None:
            return await self._refuse(EMPTY_RANGE)
        wid = c.watch_id
        if wid == 0:
            while self._next_id in self.watches:
                self._next_id += 1
            wid = self._next_id
            self._next_id += 1
        elif wid in self.watches:
            return await self._refuse(DUPLICATE_ID)
        if len(self.watches) >= self.hub.max_watchers:
            # Counts ids the server canceled and the client never did, so a
            # stream's table is bounded too.
            return await self._refuse(f"etcdserver: too many watchers on this stream ({wid})")
        drop = {EventKind.PUT for f in c.filters if f == _NOPUT}
        drop |= {EventKind.DELETE for f in c.filters if f == _NODELETE}
        w = _Watch(wid, kr, c.prev_kv, c.progress_notify, frozenset(drop))
        # A negative start is as old as can be (etcd: compacted, or all).
        start = max(c.start_revision, 1) if c.start_revision else 0
        header = self._header()
        try:
            w.watcher = self._open(w, start)
        except CompactedError as exc:
            self.watches[wid] = w
            await self._put(pb.WatchResponse(header=header, watch_id=wid, created=True))
            return await self._put(self._compacted(w, exc))
        except WatchLimitError as exc:
            return await self._refuse(f"etcdserver: {exc}")
        except KVUnavailableError:
            return self._fail(errors.STOPPED)  # the hub is closed: the node stops
        self.watches[wid] = w
        await self._put(pb.WatchResponse(header=header, watch_id=wid, created=True))
        w.task = asyncio.create_task(self._pump(w))

    def _open(self, w: _Watch, start: int) -> Watcher:
        return self.hub.watch(w.key_range, start_revision=start or None, prev_kv=w.prev_kv)

    async def _refuse(self, reason: str) -> None:
        await self._put(pb.WatchResponse(
            header=self._header(), watch_id=NO_ID, created=True, canceled=True,
            cancel_reason=reason,
        ))  # fmt: skip

    async def _cancel(self, wid: int) -> None:
        w = self.watches.pop(wid, None)
        if w is None:
            return  # etcd answers nothing for an unknown id
        self._end(w)
        await self._put(pb.WatchResponse(header=self._header(), watch_id=wid, canceled=True))
        await self._maybe_progress()

    def _end(self, w: _Watch) -> None:
        if w.task is not None and w.task is not asyncio.current_task():
            w.task.cancel()
        if w.watcher is not None:
            w.watcher.close()
            w.watcher = None
        w.pending.clear()

    def _compacted(self, w: _Watch, exc: CompactedError) -> pb.WatchResponse:
        self._end(w)  # the id stays until the client cancels it, as in etcd
        # etcd's header here has no revision (its compacted answer has none).
        return pb.WatchResponse(
            header=self.ctx.header(0), watch_id=w.id, canceled=True,
            compact_revision=exc.compact_revision,
        )  # fmt: skip

    async def _put(self, resp: pb.WatchResponse) -> None:
        size = resp.ByteSize()
        while (
            self.error is None and self._queued_bytes and (self._queued_bytes + size > OUTBOX_BYTES)
        ):
            self._room.clear()
            await self._room.wait()
        if self.error is None:
            self._queued_bytes += size
            await self.out.put((resp, size))

    async def _maybe_progress(self) -> None:
        if self._progress_wanted and all(w.synced() for w in self.watches.values()):
            self._progress_wanted = False
            await self._put(pb.WatchResponse(header=self._header(), watch_id=NO_ID))

    # -- one watcher ---------------------------------------------------------------------

    async def _pump(self, w: _Watch) -> None:
        """Move ``w``'s items from the hub to the outbox until it ends."""
        try:
            while w.watcher is not None:
                watcher = w.watcher
                if not await watcher.wait_ready():
                    return
                async with self._building:
                    # One builder a stream: items wait in the hub (shared,
                    # bounded) rather than as copies in each watcher's task.
                    if w.watcher is not watcher:
                        continue  # ended or reopened while it waited
                    replaying = watcher.replaying
                    w.busy = True
                    try:
                        items = watcher.ready(BATCH)
                    except WatchCutOffError as exc:
                        if exc.reason == "stopping":
                            return self._fail(errors.STOPPED)
                        # Too slow, or the store was replaced: carry on from
                        # the first revision not delivered, now from the store.
                        w.pending.clear()
                        try:
                            w.watcher = self._open(w, exc.resume_revision)
                        except CompactedError as cexc:
                            return await self._put(self._compacted(w, cexc))
                        continue
                    except CompactedError as exc:  # compacted while it replayed
                        return await self._put(self._compacted(w, exc))
                    for resp in self._responses(w, items, replaying, whole=len(items) < BATCH):
                        await self._put(resp)
                    w.busy = False
                await self._maybe_progress()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a store read failed
            # End this watcher with the reason; the stream and its other
            # watchers go on.
            if not isinstance(exc, KVError):
                log.exception("etcd watch %d failed", w.id)
            self._end(w)
            await self._put(pb.WatchResponse(
                header=self._header(), watch_id=w.id, canceled=True,
                cancel_reason=errors.etcd_error(exc).message,
            ))  # fmt: skip
        finally:
            w.busy = False

    def _responses(
        self, w: _Watch, items: Iterable[WatchItem], replaying: bool, whole: bool
    ) -> list[pb.WatchResponse]:
        """The responses for ``items`` taken from ``w``'s hub watcher.
        ``whole``: nothing more is ready, so the last revision is complete
        (else it is held back, since a revision is never split)."""
        out: list[pb.WatchResponse] = []
        for it in items:
            if isinstance(it, Progress):
                out += self._events(w, replaying)
                if w.progress_notify:
                    out.append(pb.WatchResponse(header=self._header(it.revision), watch_id=w.id))
            else:
                w.pending.append(it)
        if not whole and w.pending:
            last = w.pending[-1].revision
            keep = [e for e in w.pending if e.revision == last]
            w.pending = [e for e in w.pending if e.revision != last]
            out += self._events(w, replaying)
            w.pending = keep
        else:
            out += self._events(w, replaying)
        return out

    def _events(self, w: _Watch, replaying: bool) -> list[pb.WatchResponse]:
        """``w.pending`` as responses (emptied): one per revision when live,
        all in one from a replay, as etcd sends them."""
        evs, w.pending = w.pending, []
        if w.drop:
            evs = [e for e in evs if e.kind not in w.drop]
        if not evs:
            return []
        groups: list[list[WatchEvent]] = []
        for e in evs:
            if groups and (replaying or groups[-1][-1].revision == e.revision):
                groups[-1].append(e)
            else:
                groups.append([e])
        out = []
        for g in groups:
            rev = self.hub.revision if replaying else g[-1].revision
            resp = pb.WatchResponse(header=self._header(rev), watch_id=w.id)
            resp.events.extend(_event(e) for e in g)
            out.append(resp)
        return out


def _event(e: WatchEvent) -> mvccpb.Event:
    out = mvccpb.Event(
        type=mvccpb.Event.PUT if e.kind is EventKind.PUT else mvccpb.Event.DELETE,
        kv=key_value(e.kv),
    )
    if e.prev_kv is not None:
        out.prev_kv.CopyFrom(key_value(e.prev_kv))
    return out


def watch(
    ctx: EtcdContext, requests: AsyncIterator[pb.WatchRequest]
) -> AsyncIterator[pb.WatchResponse]:
    """etcd's Watch: a bidirectional stream (see the module docstring)."""
    return WatchStream(ctx).serve(requests)


CALLS = [
    Call("Watch", "Watch", pb.WatchRequest, pb.WatchResponse, watch, ("/v3/watch",), "stream"),
]
