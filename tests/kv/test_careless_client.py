"""A careless library user against the client's coordination features
(issue 15): a lease kept alive through a partition, and the blocking
client asked for what only the asyncio one can do."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from liferaft.client import Client
from liferaft.client.errors import NoSuchLeaseError, UnavailableError
from liferaft.client.leases import KeptLease
from liferaft.client.model import Lease


class PartitionedLeader:
    """A fake client whose leader grants a lease, answers keep-alives until
    ``partition()``, then never hears from the holder again.  The leader
    expires the lease on its own clock (the loop's) a TTL after the last
    keep-alive it *received* (a one-way delay after the holder sent it),
    and records whether the holder already knew (``lost``) at that moment:
    the next holder may take the lock right then."""

    DELAY = 0.01  # one way, holder to leader

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.cut = False
        self.kept: KeptLease | None = None
        self.expiry: asyncio.TimerHandle | None = None
        self.knew_at_expiry: bool | None = None
        self.calls = 0

    def _received(self) -> None:
        loop = asyncio.get_running_loop()
        if self.expiry is not None:
            self.expiry.cancel()
        self.expiry = loop.call_at(loop.time() + self.ttl, self._expire)

    def _expire(self) -> None:
        assert self.kept is not None
        self.knew_at_expiry = self.kept.lost.is_set()

    async def lease_grant(self, ttl: int) -> Lease:
        await asyncio.sleep(self.DELAY)
        self._received()
        return Lease(7, self.ttl)

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> Lease:
        self.calls += 1
        if self.cut:
            # The holder's requests never arrive: each one times out (a
            # bounded wait, as the real client's).
            await asyncio.sleep(min(timeout or 1.0, 0.2))
            raise UnavailableError("partitioned", 503, "no_leader")
        await asyncio.sleep(self.DELAY)
        self._received()
        await asyncio.sleep(self.DELAY)
        return Lease(lease_id, self.ttl)

    async def lease_revoke(self, lease_id: int) -> int:
        raise NoSuchLeaseError("gone", 404, "lease_not_found")


async def test_lease_lost_is_set_before_the_leader_can_expire_it() -> None:
    """A holder cut off from the cluster must see ``lost`` no later than the
    leader expires its lease: after that another contender can hold the
    lock, and two holders must never both believe they hold it (while the
    holder's clock and process keep up: docs/kv.md, "Locks and elections",
    names the fencing rule for the rest)."""
    leader = PartitionedLeader(ttl=1)
    kept = KeptLease(leader, 1)  # type: ignore[arg-type]
    leader.kept = kept
    await kept.start()
    try:
        # A few keep-alives succeed, then the partition.
        for _ in range(200):
            if leader.calls >= 2:
                break
            await asyncio.sleep(0.02)
        leader.cut = True
        for _ in range(300):
            if leader.knew_at_expiry is not None:
                break
            await asyncio.sleep(0.02)
        assert leader.knew_at_expiry is not None, "the fake leader never expired the lease"
        assert leader.knew_at_expiry, (
            "the leader expired the lease while its holder still believed it held it"
        )
        assert kept.lost.is_set() and "TTL" in kept.reason
    finally:
        await kept.close(revoke=False)


def test_sync_client_refuses_async_only_features_clearly() -> None:
    """``Client`` (blocking) wraps the asyncio client; the features that are
    asyncio-only (a kept lease, a watch stream) must say so in one line,
    not fail later with an AttributeError or a "coroutine was never
    awaited" warning from another thread's loop."""
    c = Client("127.0.0.1:1")
    try:
        asks: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
            ("lease", (5,), {}),
            ("watch", (), {"prefix": "a/"}),
        ]
        for name, args, kw in asks:
            with pytest.raises(TypeError) as info:
                getattr(c, name)(*args, **kw)
            msg = str(info.value)
            assert "AsyncClient" in msg and name in msg and "\n" not in msg
    finally:
        c.close()


def test_sync_client_plain_calls_still_pass_through() -> None:
    """The refusal above is only for the asyncio-only features."""
    c = Client("127.0.0.1:1")
    try:
        got: Any = c.endpoints
        assert got == ["127.0.0.1:1"]
        assert callable(c.lease_grant)
    finally:
        c.close()
