"""The watch hub (liferaft/kv/watch.py; docs/kv.md, "Watch (hub)"): the
replay-to-live seam, compaction, slow watchers, progress, cancellation and
the index.  The random interleavings are in test_watch_property.py."""

from __future__ import annotations

import asyncio
import gc
import inspect
import math
import threading

import pytest

from liferaft.kv.errors import KVBadRequestError
from liferaft.kv.watch import Watcher, WatchHub
from liferaft.kv.watch_index import WatchIndex
from liferaft.kv.watch_types import (
    CompactedError,
    EventKind,
    KeyRange,
    Progress,
    WatchCutOffError,
    WatchEvent,
    WatchItem,
    WatchLimitError,
    prefix_end,
)
from tests.kv.test_watch_fake import FakeStore


def revs(items: list[WatchItem]) -> list[int]:
    return [i.revision for i in items]


def drain(w: Watcher) -> list[WatchItem]:
    """Everything ready now, across the replay."""
    out: list[WatchItem] = []
    while got := w.ready():
        out += got
    return out


def drain_to_error(w: Watcher) -> tuple[list[WatchItem], WatchCutOffError]:
    """Everything delivered, then the cut-off that ends the watcher."""
    out: list[WatchItem] = []
    with pytest.raises(WatchCutOffError) as e:
        while True:
            out += w.ready()
    assert w.ready() == []  # ended
    return out, e.value


def published(hub: WatchHub, store: FakeStore, key: bytes, value: bytes) -> list[WatchEvent]:
    evs = store.put(key, value)
    hub.publish(evs)
    return evs


async def test_seam_no_gap_no_duplicate_with_events_during_and_ahead_of_the_replay() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    for i in range(1, 6):
        published(hub, store, f"p/{i}".encode(), b"v")
    ahead = store.put(b"p/6", b"v")  # applied, not yet published: the replay reads it
    w = hub.watch(KeyRange.prefix(b"p/"), start_revision=2)
    assert w.replaying
    first = w.ready(2)
    assert revs(first) == [2, 3]
    hub.publish(ahead)  # buffered live, and also in the replay: the seam drops it
    published(hub, store, b"p/7", b"v")  # after the replay's read: only live
    published(hub, store, b"other", b"v")
    rest = drain(w)
    assert revs(first + rest) == [2, 3, 4, 5, 6, 7]
    assert not w.replaying and w.queued == (0, 0)
    published(hub, store, b"p/8", b"v")
    assert revs(w.ready()) == [9]


async def test_watch_from_now_and_from_the_future() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    published(hub, store, b"k", b"1")
    now = hub.watch(KeyRange.single(b"k"))
    later = hub.watch(KeyRange.single(b"k"), start_revision=4)
    assert now.start_revision == 2 and not now.replaying
    for v in (b"2", b"3", b"4"):
        published(hub, store, b"k", v)
    assert revs(drain(now)) == [2, 3, 4] and revs(drain(later)) == [4]


async def test_compacted_start_is_refused_with_the_compact_revision() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    for v in (b"1", b"2", b"3", b"4", b"5"):
        published(hub, store, b"k", v)
    store.compact(3)
    with pytest.raises(CompactedError) as e:
        hub.watch(KeyRange.single(b"k"), start_revision=2)
    assert e.value.compact_revision == 3 and e.value.code == "compacted"
    assert hub.watcher_count == 0
    w0 = hub.watch(KeyRange.single(b"k"), start_revision=3)
    assert revs(drain(w0)) == [3, 4, 5]
    # Compacted between watch() and the replay's read: the watcher ends with it.
    w = hub.watch(KeyRange.single(b"k"), start_revision=3)
    store.compact(4)
    with pytest.raises(CompactedError):
        w.ready()
    assert hub.watcher_count == 1  # only the earlier, still open watcher


async def test_without_history_only_the_present_can_be_watched() -> None:
    hub = WatchHub(None, 7)
    with pytest.raises(CompactedError) as e:
        hub.watch(KeyRange.single(b"k"), start_revision=7)
    assert e.value.compact_revision == 8
    assert hub.watch(KeyRange.single(b"k"), start_revision=0).start_revision == 8


