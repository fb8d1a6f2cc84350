"""etcd's Watch stream in-process (liferaft/etcd/watch.py) over a real
watch hub fed from a fake store: a client that stops reading costs bounded
memory and still gets every event once, in order; a stopping node ends the
stream with UNAVAILABLE; the create/cancel/progress answers; filters."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from aiohttp import web

from liferaft.etcd import gateway
from liferaft.etcd import watch as etcd_watch
from liferaft.etcd.context import EtcdContext
from liferaft.etcd.errors import EtcdError
from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.kv.watch import WatchHub
from tests.kv.test_watch_fake import FakeStore

Create = pb.WatchCreateRequest


def fake_ctx(hub: WatchHub) -> EtcdContext:
    """A node's etcd context with only a watch hub under it."""
    svc: Any = SimpleNamespace(
        hub=hub, store_revision=lambda: hub.revision,
        node=SimpleNamespace(id="n1", rn=None, members=["n1"]),
    )  # fmt: skip
    return EtcdContext(svc, "test")


class Client:
    """One Watch stream: requests sent by :meth:`send`, responses read by
    :meth:`take` (or not read at all)."""

    def __init__(self, hub: WatchHub) -> None:
        self.stream = etcd_watch.WatchStream(fake_ctx(hub))
        self.requests: asyncio.Queue[pb.WatchRequest | None] = asyncio.Queue()
        self.responses = self.stream.serve(self._requests())

    async def _requests(self) -> AsyncIterator[pb.WatchRequest]:
        while (r := await self.requests.get()) is not None:
            yield r

    def send(self, **kw: Any) -> None:
        self.requests.put_nowait(pb.WatchRequest(**kw))

    async def take(self, n: int) -> list[pb.WatchResponse]:
        return [await asyncio.wait_for(anext(self.responses), 5) for _ in range(n)]

    async def close(self) -> None:
        await self.responses.aclose()  # type: ignore[attr-defined]


def publish(hub: WatchHub, store: FakeStore, key: bytes, value: bytes | None) -> None:
    hub.publish(store.write([(key, value)]))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_client_that_stops_reading_is_bounded_and_misses_nothing() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0, max_events=8, max_bytes=1 << 20)
    c = Client(hub)
    c.send(create_request=Create(key=b"k"))
    (created,) = await c.take(1)
    assert created.created and created.watch_id == 0
    for i in range(1, 301):  # the client reads nothing meanwhile
        publish(hub, store, b"k", str(i).encode())
        await settle()
        # Bounded: the outbox, and the hub watcher's queue (it was cut off
        # and now replays from the store instead).
        assert c.stream.out.qsize() <= etcd_watch.OUTBOX
        assert all(w.watcher is None or w.watcher.queued[0] <= 8
                   for w in c.stream.watches.values())  # fmt: skip
    # Its hub watcher was cut off (the hub holds nothing for it now).
    assert hub.watcher_count == 0
    got: list[int] = []
    while len(got) < 300:
        (r,) = await c.take(1)
        assert r.watch_id == 0 and not r.canceled
        got += [int(e.kv.value) for e in r.events]
    assert got == list(range(1, 301))
    assert hub.watcher_count == 1  # live again, from the store's replay
    await c.close()
    assert hub.watcher_count == 0


async def test_replay_batches_revisions_and_filters_and_prev_kv() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    for key, value in [
        (b"p/a", b"1"),
        (b"q", b"x"),
        (b"p/a", b"2"),
        (b"p/b", None),
        (b"p/a", None),
    ]:
        publish(hub, store, key, value)
    c = Client(hub)
    c.send(create_request=Create(key=b"p/", range_end=b"p0", start_revision=1, prev_kv=True,
                                 filters=[Create.NODELETE], watch_id=7))  # fmt: skip
    created, replay = await c.take(2)
    assert created.created and created.watch_id == 7 and created.header.revision == 5
    # One response for the replay (etcd batches it), PUTs only, with prev_kv.
    assert [(e.kv.value, e.prev_kv.value) for e in replay.events] == [(b"1", b""), (b"2", b"1")]
    assert replay.header.revision == 5
    c.send(create_request=Create(key=b"p/a", filters=[Create.NOPUT]))  # id 0: the first free
    (created,) = await c.take(1)
    assert created.watch_id == 0
    publish(hub, store, b"p/a", b"3")
    publish(hub, store, b"p/a", None)
    # Two watchers' responses may interleave in either order.
    delete, put = sorted(await c.take(2), key=lambda r: r.watch_id)
    assert (put.watch_id, put.header.revision, put.events[0].kv.value) == (7, 6, b"3")
    assert (delete.watch_id, delete.header.revision) == (0, 7)
    assert delete.events[0].type == delete.events[0].DELETE
    assert delete.events[0].kv.mod_revision == 7 and not delete.events[0].kv.create_revision
    await c.close()


