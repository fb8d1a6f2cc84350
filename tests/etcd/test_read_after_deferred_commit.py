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