async def test_slow_watcher_is_cut_off_with_the_first_undelivered_revision() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0, max_events=4)
    w = hub.watch(KeyRange.prefix(b""))
    for i in range(1, 11):
        published(hub, store, b"k", str(i).encode())
        assert w.queued[0] <= 4  # bounded while nobody reads
    assert hub.watcher_count == 0  # it left the hub at the first overflow
    got, err = drain_to_error(w)
    assert revs(got) == [1, 2, 3, 4]
    assert err.resume_revision == 5 and err.reason == "slow"
    # Resuming there misses nothing.
    assert revs(drain(hub.watch(KeyRange.prefix(b""), start_revision=5))) == list(range(5, 11))


async def test_cut_off_falls_between_revisions_after_what_was_queued() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0, max_events=4)
    w = hub.watch(KeyRange.prefix(b""))
    hub.publish(store.write([(b"a", b"1"), (b"b", b"1")]))
    hub.publish(store.write([(b"a", b"2"), (b"b", b"2")]))
    assert revs(w.ready(1)) == [1]  # half of revision 1 taken
    hub.publish(store.write([(b"a", b"3"), (b"b", b"3")]))  # 3 queued + 2 > 4: cut off
    rest, err = drain_to_error(w)
    assert revs(rest) == [1, 2, 2]  # the rest of revision 1, all of 2, then the error
    assert err.resume_revision == 3


async def test_byte_bound_and_one_revision_larger_than_the_bound() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0, max_bytes=10_000)
    w = hub.watch(KeyRange.prefix(b""))
    published(hub, store, b"big", b"x" * 50_000)  # an empty queue takes one revision whole
    assert w.queued[0] == 1 and w.queued[1] > 50_000
    published(hub, store, b"k", b"y")
    assert hub.watcher_count == 0
    got, err = drain_to_error(w)
    assert revs(got) == [1] and err.resume_revision == 2


async def test_overflow_while_replaying_ends_after_the_replay_where_it_stopped() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0, max_events=2)
    for i in range(1, 4):
        published(hub, store, b"k", str(i).encode())
    w = hub.watch(KeyRange.single(b"k"), start_revision=1)
    assert revs(w.ready(1)) == [1]  # the replay reads up to revision 3
    for i in range(4, 8):
        published(hub, store, b"k", str(i).encode())  # buffered live: overflows at 6
    assert hub.watcher_count == 0 and w.queued == (0, 0)
    got, err = drain_to_error(w)
    assert revs(got) == [2, 3] and err.resume_revision == 4


async def test_prev_kv_only_when_asked() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    published(hub, store, b"k", b"1")
    with_prev = hub.watch(KeyRange.single(b"k"), prev_kv=True)
    bare = hub.watch(KeyRange.single(b"k"))
    published(hub, store, b"k", b"2")
    hub.publish(store.write([(b"k", None)]))
    a, b = drain(with_prev), drain(bare)
    assert [(e.kind, e.prev_kv.value) for e in a] == [  # type: ignore[union-attr]
        (EventKind.PUT, b"1"), (EventKind.DELETE, b"2"),
    ]
    assert all(isinstance(e, WatchEvent) and e.prev_kv is None for e in b)
    assert b[1].kv.mod_revision == 3 and b[1].kv.version == 0  # type: ignore[union-attr]
    replayed = drain(hub.watch(KeyRange.single(b"k"), start_revision=1))
    assert all(isinstance(e, WatchEvent) and e.prev_kv is None for e in replayed)


