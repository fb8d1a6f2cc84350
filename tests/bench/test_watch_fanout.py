"""bench/watch_fanout.py's stream checker, fed the servers' own wire format:
a regex that stopped matching liferaft-kv's watch lines (or etcd's
gateway's) would make the bench report every event lost, or worse, none
delivered and none lost.  No process is started and no timing asserted.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # the bench scripts import benchkit as top-level

import watch_fanout as wf  # noqa: E402

from liferaft.kv.mvcc.ops import KeyValue  # noqa: E402
from liferaft.kv.server_watch import _lines  # noqa: E402
from liferaft.kv.watch_types import EventKind, WatchEvent  # noqa: E402

HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk, as aiohttp frames each write of a stream."""
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def put(rev: int, n: int) -> bytes:
    key = f"bench/{n}".encode()
    kv = KeyValue(key, rev, rev, 1, b"v" * 100)
    return _lines([WatchEvent(rev, EventKind.PUT, key, kv)])


def shared(*ns: int) -> wf.Shared:
    sh = wf.Shared()
    for n in ns:
        sh.sent[n] = sh.acked[n] = 0.0
    return sh


def test_a_liferaft_stream_counts_each_revision_once_and_finds_gaps_and_repeats() -> None:
    sh = shared(1, 2, 3, 4)
    w = wf.Watcher(wf.LIFERAFT, "http://127.0.0.1:1", start=5, shared=sh)
    created = chunk(b'{"created":true,"start_revision":5,"revision":4}\n')
    stream = HEAD + created + chunk(put(5, 1)) + chunk(put(7, 2)) + chunk(put(6, 3))
    stream += chunk(put(8, 4) + b'{"progress":8}\n')
    # Delivered in pieces that cut lines and chunk headers anywhere.
    for i in range(0, len(stream), 37):
        w.data_received(stream[i : i + 37])
    assert w.created.is_set()
    assert (w.events, w.lost, w.dups, w.last) == (3, 1, 1, 8)  # 6 skipped, then seen late
    assert sh.from_send.n == sh.after_ack.n == 3
    assert sh.unmatched == 0


def test_a_liferaft_cut_off_line_closes_the_stream_with_its_resume_revision() -> None:
    w = wf.Watcher(wf.LIFERAFT, "http://127.0.0.1:1", start=5, shared=shared(1))
    cut = b'{"error":"watcher_too_slow","message":"m","resume_revision":6}\n'
    w.data_received(HEAD + chunk(put(5, 1)) + chunk(cut))
    assert (w.events, w._resume) == (1, 6)
    assert w.request().startswith(b"GET /v1/watch?prefix=bench/&start_revision=6 ")


def test_an_etcd_gateway_stream_is_read_by_its_mod_revisions() -> None:
    sh = shared(1, 2)

    def ev(rev: int, n: int) -> dict[str, object]:
        kv = {"key": base64.b64encode(f"bench/{n}".encode()).decode(),
              "create_revision": str(rev), "mod_revision": str(rev), "version": "1",
              "value": base64.b64encode(b"v").decode()}  # fmt: skip
        return {"kv": kv}

    # The gateway's order of fields (proto order); two revisions in one response.
    body = {"result": {"header": {"revision": "9"}, "events": [ev(8, 1), ev(9, 2)]}}
    w = wf.Watcher(wf.ETCD, "http://127.0.0.1:1", start=8, shared=sh)
    w.data_received(HEAD + chunk(json.dumps(body, separators=(",", ":")).encode() + b"\n"))
    assert (w.events, w.lost, w.dups, w.last, sh.unmatched) == (2, 0, 0, 9, 0)
    assert b'"start_revision": "10"' in w.request()  # a reopened stream resumes after 9


def test_a_refused_stream_is_failed_not_counted() -> None:
    w = wf.Watcher(wf.LIFERAFT, "http://127.0.0.1:1", start=1, shared=shared())
    w.data_received(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
    assert w.failed.startswith("HTTP/1.1 503") and not w.created.is_set()


def test_histogram_percentiles() -> None:
    h = wf.Histogram()
    for ms in range(1, 101):
        h.add(ms / 1000)
    p50, p99 = h.pct(0.5), h.pct(0.99)
    assert p50 is not None and 49.9 < p50 < 50.3
    assert p99 is not None and 98.9 < p99 < 99.3
    assert wf.Histogram().pct(0.5) is None
