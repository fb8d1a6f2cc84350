"""examples/config_service.py as three real processes: writes through any
node, a kill -9 of the leader, and every acknowledged write still there,
read linearizably from both survivors; bad requests get a clear 400."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from liferaft.harness import free_port

from .cluster import IDS, example_cluster


def _http(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:  # not listening (yet, or any more)
        return 0, None


def _put_until_acked(ports: list[int], key: str, value: Any) -> None:
    """PUT is idempotent, so an unknown outcome (504) or a refusal (503) is retried."""
    for attempt in range(100):
        status, _ = _http(ports[attempt % len(ports)], "PUT", f"/config/{key}", {"value": value})
        if status == 200:
            return
    raise AssertionError(f"PUT {key} never acknowledged")


def test_acknowledged_writes_survive_a_leader_kill(tmp_path: Path) -> None:
    http = {nid: free_port() for nid in IDS}
    with example_cluster("config_service.py", tmp_path) as c:
        for nid in IDS:
            c.start(nid, "--http", f"127.0.0.1:{http[nid]}")
        leader = c.wait("a leader", c.leader)
        assert _http(http[leader], "GET", "/status")[1]["role"] == "leader"
        acked: dict[str, Any] = {}
        for i, nid in enumerate(IDS * 2):  # through followers and the leader alike
            _put_until_acked([http[nid]], f"before.{i}", {"i": i, "via": nid})
            acked[f"before.{i}"] = {"i": i, "via": nid}

        assert _http(http[leader], "PUT", "/config/x", b"not json")[0] == 400
        assert _http(http[leader], "PUT", "/config/x", {"value": None})[0] == 400
        assert _http(http[leader], "GET", "/config/x?consistency=bogus")[0] == 400
        assert _http(http[leader], "GET", "/config/missing")[0] == 404

        c.kill(leader)
        survivors = [http[nid] for nid in IDS if nid != leader]
        for i in range(6):
            _put_until_acked(survivors, f"after.{i}", i)
            acked[f"after.{i}"] = i
        _put_until_acked(survivors, "before.0", "overwritten")
        acked["before.0"] = "overwritten"

        for port in survivors:  # linearizable reads: the last acknowledged values
            status, everything = _http(port, "GET", "/config")
            assert status == 200 and everything == acked
            assert _http(port, "GET", "/config/after.5") == (200, {"key": "after.5", "value": 5})
        status, gone = _http(survivors[0], "DELETE", "/config/after.5")
        assert status == 200 and gone["previous"] == 5
        assert _http(survivors[1], "GET", "/config/after.5")[0] == 404
        new_leader = c.wait("a new leader", c.leader)
        assert new_leader != leader
