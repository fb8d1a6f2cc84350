"""GET /v1/watch (docs/kv.md, "Watch"): a key and a prefix, a replay from
the past that goes live with no gap and no duplicate at the seam, prev_kv,
a delete event's shape, progress lines, the compacted error, a slow reader
cut off with bounded memory, a follower's watchers, and a snapshot install
that cuts a lagging follower's watchers off with nothing missed on resume."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from liferaft.runtime import Node
from tests.kv.coord import Stream, module_api, put, watch
from tests.kv.test_api import Api

pytestmark = pytest.mark.asyncio(loop_scope="module")
api = module_api(progress_interval=0.2)


def kvs(lines: list[dict[str, Any]]) -> list[tuple[int, str, str, str]]:
    """(revision, type, key, value) of every event of ``lines``."""
    return [(ln["revision"], e["type"], e["kv"]["key"], e["kv"]["value"])
            for ln in lines for e in ln["events"]]  # fmt: skip


async def test_a_key_watch_and_a_prefix_watch_see_exactly_their_keys(api: Api) -> None:
    ld = await api.leader_id()
    async with await watch(api, ld, "key=w1/a") as one, await watch(api, ld, "prefix=w1/") as pre:
        ra = await put(api, ld, "w1/a", "1")
        await put(api, ld, "w1x", "outside")
        rb = await put(api, ld, "w1/b", "2")
        ra2 = await put(api, ld, "w1/a", "3")
        assert kvs(await one.events_until(ra2)) == [(ra, "put", "w1/a", "1"),
                                                    (ra2, "put", "w1/a", "3")]  # fmt: skip
        assert kvs(await pre.events_until(ra2)) == [
            (ra, "put", "w1/a", "1"), (rb, "put", "w1/b", "2"), (ra2, "put", "w1/a", "3")
        ]


async def test_a_past_start_replays_then_goes_live_without_gap_or_duplicate(api: Api) -> None:
    ld = await api.leader_id()
    revs = [await put(api, ld, f"w2/{i}", str(i)) for i in range(5)]
    s = await watch(api, ld, f"prefix=w2/&start_revision={revs[1]}")
    try:
        # Writes race the replay: whichever side of the seam they land on,
        # each revision comes once, in order.
        live = [await put(api, ld, f"w2/{i}", "live") for i in range(5, 10)]
        got = kvs(await s.events_until(live[-1]))
        assert [r for r, *_ in got] == revs[1:] + live
        assert got[0] == (revs[1], "put", "w2/1", "1")
    finally:
        s.close()


async def test_prev_kv_and_the_shape_of_a_delete(api: Api) -> None:
    ld = await api.leader_id()
    s = await watch(api, ld, "key=w3/k&prev_kv=true")
    async with s, await watch(api, ld, "key=w3/k") as bare:
        r1 = await put(api, ld, "w3/k", "a")
        r2 = await put(api, ld, "w3/k", "b")
        st, _, _ = await api.call(ld, "DELETE", "/v1/kv/w3/k")
        assert st == 200
        lines = await s.events_until(r2 + 1)
        created, updated, deleted = (ln["events"][0] for ln in lines)
        assert "prev_kv" not in created and created["kv"]["version"] == 1
        assert updated["prev_kv"] == {"key": "w3/k", "value": "a", "revision": r1,
                                      "create_revision": r1, "version": 1}  # fmt: skip
        assert lines[2]["revision"] == r2 + 1
        # A delete: the key, the deleting revision, version 0, no value.
        assert deleted == {
            "type": "delete",
            "kv": {"key": "w3/k", "value": "", "revision": r2 + 1, "create_revision": 0,
                   "version": 0},
            "prev_kv": {"key": "w3/k", "value": "b", "revision": r2, "create_revision": r1,
                        "version": 2},
        }  # fmt: skip
        bare_lines = await bare.events_until(r2 + 1)
        assert all("prev_kv" not in e for ln in bare_lines for e in ln["events"])


async def test_an_idle_watch_gets_progress_lines_at_the_current_revision(api: Api) -> None:
    ld = await api.leader_id()
    s = await watch(api, ld, "key=w4/idle")
    try:
        rev = await put(api, ld, "w4/other", "x")  # not watched: only progress shows it
        seen = []
        for _ in range(20):
            line = await s.line()
            assert set(line) == {"progress"}, line
            seen.append(line["progress"])
            if line["progress"] >= rev:
                break
        assert seen[-1] >= rev and seen == sorted(seen)
    finally:
        s.close()


async def test_a_compacted_start_is_refused_with_the_compact_revision(api: Api) -> None:
    ld = await api.leader_id()
    old = await put(api, ld, "w5/k", "1")
    now = await put(api, ld, "w5/k", "2")
    st, _, _ = await api.call(ld, "POST", "/v1/compact", {"revision": now})
    assert st == 200
    for nid in api.c.ids:
        for _ in range(250):  # a follower applies the compaction a little later
            if api.c.sms[nid].compact_revision() == now:
                break
            await asyncio.sleep(0.02)
        s = await watch(api, nid, f"key=w5/k&start_revision={old}")
        body = await asyncio.wait_for(s.resp.json(), 5)
        s.close()
        assert s.status == 400 and body["error"] == "compacted", body
        assert body["compact_revision"] == now + 1  # the first whole revision
    s = await watch(api, ld, f"key=w5/k&start_revision={now + 1}")
    try:
        r = await put(api, ld, "w5/k", "3")
        assert kvs(await s.events_until(r)) == [(r, "put", "w5/k", "3")]
    finally:
        s.close()


@contextmanager
def hub_limits(api: Api, nid: str, max_events: int, max_bytes: int) -> Iterator[None]:
    """Lower one node's watch queue limits for the watchers made meanwhile."""
    hub = api.services[nid].hub
    saved = hub.max_events, hub.max_bytes
    hub.max_events, hub.max_bytes = max_events, max_bytes
    try:
        yield
    finally:
        hub.max_events, hub.max_bytes = saved


