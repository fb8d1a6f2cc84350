"""The gRPC rows of bench/kv_etcd_api.py: h2load counts a gRPC error as a
success (it is an HTTP 200 with the status in its trailers), so the step
must find the errors itself, from the DATA bytes (reads) and the store
revision (writes).  Here a fake etcd KV server fails every third call with
a gRPC error, and the step must report those as errors, not as throughput.
No timing is asserted.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from liferaft.etcd.proto import kv_pb2 as mvccpb
from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.harness.ports import free_port
from liferaft.harness.procs import ProcessGroup
from tests.conftest import require_tool

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # the bench scripts import benchkit as top-level

from benchkit import h2load_grpc as h2  # noqa: E402
from kv_etcd_api import LiferaftV3Adapter  # noqa: E402

# A real h2load 1.52 summary (the lines the parser reads), from a step
# against etcd 3.4 in which every Range failed with INVALID_ARGUMENT.
OUTPUT = """\
finished in 1.00s, 3.00 req/s, 72B/s
requests: 3 total, 4 started, 3 done, 3 succeeded, 1 failed, 2 errored, 0 timeout
status codes: 3 2xx, 0 3xx, 5 4xx, 0 5xx
traffic: 216B (216) total, 69B (69) headers (space savings 75.27%), 0B (0) data
"""


def test_parse_output_reads_done_failures_and_data_bytes() -> None:
    c = h2.parse_output(OUTPUT)
    assert (c.done, c.succeeded, c.failed, c.data_bytes) == (3, 3, 5, 0)
    assert c.errors_seen == 5
    with pytest.raises(h2.H2loadError):
        h2.parse_output("-D: value error 0.3")


class FakeKV:
    """Range and Put; while measuring (the step's measured run, not its
    probes), every third call fails, and calls are counted."""

    def __init__(self) -> None:
        self.revision = 1
        self.calls = {"ok": 0, "failed": 0}
        self.measuring = False

    def start(self) -> None:  # the step's on_measure hook
        self.measuring = True

    def stop(self) -> None:
        self.measuring = False

    async def _maybe_fail(self, context: aio.ServicerContext) -> None:
        if not self.measuring:
            return
        n = self.calls["ok"] + self.calls["failed"]
        if n % 3 == 2:
            self.calls["failed"] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: fake failure")
        self.calls["ok"] += 1

    async def range(self, req: bytes, context: aio.ServicerContext) -> bytes:
        r = pb.RangeRequest.FromString(req)
        await self._maybe_fail(context)
        resp = pb.RangeResponse(count=1)
        resp.header.revision = self.revision
        resp.kvs.append(mvccpb.KeyValue(key=r.key, value=b"v" * 100, mod_revision=1))
        out: bytes = resp.SerializeToString()
        return out

    async def put(self, req: bytes, context: aio.ServicerContext) -> bytes:
        await self._maybe_fail(context)
        self.revision += 1
        resp = pb.PutResponse()
        resp.header.revision = self.revision
        out: bytes = resp.SerializeToString()
        return out


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeKV, str]]:
    kv = FakeKV()
    server = aio.server()
    handlers = {
        "Range": grpc.unary_unary_rpc_method_handler(kv.range),
        "Put": grpc.unary_unary_rpc_method_handler(kv.put),
    }
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("etcdserverpb.KV", handlers)]
    )
    addr = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(addr)
    await server.start()
    try:
        yield kv, addr
    finally:
        await server.stop(0)


@pytest.mark.parametrize("op", ["linearizable", "write"])
async def test_grpc_errors_behind_http_200_are_counted_as_errors(
    fake: tuple[FakeKV, str], op: str, tmp_path: Path
) -> None:
    binary = require_tool("h2load")
    kv, addr = fake
    conns = 4
    with ProcessGroup() as group:
        # A step without failures first, by another runner in the same
        # directory: the second step must read its own output, not this one's.
        await h2.H2load(binary, group, tmp_path).step(op, [addr], conns, 1.0, 0.0)
        assert kv.calls == {"ok": 0, "failed": 0}
        runner = h2.H2load(binary, group, tmp_path)
        step = await runner.step(op, [addr], conns, 1.0, 0.0, on_measure=kv)
    ok, failed = kv.calls["ok"], kv.calls["failed"]
    assert failed > 0 and ok > 0
    # The server's own counts, within the calls in flight when h2load stopped.
    assert abs(step.errors - failed) <= conns, (step, kv.calls)
    assert abs(step.ok - ok) <= conns, (step, kv.calls)
    assert step.ok < ok + failed  # the failures are not in the rate
    assert step.rate == step.ok / 1
    assert len(step.lat) >= step.ok  # one latency per request h2load finished
    assert step.gen_cpu > 0


async def test_liferaft_v3_adapter_sends_the_etcd_gateway_requests() -> None:
    # The JSON gateway rows: the same request bytes for both systems, so
    # only discovery differs.
    from liferaft.kv.bench import EtcdAdapter

    lf = LiferaftV3Adapter(["127.0.0.1:1"])
    et = EtcdAdapter(["127.0.0.1:1"], prefix="/v3")
    lf.leader = et.leader = "http://127.0.0.1:1"
    assert lf.write(7) == et.write(7)
    assert lf.read(7, lf.leader, False) == et.read(7, et.leader, False)
    assert str(lf.write(7).url) == "http://127.0.0.1:1/v3/kv/put"
