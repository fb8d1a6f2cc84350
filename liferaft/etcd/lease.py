"""etcd's Lease service over the node's leases (liferaft/kv/lease_service.py).

Grant and revoke are log entries; keep-alive and the time left are the
leader's (a follower forwards them over the peer port), so every call works
on any node, as in etcd.  What follows etcd 3.4:

- LeaseGrant: ``ID`` 0 lets the cluster pick the id; an id that is live is
  "lease already exists"; a TTL is raised to the minimum (docs/kv.md,
  "Leases"; etcd raises it to its own minimum the same way) and one over
  liferaft's maximum (ten years; etcd's is 9e9 s) is "too large lease TTL".
- LeaseRevoke of an unknown lease: "requested lease not found" (NOT_FOUND).
- LeaseKeepAlive: one response per request, in order, with the lease's TTL;
  TTL 0 for a lease that is gone.  Any other failure (no leader, a timeout)
  ends the stream with its status, as etcd's does: clients open a new one.
- LeaseTimeToLive: the seconds left (truncated, as etcd's int64 of a
  duration), the granted TTL and, with ``keys``, the attached keys; TTL -1
  for a lease that is gone.
- LeaseLeases: every live lease's id.

liferaft's ids are positive (etcd accepts a negative one it is given): a
grant of a negative id is refused with INVALID_ARGUMENT, and any other call
naming one answers as for a lease that is gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TypeVar

from liferaft.kv.errors import KVError, KVUnavailableError
from liferaft.kv.lease_service import MAX_TTL

from . import errors
from .calls import Call
from .context import EtcdContext
from .proto import rpc_pb2 as pb

T = TypeVar("T")


#: Seconds between asks while the cluster has no leader's lease clock.
RETRY = 0.1


def _gone(exc: KVError) -> bool:
    """The lease does not exist (the leader's answer, maybe forwarded)."""
    return exc.code == "lease_not_found"


async def _at_leader(ctx: EtcdContext, fn: Callable[[], Awaitable[T]]) -> T:
    """``fn()`` (a call the leader answers), asked again while there is no
    leader's lease clock, up to the node's request timeout: during an
    election, or just after one until the new leader's clock starts.  etcd
    waits for a leader the same way rather than fail a keep-alive."""
    deadline = time.monotonic() + ctx.service.timeout
    while True:
        try:
            return await fn()
        except KVUnavailableError as exc:
            if exc.code != "no_leader" or time.monotonic() + RETRY > deadline:
                raise
        await asyncio.sleep(RETRY)


async def lease_grant(ctx: EtcdContext, r: pb.LeaseGrantRequest) -> pb.LeaseGrantResponse:
    if r.TTL > MAX_TTL:
        raise errors.LEASE_TTL_TOO_LARGE
    if r.ID < 0:
        raise errors.EtcdError(
            errors.Code.INVALID_ARGUMENT, "etcdserver: liferaft-kv lease ids are positive"
        )
    got = await ctx.service.leases.grant(max(r.TTL, 1), r.ID)
    return pb.LeaseGrantResponse(header=ctx.header(), ID=got.id, TTL=got.ttl)


async def lease_revoke(ctx: EtcdContext, r: pb.LeaseRevokeRequest) -> pb.LeaseRevokeResponse:
    if r.ID <= 0:
        raise errors.LEASE_NOT_FOUND
    try:
        revision = await ctx.service.leases.revoke(r.ID)
    except KVError as exc:
        if _gone(exc):
            raise errors.LEASE_NOT_FOUND from None
        raise
    return pb.LeaseRevokeResponse(header=ctx.header(revision))


async def lease_keep_alive(
    ctx: EtcdContext, requests: AsyncIterator[pb.LeaseKeepAliveRequest]
) -> AsyncIterator[pb.LeaseKeepAliveResponse]:
    """One answer per request, in order: each waits for the leader's (so a
    client that floods the stream is slowed to the leader's pace)."""
    async for r in requests:
        ttl = 0
        if r.ID > 0:
            try:
                got = await _at_leader(ctx, partial(ctx.service.leases.keepalive, r.ID))
                ttl = got.ttl
            except KVError as exc:
                if not _gone(exc):
                    raise
        yield pb.LeaseKeepAliveResponse(header=ctx.header(), ID=r.ID, TTL=ttl)


async def lease_time_to_live(
    ctx: EtcdContext, r: pb.LeaseTimeToLiveRequest
) -> pb.LeaseTimeToLiveResponse:
    gone = pb.LeaseTimeToLiveResponse(header=ctx.header(), ID=r.ID, TTL=-1)
    if r.ID <= 0:
        return gone
    svc = ctx.service
    try:
        info = await _at_leader(ctx, partial(svc.leases.info, r.ID))
    except KVError as exc:
        if _gone(exc):
            return gone
        raise
    out = pb.LeaseTimeToLiveResponse(
        header=ctx.header(), ID=r.ID, TTL=int(info.remaining), grantedTTL=info.ttl
    )
    if r.keys:
        # The leader's answer names keys as text; etcd's are bytes, so read
        # them here, at least as new as the leader's answer.
        await svc.barrier("linearizable")
        found = await asyncio.to_thread(svc.machine.lease, r.ID)
        if found is None:
            return gone  # revoked meanwhile
        out.keys.extend(found.keys)
    return out


async def lease_leases(ctx: EtcdContext, r: pb.LeaseLeasesRequest) -> pb.LeaseLeasesResponse:
    got = await ctx.service.leases.all()
    out = pb.LeaseLeasesResponse(header=ctx.header())
    out.leases.extend(pb.LeaseStatus(ID=lease.id) for lease in got)
    return out


CALLS = [
    Call("Lease", "LeaseGrant", pb.LeaseGrantRequest, pb.LeaseGrantResponse, lease_grant,
         ("/v3/lease/grant",)),
    Call("Lease", "LeaseRevoke", pb.LeaseRevokeRequest, pb.LeaseRevokeResponse, lease_revoke,
         ("/v3/lease/revoke", "/v3/kv/lease/revoke")),
    Call("Lease", "LeaseKeepAlive", pb.LeaseKeepAliveRequest, pb.LeaseKeepAliveResponse,
         lease_keep_alive, ("/v3/lease/keepalive",), "stream"),
    Call("Lease", "LeaseTimeToLive", pb.LeaseTimeToLiveRequest, pb.LeaseTimeToLiveResponse,
         lease_time_to_live, ("/v3/lease/timetolive", "/v3/kv/lease/timetolive")),
    Call("Lease", "LeaseLeases", pb.LeaseLeasesRequest, pb.LeaseLeasesResponse, lease_leases,
         ("/v3/lease/leases", "/v3/kv/lease/leases")),
]  # fmt: skip
