"""liferaft.client's coordination calls against three in-process nodes:
reads at a revision, ranges pinned at one revision across pages,
transactions through the typed builders, compaction, and leases (the calls,
and the keeper whose loss is observable)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.client import (
    AsyncClient,
    Compare,
    Deleted,
    Item,
    NoSuchLeaseError,
    Op,
    Page,
    RevisionCompactedError,
    WriteResult,
)
from tests.kv.test_api import Api
from tests.kv.test_client import endpoints


@contextlib.asynccontextmanager
async def started(tmp: Path, **kw: Any) -> AsyncIterator[Api]:
    """An :class:`Api` cluster with these service settings, stopped after."""
    a = Api(tmp, timeout=2.0, **kw)
    await a.start()
    try:
        yield a
    finally:
        await a.stop()


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    # A small page budget so that a range of a few keys takes several pages.
    async with started(tmp_path, max_list_bytes=300) as a:
        yield a


async def test_reads_ranges_txn_and_compaction(api: Api) -> None:
    async with AsyncClient(endpoints(api), timeout=5) as c:
        r1 = await c.put("k", "one")
        r2 = await c.put("k", "two")
        old = await c.get("k", revision=r1.revision)
        assert old == Item("k", "one", r1.revision, r1.revision, 1)
        assert (await c.get("k")) == Item("k", "two", r2.revision, r1.revision, 2)
        assert await c.get("k", revision=r1.revision - 1) is None

        for i in range(8):
            await c.put(f"p/{i}", "x" * 40)
        # Pinned: keys written between pages are not in the listing, and
        # the later pages are read at the first one's revision.
        first = await c.range(prefix="p/", limit=3)
        assert [i.key for i in first.items] == ["p/0", "p/1", "p/2"] and first.count == 8
        pinned = first.read_revision
        await c.put("p/45", "late")
        page = await c.range(prefix="p/", revision=pinned)
        assert [i.key for i in page.items] == [f"p/{i}" for i in range(8)]
        assert page.read_revision == pinned and page.revision > pinned
        now = await c.range(prefix="p/")
        assert len(now.items) == 9 and now.read_revision > pinned
        assert (await c.range(prefix="p/", count_only=True)) == Page([], 9, now.read_revision,
                                                                     now.read_revision)
        ko = await c.range("p/3", end="p/5", keys_only=True)
        assert [(i.key, i.value) for i in ko.items] == [("p/3", ""), ("p/4", ""), ("p/45", "")]
        items, rev = await c.list("p/", limit=2)
        assert [i.key for i in items] == ["p/0", "p/1"] and rev >= now.read_revision

        ok = await c.txn(
            [Compare.value("k") == "two", Compare.version("k") > 1],
            success=[Op.put("k", "three", prev_kv=True), Op.delete(prefix="p/"), Op.get("k")],
            failure=[Op.get("k")],
        )
        assert ok.succeeded
        put, deleted, got = ok.results
        assert isinstance(put, WriteResult) and put.prev is not None and put.prev.value == "two"
        assert isinstance(deleted, Deleted) and deleted.deleted == 9
        assert isinstance(got, Page) and got.items[0].value == "three"
        assert put.revision == ok.revision  # one revision for the branch
        no = await c.txn([Compare.mod_revision("k") < 1], [Op.put("k", "never")], [Op.get("k")])
        assert not no.succeeded and isinstance(no.results[0], Page)
        assert (await c.get("k")) is not None and (await c.get("k")).value == "three"  # type: ignore[union-attr]
        with pytest.raises(TypeError):
            Compare.version("k") == "1"  # noqa: B015 - the builder refuses it

        await c.compact(r2.revision)
        with pytest.raises(RevisionCompactedError) as e:
            await c.get("k", revision=r1.revision)
        assert e.value.compact_revision >= r2.revision


async def test_lease_calls_and_attached_keys(api: Api) -> None:
    async with AsyncClient(endpoints(api), timeout=5) as c:
        lease = await c.lease_grant(1)
        assert lease.id > 0 and lease.ttl >= 1  # the cluster may raise it
        await c.put("svc/a", "addr", lease=lease.id)
        assert (await c.get("svc/a")).lease == lease.id  # type: ignore[union-attr]
        info = await c.lease_info(lease.id, keys=True)
        assert info.keys == ["svc/a"] and 0 < info.remaining <= info.ttl
        assert lease.id in {x.id for x in await c.leases()}
        assert (await c.lease_keepalive(lease.id)).id == lease.id
        await c.lease_revoke(lease.id)
        assert await c.get("svc/a") is None
        with pytest.raises(NoSuchLeaseError):
            await c.lease_keepalive(lease.id)
        with pytest.raises(NoSuchLeaseError):
            await c.lease_info(lease.id)


async def test_a_kept_lease_outlives_its_ttl_and_its_loss_is_seen(api: Api) -> None:
    async with AsyncClient(endpoints(api), timeout=5) as c:
        async with c.lease(1) as kept:
            await c.put("held", "v", lease=kept.id)
            # Kept alive past two TTLs: the key is still there.
            await asyncio.sleep(2 * kept.ttl + 0.5)
            assert not kept.lost.is_set()
            assert await c.get("held") is not None
            # Revoked behind the keeper's back: it notices (lease_not_found).
            await c.lease_revoke(kept.id)
            async with asyncio.timeout(kept.ttl + 10):
                await kept.lost.wait()
            assert "no longer has it" in kept.reason
        async with c.lease(1) as kept2:
            await c.put("gone", "v", lease=kept2.id)
        # Revoked on exit: its key went with it.
        assert await c.get("gone") is None
        assert kept2.lost.is_set() and kept2.reason == "revoked"
