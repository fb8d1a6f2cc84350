"""A real ``liferaft serve`` answers a write before its store commit (the
deferred commit: mvcc/store.py, "Deferred commits"), so every read after
the answer must still see it, on whichever thread it reads the store.  An
etcd Range reads in a thread: right after each put, it must return the
value just written.  With the planted bug ``kv-read-unsettled`` (that
thread reads the last commit without having the loop settle first) the
same test must see a stale Range, or it proves nothing."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from liferaft.etcd.planted import PLANT_ENV
from tests.kv.procs import ProcCluster, http, proc_cluster

ROUNDS = 30


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def put_then_range(c: ProcCluster, leader: str) -> list[tuple[str, Any]]:
    """``ROUNDS`` puts, each followed at once by a linearizable Range of its
    key; returns the rounds whose Range did not return the value just put."""
    addr = c.nodes[leader].client
    stale = []
    for i in range(ROUNDS):
        key, value = f"k{i % 3}", f"v{i}"
        code, _ = http(addr, "POST", "/v3/kv/put", {"key": b64(key), "value": b64(value)})
        assert code == 200, code
        code, body = http(addr, "POST", "/v3/kv/range", {"key": b64(key)})
        assert code == 200, (code, body)
        got = [base64.b64decode(kv["value"]).decode() for kv in body.get("kvs", [])]
        if got != [value]:
            stale.append((value, got))
    return stale


@pytest.mark.parametrize("bug", [None, "kv-read-unsettled"], ids=["clean", "planted"])
def test_a_range_right_after_a_put_sees_it(tmp_path: Path, bug: str | None) -> None:
    with proc_cluster(tmp_path) as c:
        if bug is not None:
            c.env = {**os.environ, PLANT_ENV: bug}
        leader = c.start_cluster(1)
        assert leader is not None
        stale = put_then_range(c, leader)
        if bug is None:
            assert stale == [], f"a Range missed the put acknowledged before it: {stale[:3]}"
        else:
            assert stale, "the planted stale read went unseen: this test proves nothing"
            assert "PLANTED BUG kv-read-unsettled" in c.nodes[leader].log_path.read_text()


@pytest.mark.parametrize("bug", [None, "kv-read-unsettled"], ids=["clean", "planted"])
def test_every_threaded_read_right_after_a_put_sees_it(tmp_path: Path, bug: str | None) -> None:
    """The other reads the etcd front makes in a thread, each right after a
    put answered from the open transaction: HashKV (its header is the
    revision it hashed), a lease's keys (TimeToLive with keys) and the
    lease list must all hold the put (and each misses it with the planted
    ``kv-read-unsettled``, or this proves nothing)."""
    with proc_cluster(tmp_path) as c:
        if bug is not None:
            c.env = {**os.environ, PLANT_ENV: bug}
        leader = c.start_cluster(1)
        assert leader is not None
        addr = c.nodes[leader].client
        missed = []
        for i in range(10):
            code, body = http(addr, "POST", "/v3/lease/grant", {"TTL": 60})
            assert code == 200, (code, body)
            lease = body["ID"]
            code, leases = http(addr, "POST", "/v3/lease/leases", {})
            assert code == 200, (code, leases)
            if lease not in [ls["ID"] for ls in leases.get("leases", [])]:
                missed.append(("leases", i))
            key = b64(f"k{i}")
            put = {"key": key, "value": key, "lease": lease}
            code, body = http(addr, "POST", "/v3/kv/put", put)
            assert code == 200, (code, body)
            put_rev = int(body["header"]["revision"])
            code, body = http(addr, "POST", "/v3/maintenance/hashkv", {})
            assert code == 200, (code, body)
            if int(body["header"]["revision"]) < put_rev:
                missed.append(("hashkv", i))
            code, body = http(addr, "POST", "/v3/lease/timetolive", {"ID": lease, "keys": True})
            assert code == 200, (code, body)
            if key not in body.get("keys", []):
                missed.append(("timetolive", i))
        if bug is None:
            assert missed == [], f"a threaded read missed the write answered before it: {missed}"
        else:
            assert {what for what, _ in missed} == {"leases", "hashkv", "timetolive"}, missed
