"""Adversarial checks of watch replays (issue 15, "Watch"; docs/kv.md).

A watcher that starts in the past replays from the store.  A client that
asks for a replay and then reads slowly, or never, must not pin an LMDB
read transaction (the file grows while one is open: no page a later write
frees can be reused), and a replay that has to skip many records of other
keys must hand the event loop back now and then (a stalled leader stops
sending heartbeats and loses leadership).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from liferaft.kv import watch_history
from liferaft.kv.mvcc import MVCCEntry, MVCCStore, Put
from liferaft.kv.watch import WatchHub
from liferaft.kv.watch_history import StoreHistory
from liferaft.kv.watch_types import KeyRange, WatchEvent

CHUNK = 64  # records a replay reads under one read transaction, for these tests


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(watch_history, "REPLAY_RECORDS", CHUNK, raising=False)
    s = MVCCStore(tmp_path / "db", sync=False)
    yield s
    s.close()


def _put_many(store: MVCCStore, keys: list[bytes]) -> None:
    base = store.applied_index()
    store.apply_batch([MVCCEntry(base + i + 1, Put(k, b"v")) for i, k in enumerate(keys)])


def _readers(store: MVCCStore) -> int:
    """Read views of the store open now."""
    return store._users  # noqa: SLF001 - the count close() waits for


async def test_a_stalled_replay_holds_no_read_transaction(store: MVCCStore) -> None:
    _put_many(store, [b"k"] * (5 * CHUNK))  # revisions 2 ..
    hub = WatchHub(StoreHistory(store), store.revision())
    w = hub.watch(KeyRange.single(b"k"), start_revision=2)
    try:
        got = w.ready(1)  # the client takes one event, then stops reading
        assert [e.revision for e in got if isinstance(e, WatchEvent)] == [2]
        assert w.replaying
        assert _readers(store) == 0, "a replay waiting on its client pins a read transaction"
        # It still gives every event once, in order, when read on.
        revs = [2]
        while w.replaying:
            revs += [e.revision for e in w.ready(100) if isinstance(e, WatchEvent)]
        assert revs == list(range(2, 2 + 5 * CHUNK))
    finally:
        w.close()


async def test_a_replay_of_a_quiet_key_hands_the_loop_back(store: MVCCStore) -> None:
    _put_many(store, [b"other%d" % i for i in range(10 * CHUNK)])
    _put_many(store, [b"quiet"])
    last = store.revision()
    hub = WatchHub(StoreHistory(store), last)
    w = hub.watch(KeyRange.single(b"quiet"), start_revision=2)
    try:
        calls = 0
        got: list[int] = []
        while w.replaying and calls < 100:
            calls += 1
            got += [e.revision for e in w.ready(256) if isinstance(e, WatchEvent)]
        # One call may not scan 10 chunks' worth of other keys in a row.
        assert calls >= 5, f"the replay read {10 * CHUNK} records in {calls} call(s)"
        assert got == [last]
    finally:
        w.close()


async def test_async_for_gets_past_a_pausing_replay(store: MVCCStore) -> None:
    _put_many(store, [b"other%d" % i for i in range(4 * CHUNK)])
    _put_many(store, [b"quiet"])
    hub = WatchHub(StoreHistory(store), store.revision())
    async with hub.watch(KeyRange.single(b"quiet"), start_revision=2) as w:
        async with asyncio.timeout(10):
            ev = await w.__anext__()
        assert isinstance(ev, WatchEvent) and ev.key == b"quiet"
