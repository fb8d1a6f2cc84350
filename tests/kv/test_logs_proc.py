"""What an operator sees in the log of real ``liferaft serve`` processes
through one failover (kill -9 of the leader), in both log formats, with the
access log on: every line parses, the change lines name their reason, and
the bearer token appears nowhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.kv.logparse import parse_json, parse_logfmt
from tests.kv.procs import ProcCluster, http, kv_path, wait_for

TOKEN = "tok-3f9c2a7e-never-logged"


def _records(path: Path, fmt: str) -> list[dict[str, Any]]:
    parse = parse_logfmt if fmt == "text" else parse_json
    # "---- start ..." lines are the harness's own marks between lives.
    lines = path.read_text().splitlines()
    return [parse(line) for line in lines if line and not line.startswith("---- ")]


def test_a_failover_in_the_logs_of_both_formats(tmp_path: Path) -> None:
    fmts = {"n1": "text", "n2": "json", "n3": "json"}
    with ProcCluster(tmp_path, token=TOKEN) as c:
        for nid, fmt in fmts.items():
            c.add(nid, flags=["--log-format", fmt, "--access-log"])
        c.start_all()
        old = c.wait_leader()
        assert http(c.addr(old), "PUT", kv_path("k"), {"value": "v"}, token=TOKEN)[0] == 200
        c.kill(old)
        new = c.wait_leader(not_=old)
        ok = http(c.addr(new), "PUT", kv_path("k") + "?token=q-secret", {"value": "w"},
                  token=TOKEN)  # fmt: skip
        assert ok[0] == 200, ok
        logs = {nid: c.nodes[nid].log for nid in fmts}

        def took_over() -> list[dict[str, Any]] | None:
            recs = _records(logs[new], fmts[new])
            won = [r for r in recs if r.get("role") == "leader" and r.get("node") == new]
            return won or None

        won = wait_for(took_over, 10, f"{new}'s 'became leader' line")
        assert won[-1]["reason"] == "won the election", won[-1]
        assert str(won[-1]["term"]).isdigit() and "became leader in term" in won[-1]["msg"]
        for nid, fmt in fmts.items():
            text = logs[nid].read_text()
            assert TOKEN not in text and "q-secret" not in text, nid
            recs = _records(logs[nid], fmt)  # every line parses
            assert all(r["node"] == nid and r["level"] for r in recs)
        access = [r for r in _records(logs[new], fmts[new]) if r["logger"] == "liferaft.access"]
        put = [r for r in access if r["method"] == "PUT" and "token=REDACTED" in r.get("query", "")]
        assert put and int(put[-1]["status"]) == 200 and put[-1]["path"] == "/v1/kv/k", access
        assert float(put[-1]["duration"]) >= 0 and put[-1]["remote"] == "127.0.0.1"
