"""Coordination recipes over leases and revisions, as etcd's
``clientv3/concurrency`` (docs/kv.md, "Locks and elections").

Both queue their contenders under ``name/``: each holds a lease (kept alive
in the background) and puts ``name/<lease id>`` with it, in a transaction
that creates the key only if absent.  The key's ``create_revision`` is its
place in the queue; the lowest holds the lock (or leads).  A contender waits
by watching the key just ahead of it (the greatest ``create_revision`` below
its own) until it is deleted, then looks again: so each release wakes one
waiter, not all of them (no herd).  A holder that dies stops keeping its
lease alive; the cluster expires the lease after its TTL and deletes the
key, and the next in line takes over: a hand-over takes the TTL plus, if the
dead holder took the leader down with it, up to an election.

    async with Lock(client, "jobs/nightly", ttl=5) as lock:
        ...                     # held; lock.lost is set if the lease is lost

    e = Election(client, "svc/leader")
    await e.campaign("node-a")  # returns once this contender leads
    async for leader in e.observe(): ...
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .errors import ClientError
from .leases import KeptLease
from .model import Item, Page, WriteResult
from .txn import Compare, Op

#: The TTL a recipe asks for unless told (the cluster may raise it).
DEFAULT_TTL = 10


class LockLostError(ClientError):
    """The contender's lease was lost (expired or revoked) while it waited or
    held: it no longer holds the lock, and may never have."""


def _prefix(name: str) -> str:
    if not name:
        raise ValueError("a lock or election needs a name")
    return name if name.endswith("/") else name + "/"


class _Queue:
    """A place in the queue under ``prefix``: the shared part of Lock and Election."""

    def __init__(self, client: Any, name: str, ttl: int) -> None:
        self.client = client
        self.prefix = _prefix(name)
        self.ttl = ttl
        self.lease: KeptLease | None = None
        self.key = ""
        self.revision = 0  # the key's create_revision: its place in the queue

    @property
    def lost(self) -> asyncio.Event:
        """Set when the lease behind this place is lost (never set before entry)."""
        return self.lease.lost if self.lease is not None else asyncio.Event()

    async def _enter(self, value: str) -> None:
        """Take a place, then wait until it is first.  On any failure or
        cancellation the place is given up (its lease revoked)."""
        lease = self.client.lease(self.ttl)
        await lease.start()
        self.lease = lease
        try:
            self.key = f"{self.prefix}{lease.id:x}"
            r = await self.client.txn(
                [Compare.create_revision(self.key) == 0],
                success=[Op.put(self.key, value, lease=lease.id)],
                failure=[Op.get(self.key)],
            )
            first = r.results[0]
            if isinstance(first, WriteResult):
                self.revision = first.revision
            else:
                assert isinstance(first, Page) and first.items
                self.revision = first.items[0].create_revision
            await self._wait_first(lease)
        except BaseException:
            await self._leave()
            raise

    async def _wait_first(self, lease: KeptLease) -> None:
        while True:
            page = await self.client.range(prefix=self.prefix)
            ahead = [i for i in page.items if i.create_revision < self.revision]
            if not any(i.key == self.key for i in page.items):
                raise LockLostError(f"{self.key} is gone: the lease was lost", 0, "lease_lost")
            if not ahead:
                return
            pred = max(ahead, key=lambda i: i.create_revision)
            await self._deleted(pred.key, page.read_revision + 1, lease)

    async def _deleted(self, key: str, start: int, lease: KeptLease) -> None:
        """Once ``key`` is deleted at or after revision ``start``; LockLostError
        if the lease is lost first."""

        async def gone() -> None:
            async with self.client.watch(key, start_revision=start) as w:
                async for ev in w:
                    if ev.type == "delete":
                        return

        watch = asyncio.create_task(gone())
        lost = asyncio.create_task(lease.lost.wait())
        try:
            await asyncio.wait([watch, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (watch, lost):
                t.cancel()
            await asyncio.gather(watch, lost, return_exceptions=True)
        if lease.lost.is_set():
            raise LockLostError(f"lease {lease.id} lost while waiting: {lease.reason}",
                                0, "lease_lost")  # fmt: skip
        watch.result()  # a watch error (compacted, unavailable) goes up

    async def _leave(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None:
            await lease.close(revoke=True)  # deletes the key with the lease


class Lock(_Queue):
    """A distributed mutex named ``name`` (``async with``, or ``acquire`` and
    ``release``).  ``lost`` is set if the lease behind it is lost while held:
    another may hold it from then on."""

    def __init__(self, client: Any, name: str, *, ttl: int = DEFAULT_TTL) -> None:
        super().__init__(client, name, ttl)

    async def acquire(self) -> None:
        """Wait until this holder has the lock (LockLostError if its lease is
        lost first).  Bound it with ``asyncio.timeout`` if need be."""
        if self.lease is not None:
            raise RuntimeError("this Lock is already held or being acquired")
        await self._enter("")

    async def release(self) -> None:
        """Give the lock up: revoke the lease, deleting the key."""
        await self._leave()

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Election(_Queue):
    """Leader election under ``name``: :meth:`campaign` waits to lead,
    :meth:`resign` steps down, :meth:`leader` and :meth:`observe` tell who
    leads (the value of the key with the lowest create_revision)."""

    def __init__(self, client: Any, name: str, *, ttl: int = DEFAULT_TTL) -> None:
        super().__init__(client, name, ttl)

    async def campaign(self, value: str) -> None:
        """Join the queue with ``value`` and return once this contender leads."""
        if self.lease is not None:
            raise RuntimeError("this Election already campaigns or leads")
        await self._enter(value)

    async def resign(self) -> None:
        """Step down (or leave the queue): the next contender leads."""
        await self._leave()

    async def leader(self) -> str | None:
        """The leader's value, or None if nobody campaigns."""
        page = await self.client.range(prefix=self.prefix)
        first = _first(page.items)
        return None if first is None else first.value

    async def observe(self) -> AsyncIterator[str]:
        """The leader's value now (if any) and each time it changes."""
        page = await self.client.range(prefix=self.prefix)
        keys = {i.key: i for i in page.items}
        shown: Item | None = None
        async with self.client.watch(prefix=self.prefix,
                                     start_revision=page.read_revision + 1) as w:  # fmt: skip
            while True:
                first = _first(list(keys.values()))
                if first is not None and (shown is None or (first.key, first.value)
                                          != (shown.key, shown.value)):  # fmt: skip
                    shown = first
                    yield first.value
                ev = await w.__anext__()
                if ev.type == "delete":
                    keys.pop(ev.key, None)
                else:
                    keys[ev.key] = ev  # an Event is the key's Item after it


def _first(items: list[Item]) -> Item | None:
    return min(items, key=lambda i: i.create_revision, default=None)