async def test_create_cancel_progress_answers_as_etcd() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    publish(hub, store, b"a", b"1")
    publish(hub, store, b"a", b"2")
    store.compact(2)
    c = Client(hub)
    c.send(create_request=Create(key=b"a", watch_id=3))
    c.send(create_request=Create(key=b"a", watch_id=3))
    c.send(create_request=Create(key=b"b", range_end=b"a"))
    c.send(create_request=Create(key=b"a", start_revision=1))
    got = await c.take(5)
    assert got[0].created and got[0].watch_id == 3
    assert (got[1].watch_id, got[1].created, got[1].canceled, got[1].cancel_reason) == (
        -1, True, True, "mvcc: duplicate watch ID provided on the WatchStream"
    )  # fmt: skip
    assert (got[2].watch_id, got[2].cancel_reason) == (-1, "mvcc: watcher range is empty")
    assert got[3].created and got[3].watch_id == 0
    assert got[4].canceled and got[4].watch_id == 0 and got[4].compact_revision == 2
    c.send(progress_request=pb.WatchProgressRequest())
    (progress,) = await c.take(1)
    assert (progress.watch_id, progress.header.revision, list(progress.events)) == (-1, 2, [])
    c.send(cancel_request=pb.WatchCancelRequest(watch_id=99))  # unknown: no answer
    c.send(cancel_request=pb.WatchCancelRequest(watch_id=3))
    c.send(cancel_request=pb.WatchCancelRequest(watch_id=0))  # canceled by the server, still known
    a, b = await c.take(2)
    assert (a.watch_id, a.canceled, b.watch_id, b.canceled) == (3, True, 0, True)
    assert hub.watcher_count == 0
    await c.close()


async def test_progress_notify_only_for_watchers_that_asked() -> None:
    store = FakeStore()
    now = [0.0]
    hub = WatchHub(store, 0, progress_interval=10, clock=lambda: now[0])
    c = Client(hub)
    c.send(create_request=Create(key=b"x", progress_notify=True))
    c.send(create_request=Create(key=b"y"))
    await c.take(2)
    publish(hub, store, b"z", b"1")
    now[0] = 11.0
    assert hub.tick() == 2
    (r,) = await c.take(1)
    assert (r.watch_id, r.header.revision, list(r.events)) == (0, 1, [])
    await settle()
    assert c.stream.out.empty()  # watcher 1 did not ask
    await c.close()


async def test_a_stopping_node_ends_the_stream_with_unavailable() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    c = Client(hub)
    c.send(create_request=Create(key=b"k"))
    await c.take(1)
    hub.close()
    with pytest.raises(EtcdError) as e:
        await c.take(1)
    assert e.value.code == grpc.StatusCode.UNAVAILABLE
    assert e.value.message == "etcdserver: server stopped"
    assert hub.watcher_count == 0


async def test_gateway_watch_json_and_a_client_that_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the JSON gateway: etcd's JSON lines, and a client that
    disconnects from an idle watch frees its hub watcher (aiohttp does not
    cancel the handler; the gateway looks at the connection)."""
    monkeypatch.setattr(gateway, "GONE_CHECK", 0.05)
    store = FakeStore()
    hub = WatchHub(store, 0)
    app = web.Application()
    gateway.Gateway(fake_ctx(hub), etcd_watch.CALLS).add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        body = json.dumps({"create_request": {"key": base64.b64encode(b"k").decode()}}).encode()
        writer.write(b"POST /v3/watch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        await writer.drain()

        async def line() -> dict[str, Any]:
            while True:  # skip the chunk sizes of the chunked body
                raw = (await asyncio.wait_for(reader.readline(), 5)).strip()
                if raw.startswith(b"{"):
                    got: dict[str, Any] = json.loads(raw)
                    return got

        created = await line()
        assert created["result"]["created"] is True and hub.watcher_count == 1
        publish(hub, store, b"k", b"v")
        ev = (await line())["result"]
        assert ev["header"]["revision"] == "1"  # int64 as a string, as grpc-gateway
        assert ev["events"] == [{"kv": {"key": "aw==", "create_revision": "1",
                                        "mod_revision": "1", "version": "1",
                                        "value": "dg=="}}]  # fmt: skip
        writer.close()
        for _ in range(200):
            if hub.watcher_count == 0:
                break
            await asyncio.sleep(0.02)
        assert hub.watcher_count == 0
    finally:
        await runner.cleanup()
