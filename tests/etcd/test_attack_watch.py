"""Attacks on etcd's Watch stream: a client that opens many watchers on one
stream and stops reading must cost the node bounded memory.

Found by the adversarial review: every watcher's task turned all it had
taken from the hub into response messages (copies of the values) before
waiting for room in the stream's outbox, so 500 watchers of one stream and
3 MB of writes held 600 MB on the node (measured with a real node); 10,000
watchers and bigger revisions are many gigabytes.  Now one watcher of a
stream at a time builds responses, and the outbox is bounded in bytes."""

from __future__ import annotations

import asyncio
from typing import Any

from liferaft.etcd import watch as etcd_watch
from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.kv.watch import WatchHub
from tests.etcd.test_watch_stream import Client, settle
from tests.kv.test_watch_fake import FakeStore

WATCHERS = 50
REVISIONS = 5
KEYS = 20
VALUE = b"v" * 1000


async def test_many_watchers_of_a_client_that_stops_reading_build_bounded_responses(
    monkeypatch: Any,
) -> None:
    built = 0
    real = etcd_watch._event

    def counting(e: Any) -> Any:
        nonlocal built
        built += 1
        return real(e)

    monkeypatch.setattr(etcd_watch, "_event", counting)
    monkeypatch.setattr(etcd_watch, "OUTBOX_BYTES", 50_000)
    store = FakeStore()
    hub = WatchHub(store, 0)
    c = Client(hub)
    for _ in range(WATCHERS):
        c.send(create_request=pb.WatchCreateRequest(key=b"\0", range_end=b"\0"))
    created = await c.take(WATCHERS)
    assert all(r.created for r in created)
    for r in range(REVISIONS):  # the client reads nothing from here on
        hub.publish(store.write([(b"k/%d" % i, VALUE + b"%d" % r) for i in range(KEYS)]))
        await settle()
    for _ in range(50):
        await asyncio.sleep(0)
    # Each watcher has 100 events ready: 5,000 copies of a value if every
    # watcher built its own.  Now: the outbox's bytes (50 of them) and one
    # watcher's batch.
    assert built <= 50 + REVISIONS * KEYS + KEYS, built
    queued = sum(r.ByteSize() for r, _ in list(c.stream.out._queue))  # type: ignore[attr-defined]
    assert queued <= 50_000 + KEYS * (len(VALUE) + 100)
    # And the client still gets everything, in order, when it reads again.
    got: dict[int, int] = {}
    while sum(got.values()) < WATCHERS * REVISIONS * KEYS:
        (r,) = await c.take(1)
        got[r.watch_id] = got.get(r.watch_id, 0) + len(r.events)
    assert got == {w: REVISIONS * KEYS for w in range(WATCHERS)}
    await c.close()
    assert hub.watcher_count == 0