def _small_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


async def test_a_reader_that_never_reads_is_cut_off_and_memory_stays_bounded(api: Api) -> None:
    ld = await api.leader_id()
    hub = api.services[ld].hub
    before = set(hub._sinks)  # noqa: SLF001 - which queue is this watcher's
    conn = aiohttp.TCPConnector(socket_factory=_small_socket)
    async with aiohttp.ClientSession(connector=conn) as http:
        with hub_limits(api, ld, max_events=64, max_bytes=64 << 10):
            resp = await http.get(api.urls[ld] + "/v1/watch?prefix=w6/")
        (sink,) = set(hub._sinks) - before  # noqa: SLF001
        assert resp.status == 200
        # ~60 KB per revision, unread: socket buffers fill, then the queue.
        big = "x" * (60 << 10)
        last = 0
        for i in range(400):
            last = await put(api, ld, f"w6/{i % 8}", big)
            assert sink.bytes <= 64 << 10 and len(sink.items) <= 64  # bounded all along
            if sink not in hub._sinks:  # noqa: SLF001
                break
        assert sink not in hub._sinks, "the slow watcher was never cut off"  # noqa: SLF001
        # Cut off: it left the hub, so later writes no longer queue for it.
        queued = len(sink.items)
        for i in range(5):
            last = await put(api, ld, f"w6/{i}", "after")
        assert len(sink.items) <= queued
        s = Stream(resp)
        assert (await s.line())["created"]
        got: list[int] = []
        for _ in range(1000):
            line = await s.line(10)
            if "error" in line:
                break
            if "events" in line:
                got.append(line["revision"])
        s.close()
    assert line["error"] == "watch_cut_off" and line["reason"] == "slow"
    resume = line["resume_revision"]
    assert got == list(range(got[0], resume)) and resume <= last  # no gap up to the cut
    s = await watch(api, ld, f"prefix=w6/&start_revision={resume}")
    try:
        rest = await s.events_until(last)
        assert [ln["revision"] for ln in rest] == list(range(resume, last + 1))
    finally:
        s.close()