async def test_progress_reaches_idle_watchers_only() -> None:
    now = [100.0]
    store = FakeStore()
    hub = WatchHub(store, 0, progress_interval=5.0, clock=lambda: now[0])
    published(hub, store, b"a", b"1")
    idle = hub.watch(KeyRange.single(b"idle"))
    busy = hub.watch(KeyRange.single(b"a"))
    future = hub.watch(KeyRange.single(b"idle"), start_revision=9)
    now[0] += 4.9
    assert hub.tick() == 0
    published(hub, store, b"a", b"2")
    now[0] += 0.2
    assert hub.tick() == 2  # idle and future: busy had an event 0.2 s ago
    assert idle.ready() == [Progress(2)] and future.ready() == [Progress(8)]
    assert revs(busy.ready()) == [2]
    assert hub.tick() == 0  # not again within the interval
    replaying = hub.watch(KeyRange.single(b"a"), start_revision=1)
    now[0] += 5
    hub.tick()
    assert revs(drain(replaying)) == [1, 2]  # no progress while replaying


async def test_run_progress_wakes_a_waiting_watcher() -> None:
    hub = WatchHub(None, 3, progress_interval=0.004)
    w = hub.watch(KeyRange.prefix(b"x"))
    task = asyncio.create_task(hub.run_progress())
    try:
        assert await asyncio.wait_for(anext(w), 5) == Progress(3)
    finally:
        task.cancel()


async def test_async_iteration_close_cancel_and_drop_leave_nothing_registered() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    got: list[WatchItem] = []

    async def consume(w: Watcher) -> None:
        async for ev in w:
            got.append(ev)

    w = hub.watch(KeyRange.prefix(b""))
    task = asyncio.create_task(consume(w))
    published(hub, store, b"a", b"1")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert revs(got) == [1]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hub.watcher_count == 0 and hub.range_count == 0

    w2 = hub.watch(KeyRange.prefix(b""))
    ended = asyncio.create_task(consume(w2))
    await asyncio.sleep(0)
    w2.close()
    await asyncio.wait_for(ended, 5)  # the iteration stops
    async with hub.watch(KeyRange.single(b"a")):
        assert hub.watcher_count == 1
    assert hub.watcher_count == 0

    published(hub, store, b"a", b"2")
    replaying = hub.watch(KeyRange.single(b"a"), start_revision=1)
    assert revs(replaying.ready(1)) == [1]
    reader = replaying._replay
    replaying.close()
    assert reader is not None and inspect.getgeneratorstate(reader) == "GEN_CLOSED"  # type: ignore[arg-type]

    hub.watch(KeyRange.single(b"dropped"))  # never closed, reference dropped
    gc.collect()
    assert hub.watcher_count == 0 and hub.range_count == 0


async def test_close_and_restore_cut_every_watcher_off_at_its_position() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    a = hub.watch(KeyRange.single(b"a"))
    b = hub.watch(KeyRange.single(b"b"))
    published(hub, store, b"a", b"1")
    hub.restored(10)
    assert hub.revision == 10 and hub.watcher_count == 0
    got, err = drain_to_error(a)
    assert revs(got) == [1] and err.resume_revision == 2 and err.reason == "restored"
    c = hub.watch(KeyRange.single(b"c"))
    hub.close()
    for w, resume in ((b, 1), (c, 11)):
        with pytest.raises(WatchCutOffError) as e:
            w.ready()
        assert e.value.resume_revision == resume
    with pytest.raises(Exception, match="stopping"):
        hub.watch(KeyRange.single(b"a"))


async def test_publish_checks_order_and_runs_on_the_loop_only() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    w = hub.watch(KeyRange.prefix(b""))
    one, two = store.put(b"a", b"1"), store.put(b"a", b"2")
    with pytest.raises(ValueError, match="out of order"):
        hub.publish(two + one)
    assert hub.revision == 0 and w.queued == (0, 0)  # nothing delivered
    hub.publish(one, revision=1)
    with pytest.raises(ValueError, match="out of order"):
        hub.publish(one)  # a revision twice
    with pytest.raises(ValueError, match="below"):
        hub.publish(two, revision=1)
    errors: list[BaseException] = []

    def from_thread() -> None:
        try:
            hub.publish(two)
        except RuntimeError as exc:
            errors.append(exc)
        hub.publish_threadsafe(two)

    t = threading.Thread(target=from_thread)
    t.start()
    t.join()
    assert len(errors) == 1  # publish itself refuses another thread
    await asyncio.sleep(0)
    assert revs(drain(w)) == [1, 2]


