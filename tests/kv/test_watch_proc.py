"""A watch stream served by a real ``liferaft serve`` process: events as
NDJSON lines, and on SIGTERM a last line telling the client where to resume
(the node cuts its watchers off before its client port closes, instead of
leaving their connections to the listener's grace period); an idle watch's
progress line comes after ``--watch-progress-interval``."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

from tests.kv.procs import http, kv_path, proc_cluster, wait_for


def test_sigterm_ends_each_watch_with_a_resume_line(tmp_path: Path) -> None:
    with proc_cluster(tmp_path, extra=["--watch-progress-interval", "0.2"]) as c:
        c.start_cluster(1)
        addr = c.addr("n1")
        lines: list[dict[str, object]] = []

        def read() -> None:
            url = f"http://{addr}/v1/watch?prefix=w/"
            with urllib.request.urlopen(url, timeout=30) as r:
                for raw in r:
                    lines.append(json.loads(raw))

        t = threading.Thread(target=read, daemon=True)
        t.start()
        wait_for(lambda: lines, 10, "the created line")
        code, body = http(addr, "PUT", kv_path("w/a"), {"value": "1"})
        assert code == 200
        wait_for(lambda: len(lines) >= 2, 10, "the put's event")
        assert lines[1] == {
            "revision": body["revision"],
            "events": [{"type": "put", "kv": {"key": "w/a", "value": "1",
                        "revision": body["revision"], "create_revision": body["revision"],
                        "version": 1}}],
        }  # fmt: skip
        # Idle now: a progress line well before the default 10 s.
        wait_for(lambda: len(lines) >= 3, 4, "a progress line after 0.2 s idle")
        assert lines[2] == {"progress": body["revision"]}
        c.stop("n1")
        t.join(10)
        assert not t.is_alive()
        last = lines[-1]
        assert last["error"] == "watch_cut_off" and last["reason"] == "stopping"
        assert last["resume_revision"] == body["revision"] + 1
