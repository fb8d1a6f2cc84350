"""Cross-site requests against a real ``liferaft serve`` with no token.

A web page the operator visits can make the browser send a "simple"
request (POST with a ``text/plain`` body: no preflight) to
``http://127.0.0.1:8001``.  Without a token nothing else stops it, and the
kv API reads any body as JSON, so such a page could write keys
(``/v1/txn``, etcd's ``/v3/kv/put``), move the leader, or add itself as a
learner whose client address is the page's own origin, after which CORS
(docs/console.md, "Trust") let it read every key.  Reproduced in Chromium
first; here the browser's requests are replayed with the headers it sends.

The node refuses any request but GET, HEAD and OPTIONS whose ``Origin`` is
neither a member's client origin nor the node's own (the Host it was asked
as).  Clients that send no Origin (curl, the CLI, etcd3gw) are unchanged.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kv.procs import ProcCluster, http_full, proc_cluster

EVIL = "http://127.0.0.1:1.evil.example"
# The browser's no-cors POST: a text/plain body, and its page's Origin.
SIMPLE = {"Content-Type": "text/plain;charset=UTF-8"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    with proc_cluster(tmp_path_factory.mktemp("csrf")) as c:
        c.start_cluster(1)
        yield c


def post(
    c: ProcCluster, path: str, body: Any, origin: str | None, host: str | None = None
) -> tuple[int, Any]:
    headers = dict(SIMPLE)
    if origin is not None:
        headers["Origin"] = origin
    if host is not None:
        headers["Host"] = host
    status, got, _ = http_full(c.addr("n1"), "POST", path, body, headers=headers)
    return status, got


def txn_put(key: str) -> dict[str, Any]:
    return {"compare": [], "success": [{"put": {"key": key, "value": "x"}}], "failure": []}


def etcd_put(key: str) -> dict[str, str]:
    return {"key": base64.b64encode(key.encode()).decode(), "value": "eA=="}


def test_a_foreign_page_cannot_write_or_add_a_member(cluster: ProcCluster) -> None:
    for origin in (EVIL, "null", "http://127.0.0.1:1", "HTTPS://" + cluster.addr("n1") + ".evil"):
        status, body = post(cluster, "/v1/txn", txn_put("csrf"), origin)
        assert status == 403, (origin, status, body)
        assert body["error"] == "forbidden_origin" and origin in body["message"]
    assert post(cluster, "/v3/kv/put", etcd_put("csrf"), EVIL)[0] == 403
    member = {
        "id": "evil",
        "peer_addr": "127.0.0.1:9",
        "client_addr": "127.0.0.1:1",
        "voter": False,
    }
    assert post(cluster, "/v1/members", member, EVIL)[0] == 403
    # Nothing was applied: no key, no member.
    assert cluster.get("n1", "csrf")[0] == 404
    assert "kvs" not in http_full(cluster.addr("n1"), "POST", "/v3/kv/range", etcd_put("csrf"))[1]
    assert "evil" not in {
        m["id"] for m in cluster.request("n1", "GET", "/v1/members")[1]["members"]
    }
    # A GET from that origin is answered (the browser keeps it from the page:
    # no CORS headers), as before.
    status, _, headers = http_full(
        cluster.addr("n1"), "GET", "/v1/status", headers={"Origin": EVIL}
    )
    assert status == 200 and "Access-Control-Allow-Origin" not in headers


def test_clients_without_origin_members_and_the_page_itself_still_write(
    cluster: ProcCluster,
) -> None:
    addr = cluster.addr("n1")
    assert post(cluster, "/v1/txn", txn_put("curl"), None)[0] == 200  # curl, the CLI
    assert post(cluster, "/v3/kv/put", etcd_put("gw"), None)[0] == 200  # etcd3gw
    assert post(cluster, "/v1/txn", txn_put("member"), f"http://{addr}")[0] == 200
    # The page opened as localhost:PORT writes to its own node (same origin).
    port = addr.rsplit(":", 1)[1]
    same = f"localhost:{port}"
    assert post(cluster, "/v1/txn", txn_put("same"), f"http://{same}", host=same)[0] == 200
    assert all(cluster.get("n1", k)[0] == 200 for k in ("curl", "member", "same"))
