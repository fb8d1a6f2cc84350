"""etcd's Watch and Lease services through two etcd client libraries from
PyPI against a 3-node liferaft-kv: etcd3gw (the JSON gateway on the client
port) and aetcd (asyncio gRPC).  Each test uses keys under its own prefix."""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import aetcd
import etcd3gw
import pytest
from etcd3gw.watch import Watcher as GwWatcher

from tests.kv.procs import ProcCluster


def gw(cluster: ProcCluster) -> etcd3gw.Etcd3Client:
    host, port = next(iter(cluster.nodes.values())).client.rsplit(":", 1)
    return etcd3gw.Etcd3Client(host=host, port=int(port), timeout=10, api_path=None)


def grpc_addr(cluster: ProcCluster, i: int = 0) -> tuple[str, int]:
    host, port = list(cluster.nodes.values())[i].grpc.rsplit(":", 1)
    return host, int(port)


# -- etcd3gw (JSON gateway) ---------------------------------------------------------------


class GwEvents:
    """etcd3gw's watch, its events read with a bounded wait."""

    def __init__(self, c: etcd3gw.Etcd3Client, key: str, **kw: Any) -> None:
        self.q: queue.Queue[dict[str, Any]] = queue.Queue()
        self.w = GwWatcher(c, key, self.q.put, **kw)

    def take(self, n: int, timeout: float = 10.0) -> list[tuple[str, str, str | None]]:
        """n events as (type, key, value) (etcd omits type for PUT, its 0)."""
        out = []
        for _ in range(n):
            ev = self.q.get(timeout=timeout)
            kv = ev["kv"]
            out.append((ev.get("type", "PUT"), kv["key"].decode(), kv.get("value", b"").decode()))
            if "prev_kv" in ev:
                out[-1] += (ev["prev_kv"]["value"],)  # type: ignore[assignment]
        return out


def test_etcd3gw_watch_watch_prefix_and_cancel(etcd_cluster: ProcCluster) -> None:
    c = gw(etcd_cluster)
    rev = int(c.put("gww/k", "0") and c.get("gww/k", metadata=True)[0][1]["mod_revision"])
    w = GwEvents(c, "gww/k", start_revision=rev + 1)
    p = GwEvents(c, "gww/", range_end="gww0", start_revision=rev + 1, prev_kv=True)
    try:
        c.put("gww/k", "1")
        c.put("gww/j", "x")
        c.delete("gww/k")
        assert w.take(2) == [("PUT", "gww/k", "1"), ("DELETE", "gww/k", "")]
        got = p.take(3)
        assert [g[:3] for g in got] == [
            ("PUT", "gww/k", "1"), ("PUT", "gww/j", "x"), ("DELETE", "gww/k", "")
        ]  # fmt: skip
    finally:
        w.w.stop()
        p.w.stop()
    # The client's own watch_prefix and its cancel: the iterator ends.
    events, cancel = c.watch_prefix("gww/", start_revision=rev + 1)
    first = next(events)
    assert first["kv"]["key"] == b"gww/k" and first["kv"]["value"] == b"1"
    cancel()
    assert list(events) == []


def test_etcd3gw_lease_refresh_keys_revoke(etcd_cluster: ProcCluster) -> None:
    c = gw(etcd_cluster)
    lease = c.lease(ttl=30)
    assert lease.id > 0
    c.put("gwl/a", "1", lease=lease)
    c.put("gwl/b", "2", lease=lease)
    assert lease.refresh() == 30
    assert 25 <= lease.ttl() <= 30
    assert sorted(lease.keys()) == [b"gwl/a", b"gwl/b"]
    assert lease.revoke() is True
    assert c.get_prefix("gwl/") == []
    assert lease.ttl() == -1  # gone, as etcd says
    assert lease.refresh() == -1  # TTL 0 is left out of etcd's JSON: etcd3gw says -1
    with pytest.raises(etcd3gw.exceptions.Etcd3Exception) as e:
        lease.revoke()
    assert "etcdserver: requested lease not found" in (e.value.detail_text or "")
    assert str(e.value) == "Not Found"  # the HTTP reason: 404, as etcd's gateway


# -- aetcd (gRPC) --------------------------------------------------------------------------


async def test_aetcd_watch_prefix_prev_kv_and_cancel(etcd_cluster: ProcCluster) -> None:
    host, port = grpc_addr(etcd_cluster, 1)
    async with aetcd.Client(host=host, port=port, timeout=10) as c:
        rev = (await c.put(b"aew/a", b"0")).header.revision
        watch = await c.watch_prefix(b"aew/", start_revision=rev + 1, prev_kv=True)
        await c.put(b"aew/a", b"1")
        await c.delete(b"aew/a")
        got = []

        async def read() -> None:  # noqa: E306
            async for ev in watch:
                got.append((ev.kind, ev.kv.key, ev.kv.value, ev.prev_kv and ev.prev_kv.value))
                if len(got) == 2:
                    return

        await asyncio.wait_for(read(), 10)
        assert got == [("PUT", b"aew/a", b"1", b"0"), ("DELETE", b"aew/a", b"", b"1")]
        await watch.cancel()
        # A compacted start is the client's RevisionCompactedError.
        await c.compact(rev + 1)
        with pytest.raises(aetcd.exceptions.RevisionCompactedError) as e:

            async def replay() -> None:  # noqa: E306
                async for _ in await c.watch(b"aew/a", start_revision=1):
                    pass

            await asyncio.wait_for(replay(), 10)
        assert e.value.compacted_revision == rev + 2  # the first revision kept


async def test_aetcd_lease(etcd_cluster: ProcCluster) -> None:
    host, port = grpc_addr(etcd_cluster, 2)
    async with aetcd.Client(host=host, port=port, timeout=10) as c:
        lease = await c.lease(30)
        assert lease.ttl == 30
        await c.put(b"ael/k", b"v", lease=lease)
        assert (await lease.refresh()).TTL == 30
        assert await lease.granted_ttl() == 30
        assert 25 <= await lease.remaining_ttl() <= 30
        assert await lease.keys() == [b"ael/k"]
        leases = await c.leasestub.LeaseLeases(aetcd.rpc.LeaseLeasesRequest())
        assert lease.id in [s.ID for s in leases.leases]
        await lease.revoke()
        assert await c.get(b"ael/k") is None
        assert await lease.remaining_ttl() == -1
        assert (await lease.refresh()).TTL == 0
        with pytest.raises(aetcd.exceptions.ClientError) as e:
            await lease.revoke()
        assert "requested lease not found" in str(e.value)
        # An explicit id that is live: "lease already exists".
        mine = await c.lease(30, lease_id=lease.id + 1000)
        assert mine.id == lease.id + 1000
        # aetcd knows etcd's text and code for it:
        with pytest.raises(aetcd.exceptions.DuplicateLeaseError):
            await c.lease(30, lease_id=mine.id)
        with pytest.raises(aetcd.exceptions.ClientError) as e:
            await c.lease(10**10)
        assert "too large lease TTL" in str(e.value)
        await mine.revoke()
