"""The serving side of the peer RPC: what a node answers other nodes.

Theory of operation
-------------------
Requests arrive through the transport's call handler
(:meth:`Node.handle_call`), already decoded from the wire by
liferaft/runtime/peer_rpc.py, which owns the format.  A forwarded proposal
is proposed here through the router, a forwarded membership change through
membership, a leader call (``app``) to the handlers of
liferaft/runtime/leader_calls.py, and a join goes to membership, which adds
the joiner on the leader or passes the call on to it; a status query is
answered by this node itself (liferaft/runtime/peer_status.py).  Who may
ask what (docs/architecture.md, "Trust model"): a member may forward
anything; a caller that is not a member may only ask to join as the id it
proved in the handshake.

A refusal (``NotLeaderError``, ``MembershipError``, ``StorageFailedError``) means
nothing was proposed, and it travels back as a code, so the caller raises
the same typed error it would raise here.
"""

from __future__ import annotations

from liferaft.core import ConfChange, ConfChangeError

from . import admin, peer_rpc
from .errors import (
    BadMemberError,
    MembershipError,
    NotLeaderError,
    StoppedError,
    StorageFailedError,
)
from .leader_calls import LeaderCalls
from .membership import Membership
from .peer_status import PeerStatus
from .router import Router


async def serve_call(
    frm: str,
    payload: bytes,
    known_peer: bool,
    router: Router,
    membership: Membership,
    node: admin.AdminNode,
    calls: LeaderCalls,
    status: PeerStatus | None = None,
) -> bytes:
    """The reply to the call ``payload`` from ``frm`` (``known_peer``: a
    member of this cluster).  ``ValueError`` if it cannot be read,
    ``PermissionError`` if ``frm`` may not ask it."""
    try:
        req = peer_rpc.decode_request(payload)
    except peer_rpc.RpcError as exc:
        raise ValueError(str(exc)) from None
    if isinstance(req, peer_rpc.Join):
        if not known_peer and req.node_id != frm:
            # A stranger may only ask to add the id it proved in the
            # handshake: a hijacked (relayed) joiner's connection must
            # not add whatever id and address the hijacker likes.  A
            # member forwarding a join to the leader is trusted.
            return peer_rpc.encode(
                peer_rpc.Refused(
                    peer_rpc.Refusal.BAD_MEMBER,
                    f"a join from {frm!r} may only ask to add {frm!r}",
                )
            )
        return await membership.handle_join(req)
    if not known_peer:
        raise PermissionError(f"{frm} is not a member")
    if isinstance(req, peer_rpc.TransferLeader):
        return await admin.serve_transfer(node, req)
    if isinstance(req, peer_rpc.AppCall):
        return await calls.serve(req)
    if isinstance(req, peer_rpc.StatusQuery):
        if status is None:
            raise ValueError("this node answers no status queries")
        return status.serve()  # the node's own state, never the leader's
    try:
        if isinstance(req, peer_rpc.Propose):
            index, term = await router.propose_local(req.data, req.stamp)
        elif isinstance(req, peer_rpc.SetMemberInfo):
            if req.node_id != frm:  # a member sets its own entry only
                raise BadMemberError(f"{frm!r} may not set the member info of {req.node_id!r}")
            index, term = await membership.info_local(req)
        else:
            try:
                cc = ConfChange.decode(req.change)
            except ConfChangeError as exc:
                raise MembershipError(f"unreadable membership change: {exc}") from None
            index, term = await membership.conf_local(cc)
    except (
        NotLeaderError,
        MembershipError,
        StorageFailedError,
        BadMemberError,
        StoppedError,
    ) as exc:
        # Refused before anything was proposed: the caller gets the same
        # typed error it would get here (not an "unknown outcome").  A
        # StoppedError here never proposed (stop() answers a proposed one
        # NodeTimeoutError): the caller retries through the next leader.
        return peer_rpc.encode(peer_rpc.refusal(exc))
    return peer_rpc.encode(peer_rpc.Accepted(index, term))
