"""``liferaft bench kv``: the load generator against a real 1-node liferaft-kv
process, and the etcd adapter's request encoding (no etcd needed).

No timing is asserted (docs/architecture.md: speed is measured in benchmarks): only that
the generator did work and saw no errors.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.harness.serve import ServeCluster
from liferaft.kv.bench import (
    Config,
    EtcdAdapter,
    LiferaftAdapter,
    bench_value,
    format_table,
    parse_endpoints,
    run_bench,
)


@pytest.fixture
def one_node(tmp_path: Path) -> Iterator[str]:
    """A 1-node liferaft-kv process; its client HOST:PORT.  Ended by PID
    whatever the test did (the one process harness)."""
    with ServeCluster(tmp_path, new_session=True) as c:
        c.add_nodes(1)
        c.start_all()
        yield c.nodes["n1"].client


async def test_load_generator_against_one_node(one_node: str, tmp_path: Path) -> None:
    adapter = LiferaftAdapter([one_node])
    cfg = Config(connections=(1, 4), seconds=0.2, warmup=0.05, keys=50)
    res = await run_bench(adapter, cfg, say=lambda _: None)
    assert adapter.leader == f"http://{one_node}"
    assert adapter.leader_name == "n1"
    assert [(s.op, s.connections) for s in res.steps] == [
        ("write", 1),
        ("write", 4),
        ("linearizable", 1),
        ("linearizable", 4),
        ("stale", 1),
        ("stale", 4),
    ]
    for s in res.steps:
        assert s.ok > 0, s
        assert s.rate > 0
        assert s.errors == {}, s
        assert s.p50_ms is not None and s.p99_ms is not None and s.p50_ms <= s.p99_ms
    table = format_table(res)
    assert "| linearizable | 4 |" in table and "reads spread over all 1 endpoints" in table
    json.dumps(res.to_json())  # serializable as is (the --json output)


def test_etcd_adapter_encoding() -> None:
    a = EtcdAdapter(["127.0.0.1:2379", "http://127.0.0.1:22379/"], value_size=100, prefix="/v3")
    assert a.endpoints == ["http://127.0.0.1:2379", "http://127.0.0.1:22379"]
    a.leader = a.endpoints[1]

    w = a.write(7)
    assert w.method == "POST"
    assert str(w.url) == "http://127.0.0.1:22379/v3/kv/put"
    assert w.headers["Content-Type"] == "application/json"
    assert w.body is not None
    body = json.loads(w.body)
    assert set(body) == {"key", "value"}
    assert base64.b64decode(body["key"]) == b"bench/7"
    assert base64.b64decode(body["value"]) == bench_value(100).encode()
    assert len(base64.b64decode(body["value"])) == 100

    lin = a.read(3, a.endpoints[0], stale=False)
    assert (lin.method, str(lin.url)) == ("POST", "http://127.0.0.1:2379/v3/kv/range")
    assert lin.body is not None
    assert json.loads(lin.body) == {"key": base64.b64encode(b"bench/3").decode()}

    stale = a.read(3, a.endpoints[0], stale=True)
    assert stale.body is not None
    assert json.loads(stale.body) == {
        "key": base64.b64encode(b"bench/3").decode(),
        "serializable": True,
    }

    # etcd answers 200 for a missing key too: a read counts only with kvs.
    assert a.read_ok(200, b'{"header":{},"kvs":[{"key":"YQ=="}],"count":"1"}')
    assert not a.read_ok(200, b'{"header":{"revision":"5"}}')
    assert not a.read_ok(503, b'{"error":"etcdserver: leader changed","code":14}')
    assert a.write_ok(200, b'{"header":{"revision":"6"}}')
    assert not a.write_ok(500, b'{"error":"x","code":2}')

    beta = EtcdAdapter(["127.0.0.1:2379"], prefix="/v3beta/")
    beta.leader = beta.endpoints[0]
    assert str(beta.write(0).url) == "http://127.0.0.1:2379/v3beta/kv/put"
    with pytest.raises(ValueError):
        EtcdAdapter(["127.0.0.1:2379"], prefix="v3")


def test_liferaft_adapter_requests() -> None:
    a = LiferaftAdapter(["127.0.0.1:8001"], value_size=100, token="s3cret")
    a.leader = a.endpoints[0]
    w = a.write(12)
    assert (w.method, str(w.url)) == ("PUT", "http://127.0.0.1:8001/v1/kv/bench/12")
    assert w.body is not None and json.loads(w.body) == {"value": bench_value(100)}
    assert w.headers["Authorization"] == "Bearer s3cret"
    r = a.read(12, a.endpoints[0], stale=True)
    assert (r.method, str(r.url)) == (
        "GET",
        "http://127.0.0.1:8001/v1/kv/bench/12?consistency=stale",
    )
    assert r.body is None
    assert parse_endpoints(" 127.0.0.1:1, https://h:2/ ") == ["http://127.0.0.1:1", "https://h:2"]
