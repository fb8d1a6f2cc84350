"""etcd's Cluster service: MemberList, MemberAdd, MemberRemove, MemberPromote.

A liferaft member is named (its Raft id, ``--id``); an etcd member is a
number.  The number is a hash of the name (ids.py), so every node answers
the same ids without storing them.  The rest maps onto the address book
(liferaft/runtime/address_book.py): ``peerURLs`` is the book's peer address,
``clientURLs`` its gRPC address (etcd clients dial them with gRPC), ``name``
its :data:`NAME` field, or the Raft id when it has none.

MemberAdd carries peer URLs only, as in etcd (docs/etcd.md, "Adding a
member").  The cluster does not know the new node's ``--id`` yet, so the
member is recorded under a Raft id made up for it (liferaft/kv/adopt.py,
random, never reused) with its peer address and :data:`ADDED` set; MemberList shows it with an empty
name and no client URL, which etcdctl prints as "unstarted".  The node
started for it (``liferaft serve --id NAME --join URL`` on an empty data
dir) finds the entry whose peer address is its own, adopts that Raft id
(liferaft/kv/serve.py) and records NAME in the entry.

Safety: a voter that exists only on paper counts towards the quorum; etcd
accepts that, liferaft-kv does not.  Every member is added as a learner;
one added as a voter (``isLearner`` false) carries :data:`WANTS_VOTER` and
is promoted by the leader as soon as it has caught up
(:func:`promote_wanted`), so MemberList reports it a learner until then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any
from urllib.parse import urlsplit

from liferaft.kv import adopt
from liferaft.kv.advertise import same_address
from liferaft.kv.errors import KVError
from liferaft.runtime import MembershipError, NodeError
from liferaft.runtime import address_book as book

from . import errors
from .calls import Call
from .context import EtcdContext
from .proto import rpc_pb2 as pb

log = logging.getLogger("liferaft.etcd")

#: Book entry field: the name the member's node was started with (``--id``),
#: when its Raft id was made up by MemberAdd.
NAME = book.NAME
#: Book entry field: added by etcd's MemberAdd (no node seen yet).
ADDED = "etcd_added"
#: Book entry field: MemberAdd asked for a voter; promoted once caught up.
WANTS_VOTER = "etcd_voter"


def peer_addr_of(url: str) -> str:
    """``http(s)://host:port`` (a peer URL) as liferaft's ``host:port``;
    etcd's "given member URLs are invalid" for anything else."""
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError:
        raise errors.MEMBER_BAD_URLS from None
    if u.scheme not in ("http", "https") or not u.hostname or port is None:
        raise errors.MEMBER_BAD_URLS
    if u.path not in ("", "/") or u.query or u.fragment or u.username or u.password:
        raise errors.MEMBER_BAD_URLS
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    return f"{host}:{port}"


async def _taken(addr: str, entries: list[dict[str, Any]]) -> bool:
    """True if a member's peer address is ``addr``, spelled alike or not
    ("localhost" for 127.0.0.1: the node started there adopts one entry,
    the other would be a learner that never starts).  Names are resolved
    in a thread: a DNS lookup must not stall the event loop."""
    peers = [p for e in entries if (p := book.addresses(e).peer_addr)]
    if any(p.strip().lower() == addr.strip().lower() for p in peers):
        return True

    def resolved() -> bool:
        for p in peers:
            with contextlib.suppress(ValueError, OSError):
                if same_address(p, addr)[0]:
                    return True
        return False

    return await asyncio.to_thread(resolved)


def member(ctx: EtcdContext, nid: str, entry: dict[str, Any] | None, learner: bool) -> pb.Member:
    """One member as etcd lists it."""
    entry = entry or {}
    a = book.addresses(entry)
    grpc_addr = entry.get(book.GRPC_ADDR)
    started = not entry.get(ADDED) or bool(a.client_addr)
    name = entry.get(NAME) if isinstance(entry.get(NAME), str) else None
    return pb.Member(
        ID=ctx.member_of(nid),
        name=(name or nid) if started else "",
        peerURLs=[f"http://{a.peer_addr}"] if a.peer_addr else [],
        clientURLs=[f"http://{grpc_addr}"] if started and isinstance(grpc_addr, str) else [],
        isLearner=learner,
    )


def members(ctx: EtcdContext) -> list[pb.Member]:
    """Every member, voters and learners, by Raft id."""
    st = ctx.service.node.status()
    learners = set(st.learners)
    return [
        member(ctx, nid, st.members.get(nid), nid in learners)
        for nid in sorted(set(st.voters) | learners)
    ]


