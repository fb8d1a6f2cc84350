"""Admin calls any member takes and the leader does: leadership transfer,
forwarded over the peer RPC, and keeping this node's own address book entry
current (liferaft/runtime/address_book.py).

Writes, membership changes and these calls all reach the leader the same
way, as peer calls, so there is one path and one trust model: the leader
serves them only to a proven member (docs/architecture.md, "Trust model").
Front ends (the HTTP API, later gRPC and the console) never forward to
another node's client port.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from liferaft.transport.base import CallNotSentError, Transport

from . import address_book, peer_rpc
from .clock import Clock
from .errors import BadMemberError, NodeError, NodeTimeoutError, NotLeaderError

log = logging.getLogger("liferaft.runtime")


class AdminNode(Protocol):
    """What these calls use of :class:`~liferaft.runtime.Node`."""

    id: str
    transport: Transport
    clock: Clock

    @property
    def members(self) -> dict[str, dict[str, Any]]: ...
    @property
    def is_leader(self) -> bool: ...
    @property
    def leader(self) -> str | None: ...
    async def transfer_leadership(
        self, to: str | None = None, timeout: float | None = None
    ) -> str: ...
    async def set_member_info(self, timeout: float | None = None, **info: Any) -> None: ...


async def transfer_leadership(node: AdminNode, to: str | None, timeout: float) -> str:
    """Hand leadership to ``to`` (None: the most caught-up voter) from any
    member: the leader does it; a follower asks the leader over the peer RPC.
    Returns the new leader.  :class:`NotLeaderError` (nothing started) when no
    leader is known or reachable, :class:`NodeTimeoutError` when the outcome is
    unknown, as :meth:`Node.transfer_leadership` raises on the leader."""
    if node.is_leader:
        return await node.transfer_leadership(to, timeout=timeout)
    leader = node.leader
    if leader is None or leader == node.id:
        raise NotLeaderError(f"no leader known to {node.id}", leader)
    req = peer_rpc.encode(peer_rpc.TransferLeader(to, timeout))
    try:
        # Twice the leader's own bound: its refusal or answer comes back in time.
        raw = await node.transport.call(leader, req, timeout * 2)
    except CallNotSentError as exc:
        raise NotLeaderError(f"cannot reach the leader {leader}: {exc}", leader) from None
    except TimeoutError:
        raise NodeTimeoutError(f"{leader} did not answer in time; outcome unknown") from None
    except Exception as exc:
        raise NodeTimeoutError(f"asking {leader} failed: {exc}; outcome unknown") from None
    rep = peer_rpc.reply_of(raw, leader, peer_rpc.Transferred)
    if isinstance(rep, peer_rpc.Transferred):
        return rep.leader
    raise peer_rpc.error_of(rep, leader)


async def serve_transfer(node: AdminNode, req: peer_rpc.TransferLeader) -> bytes:
    """The leader's side of :func:`transfer_leadership` (a member's call)."""
    try:
        new = await node.transfer_leadership(req.to, timeout=max(0.01, req.timeout))
    except NodeError as exc:
        return peer_rpc.encode(peer_rpc.refusal(exc))
    return peer_rpc.encode(peer_rpc.Transferred(new))


async def keep_member_info(
    node: AdminNode, info: Mapping[str, Any], *, first_delay: float = 0.2, max_delay: float = 2.0
) -> None:
    """Until this node's address book entry holds ``info``, propose it (once
    this node is a member; retried with back-off while there is no leader or
    another change is in flight).  Returns once it holds, or at once on info
    the cluster refuses (logged).  Run it as a task; cancel it to stop."""
    delay = first_delay
    while not address_book.holds(node.members.get(node.id), info):
        if node.id in node.members:
            try:
                await node.set_member_info(**info)
                continue
            except BadMemberError as exc:
                log.warning("node %s: not announcing %s: %s", node.id, dict(info), exc)
                return
            except NodeError as exc:
                log.debug("node %s: announcing %s: %s", node.id, dict(info), exc)
        await node.clock.sleep(delay)
        delay = min(max_delay, delay * 2)


__all__ = ["AdminNode", "keep_member_info", "serve_transfer", "transfer_leadership"]
