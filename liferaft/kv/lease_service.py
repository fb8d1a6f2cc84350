"""Leases for the KV service: grant, keep alive, revoke, look up.

Theory of operation (docs/kv.md, "Leases"; the clock is
:mod:`liferaft.kv.lessor`'s):

- ``grant`` and ``revoke`` are entries, proposed like any write.  A TTL
  below :func:`~liferaft.kv.lessor.min_ttl` (one and a half of the longest
  election timeout) is raised to it, and the answer says the TTL granted.
- ``keepalive`` and the remaining time are the leader's alone.  A follower
  forwards them with the runtime's leader calls (:meth:`Node.call_leader`),
  never to another node's client port.  The leader answers after a
  linearizable read barrier, so one that was deposed without knowing it
  cannot acknowledge a keep-alive the real leader never saw.
- The reply of a leader call carries the service's error as data (its code
  and message), so a follower raises the same :class:`KVError` the leader
  would have: ``lease_not_found`` stays a 404 across the hop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from liferaft.runtime import Node, NodeError

from .errors import KVBadRequestError, KVError, KVNotFoundError, KVUnavailableError
from .lessor import LeaseKeeper, Lessor, min_ttl
from .machine import KVMachine
from .mvcc.codec import LeaseGrant, LeaseRevoke
from .mvcc.leases import LeaseGrantResult, LeaseRevokeResult
from .mvcc.ops import LeaseNotFoundError
from .node_errors import node_error
from .requests import text

#: The longest TTL granted: a lease is a liveness signal, not storage.
MAX_TTL = 10 * 365 * 24 * 3600
MAX_LEASE_ID = (1 << 63) - 1

_KEEPALIVE = "kv.lease.keepalive"
_TIME_TO_LIVE = "kv.lease.ttl"


class LeaseGranted(msgspec.Struct, frozen=True):
    """A lease and its TTL in whole seconds."""

    id: int
    ttl: int


class LeaseInfo(msgspec.Struct, frozen=True):
    """A lease as its leader sees it: the TTL granted, the seconds left, and
    (when asked) the keys attached to it."""

    id: int
    ttl: int
    remaining: float
    keys: list[str] | None = None


class _Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    """A leader call's answer: ``result`` or the service error as data."""

    result: Any = None
    error: str = ""
    message: str = ""
    retry_safe: bool = False


def check_lease_id(lease_id: int, zero_ok: bool = False) -> int:
    if not (0 if zero_ok else 1) <= lease_id <= MAX_LEASE_ID:
        raise KVBadRequestError(f"a lease id is in 1..2^63-1, not {lease_id}")
    return lease_id