def _node_of(ctx: EtcdContext, mid: int) -> str:
    st = ctx.service.node.status()
    nid = ctx.node_of(mid)
    if nid is None or nid not in set(st.voters) | set(st.learners):
        raise errors.MEMBER_NOT_FOUND
    return nid


def _membership_error(exc: Exception) -> Exception:
    """A refused change in etcd's words where etcd has them."""
    if isinstance(exc, NodeError | KVError) and "has not caught up" in str(exc):
        return errors.LEARNER_NOT_READY
    if isinstance(exc, MembershipError):
        return errors.EtcdError(errors.Code.FAILED_PRECONDITION, f"etcdserver: {exc}")
    return exc


async def member_list(ctx: EtcdContext, r: pb.MemberListRequest) -> pb.MemberListResponse:
    return pb.MemberListResponse(header=ctx.header(), members=members(ctx))


async def member_add(ctx: EtcdContext, r: pb.MemberAddRequest) -> pb.MemberAddResponse:
    """Record the member at once; its node fills in its name and client URL."""
    if len(r.peerURLs) != 1:
        # liferaft members have one peer address (etcd allows several).
        raise errors.MEMBER_BAD_URLS
    addr = peer_addr_of(r.peerURLs[0])
    st = ctx.service.node.status()
    if await _taken(addr, list(st.members.values())):
        raise errors.PEER_URL_EXIST
    nid = adopt.new_id()
    info: dict[str, Any] = {ADDED: True}
    if not r.isLearner:
        info[WANTS_VOTER] = True
    try:
        await ctx.service.node.add_learner(nid, addr, **info)
    except NodeError as exc:
        raise _membership_error(exc) from exc
    log.info("etcd MemberAdd: %s at %s recorded as %s", "learner" if r.isLearner
             else "voter (a learner until caught up)", addr, nid)  # fmt: skip
    new = member(ctx, nid, ctx.service.node.members.get(nid), True)
    return pb.MemberAddResponse(header=ctx.header(), member=new, members=members(ctx))


async def member_remove(ctx: EtcdContext, r: pb.MemberRemoveRequest) -> pb.MemberRemoveResponse:
    nid = _node_of(ctx, r.ID)
    try:
        await ctx.service.remove_member(nid)
    except (NodeError, KVError) as exc:
        raise _membership_error(exc) from exc
    return pb.MemberRemoveResponse(header=ctx.header(), members=members(ctx))


async def member_promote(ctx: EtcdContext, r: pb.MemberPromoteRequest) -> pb.MemberPromoteResponse:
    nid = _node_of(ctx, r.ID)
    if nid not in ctx.service.node.status().learners:
        raise errors.MEMBER_NOT_LEARNER
    try:
        await ctx.service.node.promote(nid)
    except NodeError as exc:
        raise _membership_error(exc) from exc
    return pb.MemberPromoteResponse(header=ctx.header(), members=members(ctx))


async def promote_wanted(ctx: EtcdContext, interval: float = 0.5) -> None:
    """On the leader, promote each learner MemberAdd added as a voter once
    it has caught up (the core refuses it before).  Runs until cancelled;
    any node may run it, only the leader acts."""
    node = ctx.service.node
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(NodeError):
            if not node.is_leader:
                continue
            st = node.status()
            for nid in st.learners:
                entry = st.members.get(nid) or {}
                peer = st.peers.get(nid)
                if not entry.get(WANTS_VOTER) or peer is None or peer.match < st.commit_index:
                    continue
                try:
                    await node.promote(nid)
                    log.info("etcd member %s caught up: promoted to voter", nid)
                except NodeError as exc:
                    log.debug("promoting %s: %s", nid, exc)


CALLS = [
    Call("Cluster", "MemberList", pb.MemberListRequest, pb.MemberListResponse, member_list,
         ("/v3/cluster/member/list",)),
    Call("Cluster", "MemberAdd", pb.MemberAddRequest, pb.MemberAddResponse, member_add,
         ("/v3/cluster/member/add",)),
    Call("Cluster", "MemberRemove", pb.MemberRemoveRequest, pb.MemberRemoveResponse,
         member_remove, ("/v3/cluster/member/remove",)),
    Call("Cluster", "MemberPromote", pb.MemberPromoteRequest, pb.MemberPromoteResponse,
         member_promote, ("/v3/cluster/member/promote",)),
]  # fmt: skip
