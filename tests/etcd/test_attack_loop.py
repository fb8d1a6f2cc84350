"""A big Range must not hold the node's event loop (every client's calls
and the node's own heartbeats run on it).

Found by the adversarial review (a real node, 20,000 keys of 1 KB): a gRPC
Range of them held the loop for ~300 ms while its answer was built, the
JSON gateway's for ~700 ms while it was turned into JSON (measured by a
/healthz probe).  Both are built in a worker thread now."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from liferaft.etcd import gateway
from liferaft.etcd import kv as etcd_kv
from liferaft.etcd.context import EtcdContext
from liferaft.etcd.proto import rpc_pb2 as pb
from tests.kv.one_node import OneNode


async def test_a_range_answer_is_built_and_made_json_off_the_loop(
    tmp_path: Path, monkeypatch: Any
) -> None:
    on_loop: list[tuple[str, bool]] = []

    def spy(name: str, real: Any) -> Any:
        def call(*a: Any) -> Any:
            on_loop.append((name, threading.current_thread() is threading.main_thread()))
            return real(*a)

        return call

    monkeypatch.setattr(etcd_kv, "range_response", spy("range", etcd_kv.range_response))
    monkeypatch.setattr(gateway, "to_json", spy("json", gateway.to_json))
    monkeypatch.setattr(gateway, "JSON_OFF_LOOP", 100)
    one = OneNode(tmp_path)
    await one.start()
    try:
        assert one.server is not None
        ctx = EtcdContext(one.server.service, "test")
        for i in range(5):
            await etcd_kv.put(ctx, pb.PutRequest(key=b"r/%d" % i, value=b"x" * 100))
        got = await etcd_kv.range_(ctx, pb.RangeRequest(key=b"r/", range_end=b"r0"))
        assert got.count == 5 and len(got.kvs) == 5
        body = await gateway._json_response(got)
        assert isinstance(body, web.Response) and body.text is not None
        assert gateway.to_json(got) == json.loads(body.text)
    finally:
        await one.stop()
    assert ("range", False) in on_loop and ("json", False) in on_loop
    assert ("range", True) not in on_loop