class Leases:
    """The lease calls of one node's :class:`~liferaft.kv.service.KVService`:
    ``propose`` is its write path (a command in, the machine's result out)."""

    def __init__(
        self,
        node: Node,
        machine: KVMachine,
        lessor: Lessor,
        *,
        propose: Callable[[Any], Awaitable[Any]],
        timeout: float,
    ) -> None:
        self.node = node
        self.machine = machine
        self.lessor = lessor
        self._propose = propose
        self.timeout = timeout
        cfg = node.config
        # The longest election timeout the core may draw is twice the base.
        self.min_ttl = min_ttl(2 * cfg.election_ticks * cfg.tick_interval)
        self.node.on_call(_KEEPALIVE, self._serve(self._keepalive_here))
        self.node.on_call(_TIME_TO_LIVE, self._serve(self._info_here))
        self.keeper = LeaseKeeper(
            lessor,
            leadership=self._leadership,
            barrier=self._barrier,
            revoke=self._expire,
        )

    async def run(self) -> None:
        """The lease clock's loop (:class:`LeaseKeeper`), until cancelled."""
        await self.keeper.run()

    def _leadership(self) -> int | None:
        return self.node.status().term if self.node.is_leader else None

    async def _barrier(self) -> None:
        try:
            await self.node.read(lambda: None, timeout=self.timeout)
        except NodeError as exc:
            raise node_error(exc) from exc

    async def _expire(self, lease_id: int) -> None:
        await self._propose(LeaseRevoke(lease_id))

    # -- replicated ----------------------------------------------------------------------

    async def grant(self, ttl: int, lease_id: int = 0) -> LeaseGranted:
        """A new lease of at least ``ttl`` seconds (``lease_id`` 0: the
        cluster picks the id)."""
        if not 1 <= ttl <= MAX_TTL:
            raise KVBadRequestError(f"ttl must be in 1..{MAX_TTL} seconds")
        check_lease_id(lease_id, zero_ok=True)
        ttl = max(ttl, self.min_ttl)
        got: LeaseGrantResult = await self._propose(LeaseGrant(lease_id, ttl))
        return LeaseGranted(got.id, got.ttl)

    async def revoke(self, lease_id: int) -> int:
        """End the lease and delete its keys; the store revision after it."""
        check_lease_id(lease_id)
        got: LeaseRevokeResult = await self._propose(LeaseRevoke(lease_id))
        return got.revision

    async def all(self) -> list[LeaseGranted]:
        """Every lease (linearizable; read off the event loop: there may be many)."""
        await self._barrier()
        got = await asyncio.to_thread(self.machine.leases)
        return [LeaseGranted(lid, ttl) for lid, ttl in got]

    # -- on the leader ---------------------------------------------------------------------

    async def keepalive(self, lease_id: int) -> LeaseGranted:
        """Restart the lease's TTL on the leader's clock."""
        check_lease_id(lease_id)
        ttl = await self._at_leader(_KEEPALIVE, [lease_id], self._keepalive_here)
        return LeaseGranted(lease_id, int(ttl))

    async def info(self, lease_id: int, keys: bool = False) -> LeaseInfo:
        """The lease's TTL, the leader's remaining time and, with ``keys``, its keys."""
        check_lease_id(lease_id)
        got = await self._at_leader(_TIME_TO_LIVE, [lease_id, keys], self._info_here)
        return msgspec.convert(got, LeaseInfo)

    async def _keepalive_here(self, lease_id: int) -> int:
        lessor = self.lessor
        ttl: int = await self._confirmed(lambda: lessor.keepalive(lease_id))
        return ttl

    async def _info_here(self, lease_id: int, keys: bool) -> dict[str, Any]:
        lessor = self.lessor
        remaining: float = await self._confirmed(lambda: lessor.remaining(lease_id))
        # The lease's keys may be many: read them off the event loop.
        found = await asyncio.to_thread(self.machine.lease, lease_id)
        if found is None:
            raise LeaseNotFoundError(lease_id)
        out: dict[str, Any] = {"id": lease_id, "ttl": found.ttl, "remaining": round(remaining, 3)}
        if keys:
            out["keys"] = [text(k) for k in found.keys]
        return out

    async def _confirmed(self, fn: Callable[[], Any]) -> Any:
        """``fn`` once a read barrier shows this node still leads."""
        if not self.node.is_leader:
            raise KVUnavailableError("no_leader", "this node is no longer the leader; retry")
        try:
            return await self.node.read(fn, timeout=self.timeout)
        except NodeError as exc:
            raise node_error(exc) from exc

    async def _at_leader(
        self, name: str, args: list[Any], here: Callable[..., Awaitable[Any]]
    ) -> Any:
        if self.node.is_leader:
            return await here(*args)
        try:
            raw = await self.node.call_leader(
                name, msgspec.msgpack.encode(args), timeout=self.timeout
            )
        except NodeError as exc:
            raise node_error(exc) from exc
        reply = msgspec.msgpack.decode(raw, type=_Reply)
        if reply.error:
            if reply.retry_safe:
                raise KVUnavailableError(reply.error, reply.message)
            err = KVNotFoundError if reply.error.endswith("not_found") else KVError
            raise err(reply.message, reply.error)
        return reply.result

    def _serve(self, here: Callable[..., Awaitable[Any]]) -> Callable[[bytes], Awaitable[bytes]]:
        """A leader-call handler around ``here``: its errors travel as data."""

        async def handle(payload: bytes) -> bytes:
            try:
                args = msgspec.msgpack.decode(payload, type=list[Any])
                result = await here(*args)
                return msgspec.msgpack.encode(_Reply(result=result))
            except KVError as exc:
                reply = _Reply(error=exc.code, message=str(exc), retry_safe=exc.retry_safe)
                return msgspec.msgpack.encode(reply)
            except (msgspec.DecodeError, TypeError) as exc:
                return msgspec.msgpack.encode(_Reply(error="bad_request", message=str(exc)))

        return handle
