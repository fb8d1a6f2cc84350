"""The soak's etcd mode without processes: how etcd's answers become the
outcomes and shapes the checkers read (liferaft/chaos/etcd_api.py), and
the planted bugs' switch (liferaft/etcd/planted.py).  The soak itself runs
in tests/chaos/test_soak_etcd.py."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from liferaft.chaos.coord import RevLog
from liferaft.chaos.etcd_api import outcome, prefix_end, txn_request, watch_lines
from liferaft.chaos.streams import Watcher
from liferaft.etcd import errors, kv, registry, watch
from liferaft.etcd.planted import PLANT_ENV, PlantedBugError, plant, plant_from_env, planted
from liferaft.etcd.proto import kv_pb2 as mvccpb
from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.harness.ports import HOST, free_port
from liferaft.verify import check_revisions, check_watches
from liferaft.verify.rev_history import put


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


U = grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("code", "details", "status"),
    [
        (U, "etcdserver: no leader", 503),  # never proposed: fail
        (U, "etcdserver: server stopped", 503),
        (U, "etcdserver: unhealthy cluster", 503),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "etcdserver: too many requests", 503),
        (U, "etcdserver: request timed out", 504),  # proposed: may apply
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", 0),  # no answer: may apply
        (U, "Socket closed", 0),  # the transport's: may have been sent
        (U, "failed to connect to all addresses", 0),
        (grpc.StatusCode.CANCELLED, "", 0),
        (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found", 404),
        # No status of the contract: unexpected, and the run fails.
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "Received message larger than max", 600),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided", 600),
        (grpc.StatusCode.UNKNOWN, "KeyError: 'x'", 600),
    ],
)
def test_grpc_statuses_become_the_contracts_outcomes(
    code: grpc.StatusCode, details: str, status: int
) -> None:
    st, body = outcome(_rpc_error(code, details))
    assert st == status
    if status == 404:
        assert body == {"error": "lease_not_found"}


def test_a_timed_out_put_is_info_and_a_leaderless_one_is_fail_in_the_history() -> None:
    """What the revision checker then does with them: the history keeps the
    timed-out write as one that may still apply; the refused one is dropped."""
    log = RevLog()
    for i, (code, msg) in enumerate([(U, errors.TIMEOUT.message), (U, errors.NO_LEADER.message),
                                     (grpc.StatusCode.DEADLINE_EXCEEDED, "")]):  # fmt: skip
        st, body = outcome(_rpc_error(code, msg))
        log.write(1, float(i), st, body, "put", **put("a", f"v{i}"))
    assert [o.status for o in log.history] == ["info", "fail", "info"]
    assert not log.unexpected


def test_prefix_ends_are_etcds() -> None:
    assert prefix_end(b"x/") == b"x0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"") == b"\0" and prefix_end(b"\xff\xff") == b"\0"


def test_a_v1_txn_body_becomes_etcds_txn() -> None:
    req = txn_request({
        "compare": [{"key": "x/0", "target": "mod_revision", "op": "=", "value": 7},
                    {"key": "x/1", "target": "value", "op": "!=", "value": "v"}],
        "success": [{"put": {"key": "x/0", "value": "a"}}, {"delete": {"key": "x/2"}}],
        "failure": [{"range": {"key": "x/0"}}],
    })  # fmt: skip
    c0, c1 = req.compare
    assert (c0.key, c0.target, c0.result, c0.mod_revision) == (b"x/0", pb.Compare.MOD,
                                                               pb.Compare.EQUAL, 7)  # fmt: skip
    assert (c1.target, c1.result, c1.value) == (pb.Compare.VALUE, pb.Compare.NOT_EQUAL, b"v")
    assert req.success[0].request_put.value == b"a"
    assert req.success[1].request_delete_range.key == b"x/2"
    assert req.failure[0].request_range.key == b"x/0"


def _kv(key: str, value: str, mod: int) -> mvccpb.KeyValue:
    return mvccpb.KeyValue(key=key.encode(), value=value.encode(), mod_revision=mod,
                           create_revision=mod, version=1)  # fmt: skip


def _header(rev: int) -> pb.ResponseHeader:
    return pb.ResponseHeader(revision=rev)


def test_watch_responses_become_one_line_per_revision() -> None:
    # "now": the created header names the revision the watch starts after.
    assert watch_lines(pb.WatchResponse(header=_header(4), created=True), 0) == [
        {"created": True, "start_revision": 5}]  # fmt: skip
    # A resume names its own start.
    assert watch_lines(pb.WatchResponse(header=_header(30), created=True), 9)[0][
        "start_revision"] == 9  # fmt: skip
    # A replay batches revisions in one response: split, each whole.
    replay = pb.WatchResponse(header=_header(40), events=[
        mvccpb.Event(type=mvccpb.Event.PUT, kv=_kv("x/a", "1", 5)),
        mvccpb.Event(type=mvccpb.Event.PUT, kv=_kv("x/b", "2", 5), prev_kv=_kv("x/b", "0", 3)),
        mvccpb.Event(type=mvccpb.Event.DELETE, kv=_kv("x/a", "", 7))])  # fmt: skip
    lines = watch_lines(replay, 5)
    assert [(d["revision"], [e["type"] for e in d["events"]]) for d in lines] == [
        (5, ["put", "put"]), (7, ["delete"])]  # fmt: skip
    assert "prev_kv" not in lines[0]["events"][0]
    assert lines[0]["events"][1]["prev_kv"]["value"] == "0"
    # No events: progress up to the header's revision.
    assert watch_lines(pb.WatchResponse(header=_header(41), watch_id=-1), 5) == [{"progress": 41}]
    # Canceled for compaction (at create, or later), or for another reason.
    compacted = watch_lines(pb.WatchResponse(header=_header(50), created=True, canceled=True,
                                             compact_revision=12), 3)  # fmt: skip
    assert compacted == [{"created": True, "start_revision": 3},
                         {"error": "compacted", "compact_revision": 12}]  # fmt: skip
    other = watch_lines(pb.WatchResponse(canceled=True, cancel_reason="mvcc: boom"), 3)
    assert other == [{"error": "canceled: mvcc: boom"}]


def test_etcd_watch_lines_feed_the_watcher_and_a_skipped_revision_is_a_gap() -> None:
    """Through the Watcher, as the soak runs them: a stream resumed at 7
    after revision 5 never saw 6, and the checker says so."""
    log = RevLog()
    for i, rev in enumerate((5, 6, 7)):
        log.write(1, float(i), 200, {"revision": rev}, "put", **put(f"x/{i}", f"v{i}"))
    w = Watcher(None, 1, "x/", random.Random(1), prev_kv=False)  # type: ignore[arg-type]
    responses = [(pb.WatchResponse(header=_header(4), created=True), 0),
                 (pb.WatchResponse(header=_header(5), events=[
                     mvccpb.Event(type=mvccpb.Event.PUT, kv=_kv("x/0", "v0", 5))]), 0),
                 (pb.WatchResponse(header=_header(7), created=True), 7),
                 (pb.WatchResponse(header=_header(7), events=[
                     mvccpb.Event(type=mvccpb.Event.PUT, kv=_kv("x/2", "v2", 7))]), 7)]  # fmt: skip
    for resp, start in responses:
        for line in watch_lines(resp, start):
            w.line(line)
    assert w.start == 5 and w.last == 7
    rep = check_revisions(log.history)
    assert check_watches([w.stream()], rep.changes).gaps == 1


def test_planting_is_explicit_and_undone() -> None:
    range_row = next(c for c in registry.all_calls() if c.method == "Range")
    open_, events = watch.WatchStream._open, watch.WatchStream._events
    assert plant_from_env({}) is None and plant_from_env({PLANT_ENV: ""}) is None
    with pytest.raises(PlantedBugError, match="names no planted bug"):
        plant("etcd-typo")
    with planted("etcd-range-stale"):
        row = next(c for c in registry.all_calls() if c.method == "Range")
        assert row.handler is not kv.range_ and row.paths == range_row.paths
    with planted("etcd-watch-skip"):
        assert watch.WatchStream._open is not open_ and watch.WatchStream._events is not events
    assert next(c for c in registry.all_calls() if c.method == "Range") == range_row
    assert watch.WatchStream._open is open_ and watch.WatchStream._events is events


def test_a_node_asked_for_an_unknown_planted_bug_refuses_to_start(tmp_path: Path) -> None:
    """A typo must not pass for a clean run: one error line, no node."""
    import os

    peer = f"{HOST}:{free_port()}"
    cmd = [sys.executable, "-m", "liferaft.cli", "serve", "--id", "n1", "--data-dir",
           str(tmp_path / "d"), "--peer-addr", peer, "--client-addr", f"{HOST}:{free_port()}",
           "--initial-cluster", f"n1={peer}"]  # fmt: skip
    env = {**os.environ, PLANT_ENV: "etcd-wach-skip"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("Error:") and "etcd-wach-skip" in lines[-1], r.stderr
    assert "Traceback" not in r.stderr
