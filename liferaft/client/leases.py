"""Leases in the client (docs/kv.md, "Leases" and "The Python client"):
the calls, and :class:`KeptLease`, a lease kept alive in the background.

    async with client.lease(10) as lease:      # granted; kept alive at ttl/3
        await client.put("svc/me", "addr", lease=lease.id)
        await lease.lost.wait()                # set if the lease is lost
    # revoked on exit: its keys are deleted

A lease is *lost* when the cluster says it no longer exists
(``lease_not_found``: it expired or was revoked), or when no keep-alive has
succeeded for a whole TTL, counted from the send of the last one that did:
past that the leader may have expired it.  ``lost`` is set then and the
keeper stops; ``reason`` says which.  The TTL deadline is a timer of its
own, not a check between keep-alive attempts: a retry loop that noticed it
only on its next round set ``lost`` after the leader could already have
expired the lease and handed a lock to the next holder.  Even so ``lost``
is only as good as this process's clock and scheduling (a paused process
learns nothing): docs/kv.md, "Locks and elections", gives the fencing rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import ClientError, NoSuchLeaseError
from .model import Lease, LeaseInfo

# Lease ids the client picks: 1..2^62, so a grant retried after an unknown
# outcome is recognised (lease_exists is then our own grant).
_ID_BITS = 62


class LeaseCalls:
    """The lease calls, for a client with ``request``."""

    request: Callable[..., Awaitable[dict[str, Any]]]

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> Lease:
        """A new lease of at least ``ttl`` seconds: the answer has the TTL
        granted (the cluster raises one below its minimum).  The client picks
        the id unless given, so that a grant retried after an unknown outcome
        cannot leave a second lease behind."""
        chosen = lease_id or secrets.randbits(_ID_BITS) + 1
        try:
            d = await self.request("POST", "/v1/lease", {"ttl": ttl, "id": chosen}, write=True)
        except ClientError as exc:
            if exc.code != "lease_exists" or lease_id:
                raise
            # An earlier attempt of this call granted it (a random 62-bit id
            # met by chance is not a concern).
            info = await self.lease_info(chosen)
            return Lease(info.id, info.ttl)
        return Lease(int(d["id"]), int(d["ttl"]))

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> Lease:
        """Restart the lease's TTL on the leader's clock (NoSuchLeaseError
        if it is gone)."""
        d = await self.request(
            "POST", f"/v1/lease/{lease_id}/keepalive", {}, write=True, timeout=timeout
        )
        return Lease(int(d["id"]), int(d["ttl"]))

    async def lease_revoke(self, lease_id: int) -> int:
        """End the lease now and delete its keys; the store revision after it.
        NoSuchLeaseError if it is already gone."""
        d = await self.request("DELETE", f"/v1/lease/{lease_id}", write=True)
        return int(d["revision"])

    async def lease_info(self, lease_id: int, *, keys: bool = False) -> LeaseInfo:
        """The lease's TTL, the seconds the leader gives it still, and (with
        ``keys``) the keys attached to it."""
        q = urllib.parse.urlencode({"keys": "true" if keys else "false"})
        d = await self.request("GET", f"/v1/lease/{lease_id}?{q}", write=True)
        return LeaseInfo(int(d["id"]), int(d["ttl"]), float(d["remaining"]), d.get("keys"))

    async def leases(self) -> list[Lease]:
        """Every live lease."""
        d = await self.request("GET", "/v1/lease")
        return [Lease(int(x["id"]), int(x["ttl"])) for x in d["leases"]]

    def lease(self, ttl: int) -> KeptLease:
        """A lease granted on entering ``async with``, kept alive in the
        background at a third of its TTL, and revoked on exit."""
        return KeptLease(self, ttl)


class KeptLease:
    """A lease and its keep-alive task (:meth:`LeaseCalls.lease`).  ``id`` and
    ``ttl`` are set once granted; ``lost`` is set if the lease is lost."""

    def __init__(self, client: LeaseCalls, ttl: int) -> None:
        self.client = client
        self.asked_ttl = ttl
        self.id = 0
        self.ttl = 0
        self.lost = asyncio.Event()
        self.reason = ""
        self._task: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> KeptLease:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Grant the lease and start keeping it alive."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        got = await self.client.lease_grant(self.asked_ttl)
        self.id, self.ttl = got.id, got.ttl
        self._task = asyncio.create_task(self._keep(sent), name=f"lease-{self.id}")

    async def close(self, revoke: bool = True) -> None:
        """Stop keeping it alive and (with ``revoke``) revoke it, deleting its
        keys.  A revoke that fails leaves the lease to expire by its TTL."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        # Revoke even once ``lost``: a lease lost by the TTL deadline may
        # still be alive on the leader, and its key would stay first in a
        # Lock's queue until it expired (a gone one is lease_not_found).
        if revoke and self.id:
            with contextlib.suppress(ClientError):
                await self.client.lease_revoke(self.id)
            self._lose("revoked")

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()

    def _arm(self, last_ok: float) -> None:
        """(Re)start the TTL deadline: ``last_ok`` (a send time) + TTL.  The
        leader's own deadline runs from when it *received* that keep-alive,
        later on its clock, so this fires first (clocks running at the
        same rate; docs/kv.md, "Locks and elections")."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = asyncio.get_running_loop().call_at(
            last_ok + self.ttl,
            self._lose,
            f"no keep-alive succeeded for its TTL of {self.ttl} s",
        )

    async def _keep(self, last_ok: float) -> None:
        loop = asyncio.get_running_loop()
        period = self.ttl / 3
        next_at = last_ok + period
        self._arm(last_ok)
        while True:
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            left = last_ok + self.ttl - loop.time()
            if left <= 0 or self.lost.is_set():
                self._lose(f"no keep-alive succeeded for its TTL of {self.ttl} s")
                return
            sent = loop.time()
            try:
                # Bounded by what is left of the TTL: an answer after that
                # could not save it.
                await self.client.lease_keepalive(self.id, timeout=max(0.05, min(period, left)))
            except NoSuchLeaseError:
                self._lose("the cluster no longer has it (expired or revoked)")
                return
            except ClientError:
                next_at = loop.time() + min(1.0, period / 3)  # try again soon
                continue
            if self.lost.is_set():
                return  # the deadline passed while this one was in flight
            last_ok = sent
            self._arm(last_ok)
            next_at = sent + period