async def test_a_watcher_on_a_follower_sees_every_event(api: Api) -> None:
    ld = await api.leader_id()
    f = await api.follower_id()
    s = await watch(api, f, "prefix=w7/")
    try:
        revs = [await put(api, ld, f"w7/{i}", str(i)) for i in range(5)]
        st, _, _ = await api.call(ld, "DELETE", "/v1/kv/w7/0")
        assert st == 200
        got = kvs(await s.events_until(revs[-1] + 1))
        assert got == [(r, "put", f"w7/{i}", str(i)) for i, r in enumerate(revs)] + [
            (revs[-1] + 1, "delete", "w7/0", "")
        ]
    finally:
        s.close()


def _drop(msg: object) -> None:
    """A lost message."""


def _not_to(lagger: str, send: Callable[[Any], None]) -> Callable[[Any], None]:
    """``send``, losing every message to ``lagger``."""

    def filtered(msg: Any) -> None:
        if msg.to != lagger:
            send(msg)

    return filtered


@contextmanager
def cut_away(api: Api, lagger: str) -> Iterator[None]:
    """Drop every message to and from ``lagger`` (it runs on, hearing nothing)."""
    saved: list[tuple[Node, Any, Any]] = []
    for nid, node in api.c.nodes.items():
        send, deliver = node.transport.send, node.deliver
        saved.append((node, send, deliver))
        if nid == lagger:
            node.transport.send = _drop  # type: ignore[method-assign]
            node.deliver = _drop  # type: ignore[method-assign]
        else:
            node.transport.send = _not_to(lagger, send)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for node, send, deliver in saved:
            node.transport.send = send  # type: ignore[method-assign]
            node.deliver = deliver  # type: ignore[method-assign]


async def test_a_snapshot_install_cuts_a_followers_watchers_off_and_resume_misses_nothing(
    api: Api,
) -> None:
    ld_node = await api.c.leader()
    ld = ld_node.id
    lagger = next(n for n in api.c.ids if n != ld)
    first = await put(api, ld, "w8/k", "0")
    s = await watch(api, lagger, f"prefix=w8/&start_revision={first}")
    try:
        assert kvs(await s.events_until(first)) == [(first, "put", "w8/k", "0")]
        with cut_away(api, lagger):
            revs = [await put(api, ld, f"w8/{i % 3}", str(i)) for i in range(1, 13)]
            await ld_node.snapshot()  # the leader's log no longer holds what lagger needs
            assert ld_node.status().snapshot_index > api.c.nodes[lagger].status().applied_index
        line = await s.line(15)
        while "progress" in line:
            line = await s.line(15)
        assert line["error"] == "watch_cut_off" and line["reason"] == "restored", line
        resume = line["resume_revision"]
        assert resume == first + 1  # nothing after `first` was delivered
    finally:
        s.close()
    s = await watch(api, lagger, f"prefix=w8/&start_revision={resume}")
    try:
        got = kvs(await s.events_until(revs[-1]))
        assert [r for r, *_ in got] == revs
        assert got[-1] == (revs[-1], "put", "w8/0", "12")
    finally:
        s.close()


async def test_an_http_shutdown_ends_open_watch_streams_with_stopping(tmp_path: Path) -> None:
    """The HTTP server stops before the service (as `liferaft serve` does):
    an idle watch must end then, with a line saying where to resume, not
    hold the shutdown until aiohttp's timeout."""
    own = Api(tmp_path, timeout=2.0)
    await own.start()
    try:
        ld = await own.leader_id()
        rev = await put(own, ld, "w9/k", "v")
        async with await watch(own, ld, f"key=w9/k&start_revision={rev}") as s:
            await s.events_until(rev)
            runners, own.runners = own.runners, []
            await asyncio.wait_for(asyncio.gather(*(r.cleanup() for r in runners)), 30)
            line = await s.line()
        assert line["error"] == "watch_cut_off" and line["reason"] == "stopping"
        assert line["resume_revision"] == rev + 1
    finally:
        await own.stop()