async def test_publish_threadsafe_keeps_call_order_from_the_loop_and_a_thread() -> None:
    # An inline apply hands its batch over from the loop's own thread (no
    # self-pipe wakeup), a worker's from its thread: one queue, call order.
    store = FakeStore()
    hub = WatchHub(store, 0)
    w = hub.watch(KeyRange.prefix(b""))
    batches = [store.put(b"k", b"%d" % i) for i in range(6)]
    hub.publish_threadsafe(batches[0])  # from the loop
    t = threading.Thread(target=lambda: hub.publish_threadsafe(batches[1]))
    t.start()
    t.join()
    hub.publish_threadsafe(batches[2])
    for b in batches[3:]:
        t = threading.Thread(target=lambda b=b: hub.publish_threadsafe(b))
        t.start()
        t.join()
        hub.publish_threadsafe([])  # nothing, in between: no error
    assert hub.revision == 0, "queued, not run in the caller"
    await asyncio.sleep(0)
    assert revs(drain(w)) == [1, 2, 3, 4, 5, 6]


async def test_bad_input_is_refused_plainly() -> None:
    hub = WatchHub(None, 0, max_watchers=2)
    for bad in (-1, "3", 1.5, True):
        with pytest.raises(KVBadRequestError, match="start_revision"):
            hub.watch(KeyRange.single(b"k"), start_revision=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty key range"):
        KeyRange.between(b"b", b"a")
    keep = [hub.watch(KeyRange.single(b"k")), hub.watch(KeyRange.single(b"k"))]
    with pytest.raises(WatchLimitError):
        hub.watch(KeyRange.single(b"k"))
    assert len(keep) == 2 and hub.range_count == 1
    with pytest.raises(ValueError):
        WatchHub(None, 0, max_events=0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="progress_interval"):
            WatchHub(None, 0, progress_interval=bad)


def test_ranges_and_the_index() -> None:
    assert prefix_end(b"a/") == b"a0" and prefix_end(b"") is None
    assert prefix_end(b"a\xff") == b"b" and prefix_end(b"\xff") is None
    single, pre, every = KeyRange.single(b"a"), KeyRange.prefix(b"a"), KeyRange.prefix(b"")
    span = KeyRange.between(b"b", b"d")
    assert b"a" in single and b"a\0" not in single and b"ab" not in single and "a" not in single
    assert b"ab" in pre and b"b" not in pre and b"" in every and b"c" in span and b"d" not in span
    assert single.is_single and pre.is_prefix and every.is_prefix
    assert not span.is_single and not span.is_prefix
    idx: WatchIndex[str] = WatchIndex()
    for r, m in ((single, "S"), (pre, "P"), (every, "E"), (span, "R"), (pre, "P2")):
        idx.add(r, m)
    assert len(idx) == 4  # the two prefix watchers share a group

    def members(key: bytes) -> set[str]:
        return {m for g in idx.groups(key) for m in g}

    assert members(b"a") == {"S", "P", "P2", "E"}
    assert members(b"ab") == {"P", "P2", "E"} and members(b"c") == {"R", "E"}
    for r, m in ((single, "S"), (pre, "P"), (every, "E"), (span, "R"), (pre, "P2")):
        idx.remove(r, m)
    idx.remove(single, "S")  # twice: a no-op
    assert len(idx) == 0 and members(b"a") == set()


async def test_a_thousand_watchers_on_one_prefix_share_one_group() -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    on_prefix = [hub.watch(KeyRange.prefix(b"svc/")) for _ in range(1000)]
    elsewhere = [hub.watch(KeyRange.single(f"key/{i}".encode())) for i in range(1000)]
    assert hub.range_count == 1001
    for i in range(50):
        hub.publish(store.write([(f"svc/{i}".encode(), b"up"), (f"other/{i}".encode(), b"x")]))
    for w in on_prefix:
        got = drain(w)
        assert revs(got) == list(range(1, 51))
    assert all(w.queued == (0, 0) and drain(w) == [] for w in elsewhere)
