"""liferaft.client's watch against three in-process nodes: typed events
with prev_kv, progress notifications, a compacted start, and the resume:
the stream's connection is cut, then the node it moved to stops, while
puts go on; the stream sees every put exactly once, in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from liferaft.client import AsyncClient, Event, Item, Progress, RevisionCompactedError
from liferaft.harness.ports import free_port
from tests.kv.test_api import Api
from tests.kv.test_client_coord import started


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with started(tmp_path, progress_interval=0.3) as a:
        yield a


def addr(api: Api, nid: str) -> str:
    return api.urls[nid].removeprefix("http://")


class Proxy:
    """A TCP relay to one node that the test can cut: every connection
    through it is dropped (no error line, no goodbye) and new ones refused."""

    def __init__(self, target: str) -> None:
        self.host, port = target.rsplit(":", 1)
        self.target_port = int(port)
        self.port = free_port()
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection(self.host, self.target_port)
        self.writers += [w, uw]

        async def pipe(a: asyncio.StreamReader, b: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await a.read(65536):
                    b.write(data)
                    await b.drain()
            b.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in self.writers:
            w.transport.abort()


async def test_watch_resumes_across_a_cut_and_a_stopped_node(api: Api) -> None:
    leader = await api.leader_id()
    f1, f2 = (n for n in api.c.ids if n != leader)
    proxy = Proxy(addr(api, f1))
    await proxy.start()
    n = 60
    got: list[Event] = []
    acked: list[tuple[str, str, int]] = []
    async with (
        AsyncClient([addr(api, n) for n in api.c.ids], timeout=10) as writer,
        AsyncClient([proxy.addr, addr(api, f1), addr(api, f2)], timeout=10) as reader,
    ):
        start = (await writer.put("other", "x")).revision + 1

        async def write() -> None:
            for i in range(n):
                r = await writer.put(f"w/{i}", str(i))
                acked.append((f"w/{i}", str(i), r.revision))
                await asyncio.sleep(0.01)

        task = asyncio.create_task(write())
        try:
            async with asyncio.timeout(60):
                async with reader.watch(prefix="w/", start_revision=start) as w:
                    async for ev in w:
                        assert isinstance(ev, Event)
                        got.append(ev)
                        if len(got) == 15:
                            assert w.endpoint == proxy.addr
                            await proxy.cut()
                        if len(got) == 35:
                            # The stream moved to f1 itself: stop that node's
                            # watch hub and HTTP server (it ends the stream
                            # with a cut-off line).
                            assert w.endpoint == addr(api, f1)
                            await api.services[f1].close()
                            await api.runners[api.c.ids.index(f1)].cleanup()
                        if len(got) == n:
                            break
                    assert w.endpoint == addr(api, f2) and w.reconnects >= 2
                    print(f"reconnects={w.reconnects}")
            await task
        finally:
            task.cancel()
            await proxy.cut()
    assert [(e.key, e.value, e.revision) for e in got] == acked
    assert all(e.type == "put" and e.version == 1 for e in got)


async def test_events_progress_and_a_compacted_start(api: Api) -> None:
    eps = [addr(api, n) for n in api.c.ids]
    async with AsyncClient(eps, timeout=10) as c:
        r1 = await c.put("k", "1")
        r2 = await c.put("k", "2")
        await c.delete("k")
        async with asyncio.timeout(20):
            async with c.watch("k", start_revision=r1.revision, prev_kv=True,
                               progress=True) as w:  # fmt: skip
                seen = [await w.__anext__() for _ in range(3)]
                assert [(e.type, e.value, e.revision) for e in seen if isinstance(e, Event)] == [
                    ("put", "1", r1.revision), ("put", "2", r2.revision),
                    ("delete", "", r2.revision + 1),
                ]  # fmt: skip
                assert isinstance(seen[1], Event) and seen[1].prev == Item(
                    "k", "1", r1.revision, r1.revision, 1
                )
                # Idle now: the node says how far it is complete.
                p = await w.__anext__()
                assert isinstance(p, Progress) and p.revision >= r2.revision + 1
                assert w.next_revision == p.revision + 1
        await c.compact(r2.revision + 1)
        # A watch is served from the node's applied store, as in etcd: wait
        # until every replica has applied the compaction before asking.
        async with asyncio.timeout(10):
            svcs = api.services.values()
            while any(s.machine.compact_revision() <= r2.revision for s in svcs):
                await asyncio.sleep(0.01)
        with pytest.raises(RevisionCompactedError) as e:
            async with c.watch("k", start_revision=r1.revision) as w:
                await w.__anext__()
        assert e.value.compact_revision > r1.revision
