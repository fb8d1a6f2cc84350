"""Adversarial checks of reads, transactions and the new routes' input
and auth against one in-process node (issue 15; docs/kv.md).

A range walks every key of its span to count them, however small its
limit: over a big keyspace that is seconds of work, which must not run on
the event loop (heartbeats stop and a leader loses leadership) nor, many
times over, in one transaction's apply on every replica.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from liferaft.kv.errors import KVBadRequestError
from liferaft.kv.mvcc import MVCCEntry, MVCCStore, Range, Txn, reader
from liferaft.kv.requests import MAX_LIMIT, KeySpan, TxnRange, TxnRequest, TxnRequestOp
from liferaft.kv.service import RangeRequest
from tests.kv.one_node import OneNode


@pytest.fixture
async def one(tmp_path: Path) -> AsyncIterator[OneNode]:
    n = OneNode(tmp_path, timeout=2.0, token="s3cret")
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


async def test_a_range_reads_the_store_off_the_event_loop(
    one: OneNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert one.server is not None
    svc = one.server.service
    loop_thread = threading.get_ident()
    seen: list[bool] = []
    opened = svc.machine.read

    def read():  # type: ignore[no-untyped-def]
        seen.append(threading.get_ident() == loop_thread)
        return opened()

    monkeypatch.setattr(svc.machine, "read", read)
    page = await svc.range(RangeRequest(span=KeySpan(prefix=""), count_only=True))
    assert page.count == 0
    assert seen == [False], "a range (which counts its whole span) ran on the event loop"


async def test_lease_lists_read_the_store_off_the_event_loop(
    one: OneNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lease may hold a million keys, and there may be many leases.
    assert one.server is not None
    svc = one.server.service
    loop_thread = threading.get_ident()
    seen: list[tuple[str, bool]] = []
    for name in ("leases", "lease"):
        real = getattr(svc.machine, name)

        def spy(*a, _name=name, _real=real):  # type: ignore[no-untyped-def]
            seen.append((_name, threading.get_ident() == loop_thread))
            return _real(*a)

        monkeypatch.setattr(svc.machine, name, spy)
    for _ in range(200):  # the lease clock takes leadership on its next tick
        if svc.lessor.leading:
            break
        await asyncio.sleep(0.02)
    granted = await svc.leases.grant(60)
    assert [g.id for g in await svc.leases.all()] == [granted.id]
    info = await svc.leases.info(granted.id, keys=True)
    assert info.keys == []
    assert ("leases", False) in seen and ("lease", False) in seen
    assert not any(on_loop for _, on_loop in seen), seen


async def test_a_txn_whose_ranges_could_return_more_than_one_page_is_refused(
    one: OneNode,
) -> None:
    assert one.server is not None
    big = TxnRequestOp(range=TxnRange(prefix="", limit=MAX_LIMIT))
    with pytest.raises(KVBadRequestError, match="limit"):
        await one.server.service.txn(TxnRequest(success=[big, big]))
    # Unlimited (0) is MAX_LIMIT: two of them are too many as well.
    free = TxnRequestOp(range=TxnRange(prefix=""))
    with pytest.raises(KVBadRequestError, match="limit"):
        await one.server.service.txn(TxnRequest(failure=[free, free]))
    half = TxnRequestOp(range=TxnRange(prefix="", limit=MAX_LIMIT // 2))
    got = await one.server.service.txn(TxnRequest(success=[half, half]))
    assert got.succeeded
    # A single-key read returns one key at most: a branch of them is fine.
    keys = [TxnRequestOp(range=TxnRange(key=f"k{i}")) for i in range(128)]
    got = await one.server.service.txn(TxnRequest(success=keys))
    assert got.succeeded and len(got.results) == 128


def test_txn_ranges_read_a_bounded_number_of_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = MVCCStore(tmp_path / "db", sync=False)
    try:
        from liferaft.kv.mvcc import Put

        store.apply_batch([MVCCEntry(i + 1, Put(b"k%05d" % i, b"v")) for i in range(1000)])
        calls = 0
        looked = reader.live_at

        def live_at(*a):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return looked(*a)

        monkeypatch.setattr(reader, "live_at", live_at)
        ranges = tuple(Range(b"\x00", b"\xff", limit=1) for _ in range(128))
        store.apply_batch([MVCCEntry(1001, Txn((), ranges, ()))])
        assert calls <= 128 * 2
    finally:
        store.close()


NEW_ROUTES = [
    ("GET", "/v1/kv?prefix="),
    ("POST", "/v1/txn"),
    ("POST", "/v1/compact"),
    ("GET", "/v1/watch?prefix="),
    ("POST", "/v1/lease"),
    ("GET", "/v1/lease"),
    ("GET", "/v1/lease/1"),
    ("POST", "/v1/lease/1/keepalive"),
    ("DELETE", "/v1/lease/1"),
]


async def test_every_coordination_route_needs_the_token(one: OneNode) -> None:
    for method, path in NEW_ROUTES:
        status, body = await one.call(method, path, {})
        assert (status, body["error"]) == (401, "unauthorized"), (method, path)


@pytest.mark.parametrize(
    "query",
    [
        "start_revision=-1",
        "start_revision=9223372036854775808",
        "start_revision=x",
        "key=a&prefix=a",
        "key=",
        "",
        "prefix=a&end=b",
    ],
)
async def test_a_bad_watch_query_is_a_400_with_one_line(one: OneNode, query: str) -> None:
    import aiohttp

    conn = aiohttp.TCPConnector(force_close=True)
    headers = {"Authorization": "Bearer s3cret"}
    async with (
        aiohttp.ClientSession(connector=conn) as http,
        http.get(one.url("/v1/watch?" + query), headers=headers) as r,
    ):
        body = await r.json(content_type=None)
    assert r.status == 400, (query, r.status, body)
    assert body["error"] == "bad_request" and "\n" not in body["message"]
