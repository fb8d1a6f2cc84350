"""asyncio TCP transport: length-prefixed frames, optional TLS/mTLS.

Theory of operation
-------------------
Every node listens on one address and dials every peer once: a connection
carries traffic from the dialer to the listener, so a pair of nodes shares
two connections, one per direction (etcd's rafthttp does the same with its
stream pair).  Frames are ``length u32 | kind u8 | body`` (see
:mod:`._frames` and docs/transport.md).

:class:`TcpTransport` keeps the peer table, the lifecycle (start, close)
and the stats; each protocol is a part with one owner
(docs/architecture.md, "Who owns what"):

* :mod:`.link`: :class:`~.link.PeerLink`, the outbound side of one peer
  (queue, direct-write handoff, batching, reconnects with backoff);
* :mod:`.inbound`: accepting, admitting (``max_inbound``), TLS, the
  listener's handshake and serving each connection;
* :mod:`.snapshots`: snapshot streams, sender and receiver;
* :mod:`.calls`: calls, outbound futures and inbound serving;
* :mod:`.greeting`: the handshake's frames, both sides, whose decisions
  are the pure functions of :mod:`.handshake` (``check_hello``).

The parts share a :class:`~._context.Context` (identity, limits, the
handler and its callbacks).

Logging goes to the ``liferaft.transport`` logger (or the one passed in):
WARNING for refusals (at most one per 10 s: strangers can cause them at
will) and protocol violations, INFO for connections made and
lost, DEBUG for failed dials (which repeat while a peer is down).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from liferaft.core.messages import InstallSnapshot, Message, NodeId

from ._context import Context
from ._frames import DEFAULT_MAX_FRAME, SNAPSHOT_CHUNK
from .base import (
    CallNotSentError,
    TransportHandler,
    check_tcp_address,
    format_address,
    parse_address,
)
from .calls import CallServer, OutboundCalls
from .epoch import Epoch
from .greeting import Dialer, Resolver, system_resolver
from .inbound import Inbound, InboundSettings
from .link import LinkSettings, PeerLink

__all__ = ["TcpTransport"]

_LOG = logging.getLogger("liferaft.transport")


class TcpTransport:
    """The production :class:`~liferaft.transport.base.Transport`: asyncio TCP.

    ``node_id`` and ``cluster_id`` go into the handshake; a peer must know
    both.  Under a :class:`~liferaft.runtime.Node` leave them out
    (``TcpTransport(listen_addr="host:port")``): the node gives the transport
    its own id and cluster id (:meth:`bind_node`), so they are written once,
    in ``NodeConfig``.  Given here as well they must match the node's, or the
    ``Node`` refuses to be built, naming both values.  A transport used on its
    own (tests, tools) takes them here.

    ``listen_addr`` is ``"host:port"``; port 0 picks a free port and
    :attr:`address` tells which after :meth:`start`.  ``ssl_server`` turns on
    TLS for accepted connections (set ``verify_mode = CERT_REQUIRED`` on it
    for mutual TLS) and ``ssl_client`` for dialed ones; the server's
    certificate is checked against the host part of the peer's address.

    ``max_frame`` bounds every frame (and so every message, call and reply)
    in both directions; a message that would exceed it is dropped at the
    sender, a call payload raises :class:`CallError`.  Use one value across
    a cluster: a receiver closes a connection that sends it a larger frame.
    ``queue_size`` bounds each peer's outbound queue.  With
    ``direct_writes`` (the default) a message to an idle, connected peer is
    written to its socket at once and queues only while the socket is backed
    up (over 64 KiB buffered), so memory stays bounded either way.  ``rng``
    draws the reconnect jitter; pass a seeded one for reproducible timing.

    Who may connect (docs/transport.md, "Handshake" and "Limits"):
    ``peer_secret`` is the cluster secret every member holds; with it, a
    dialer must prove it holds the same one (HMAC challenge-response, both
    ways) before anything but the handshake is read from it.  With mutual
    TLS (``ssl_server.verify_mode == CERT_REQUIRED``) the certificate each
    side presents must also name the node id it claims.  With neither, the
    handshake authenticates nobody: keep such a node on loopback.  At most
    ``max_inbound`` connections are open at once (one more closes the
    oldest that is still in its handshake, or itself if none is; counted);
    the handshake must complete within
    ``handshake_timeout``; a caller connection with no call running and no
    frame arriving for ``caller_idle_timeout`` seconds is closed.

    A peer address may name its host by DNS name: ``resolver`` (default:
    the system's ``getaddrinfo``) is asked on every dial and every redial,
    and its answer is never kept, so a peer that comes back at a new IP
    address under the same name is found again.

    ``epoch`` is this node's cluster epoch (docs/transport.md, "Epochs"):
    0 unless ``--force-new-cluster`` made a newer one; None for an empty
    node joining, which takes the first proven member's (``on_epoch(e)``
    is called first, to make it durable).  A member of a newer epoch proves
    to an older peer that it was left behind: that node turns stale (it
    delivers, sends and calls nothing more) and ``on_stale(reason)`` is
    told, once.
    """

    def __init__(
        self,
        node_id: NodeId | None = None,
        cluster_id: str | None = None,
        listen_addr: str | None = None,
        ssl_server: ssl.SSLContext | None = None,
        ssl_client: ssl.SSLContext | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        queue_size: int = 4096,
        logger: logging.Logger | None = None,
        *,
        rng: random.Random | None = None,
        snapshot_chunk: int = SNAPSHOT_CHUNK,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
        connect_timeout: float = 5.0,
        handshake_timeout: float = 5.0,
        max_batch: int = 512,
        direct_writes: bool = True,
        peer_secret: bytes | None = None,
        max_inbound: int = 128,
        caller_idle_timeout: float = 10.0,
        resolver: Resolver = system_resolver,
        epoch: int | None = 0,
        on_epoch: Callable[[int], None] | None = None,
        on_stale: Callable[[str], None] | None = None,
    ) -> None:
        if node_id is not None and not node_id:
            raise ValueError("node_id must not be empty")
        if listen_addr is None:
            raise ValueError("listen_addr is required: TcpTransport(listen_addr='host:port')")
        if max_frame < 1024:
            raise ValueError("max_frame must be at least 1024 bytes")
        if queue_size < 1 or max_batch < 1 or snapshot_chunk < 1:
            raise ValueError("queue_size, max_batch and snapshot_chunk must be positive")
        if not 0 < min_backoff <= max_backoff:
            raise ValueError("need 0 < min_backoff <= max_backoff")
        if max_inbound < 1 or caller_idle_timeout <= 0 or handshake_timeout <= 0:
            raise ValueError("max_inbound and the timeouts must be positive")
        if peer_secret is not None and not peer_secret:
            raise ValueError("peer_secret must not be empty (None turns it off)")
        # None until given here or by the Node (bind_node); "" meanwhile below.
        self.node_id: NodeId | None = node_id
        self.cluster_id: str | None = cluster_id
        node_id, cluster_id = node_id or "", cluster_id or ""
        self._listen = parse_address(listen_addr)
        self.address = listen_addr
        self._secret = peer_secret
        # Mutual TLS: certificates name node ids, checked both ways.
        self._cert_ids = ssl_server is not None and ssl_server.verify_mode == ssl.CERT_REQUIRED
        self._log = logger or _LOG
        self._ctx = Context(node_id, cluster_id, max_frame, self._log)
        self._ctx.epoch = Epoch(epoch, on_epoch, on_stale)
        dialer = Dialer(
            node_id,
            cluster_id,
            ssl_client,
            peer_secret,
            self._cert_ids,
            connect_timeout,
            handshake_timeout,
            resolver,
            self._ctx.epoch,
        )
        self._link_settings = LinkSettings(
            queue_size=queue_size,
            max_batch=max_batch,
            direct_writes=direct_writes,
            # A chunk frame carries one kind byte besides the chunk.
            snapshot_chunk=min(snapshot_chunk, max_frame - 1),
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            rng=rng or random.Random(),
        )
        self._dialer = dialer
        self._links: dict[NodeId, PeerLink] = {}
        self._calls = OutboundCalls(self._ctx, dialer)
        self._served = CallServer(self._ctx, self._links.__contains__)
        self._inbound = Inbound(
            self._ctx,
            InboundSettings(
                ssl_server=ssl_server,
                secret=peer_secret,
                cert_ids=self._cert_ids,
                max_inbound=max_inbound,
                handshake_timeout=handshake_timeout,
                caller_idle_timeout=caller_idle_timeout,
            ),
            self._links.keys,
            self._served,
        )
        self._unknown_dropped = 0

    # -- identity ------------------------------------------------------------------

    def bind_node(self, node_id: NodeId, cluster_id: str) -> None:
        """Take the node id and cluster id of the node this transport serves.

        :class:`~liferaft.runtime.Node` calls it when it is built, so the ids
        are given once, in ``NodeConfig``.  Raises ``ValueError`` naming both
        values if the transport was built with different ones, or if it is
        already running under ids it did not have when built.
        """
        for what, mine, theirs in (
            ("node id", self.node_id, node_id),
            ("cluster id", self.cluster_id, cluster_id),
        ):
            if mine is not None and mine != theirs:
                raise ValueError(
                    f"the {what} is given twice and differs: the transport has {mine!r}, "
                    f"the node {theirs!r}; give it once, in NodeConfig, and build the "
                    "transport as TcpTransport(listen_addr=...)"
                )
        if self.node_id is not None and self.cluster_id is not None:
            return  # the same ids, given twice: nothing to change
        if self._ctx.handler is not None or self._links:
            raise ValueError("bind_node must come before start() and set_peers()")
        self.node_id, self.cluster_id = node_id, cluster_id
        self._ctx.node_id, self._ctx.cluster_id = node_id, cluster_id
        # The dialer is frozen and shared by every link and call made later:
        # nothing holds the old one yet (no link, not started).
        self._dialer = dataclasses.replace(self._dialer, node_id=node_id, cluster_id=cluster_id)
        self._calls = OutboundCalls(self._ctx, self._dialer)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, handler: TransportHandler) -> None:
        """Listen on ``listen_addr`` and start dialing every known peer."""
        ctx = self._ctx
        if self.node_id is None or self.cluster_id is None:
            raise RuntimeError(
                "TcpTransport has no node id or cluster id: give both, or hand the transport "
                "to a Node, which gives it its own"
            )
        if ctx.handler is not None:
            raise RuntimeError("transport already started")
        if ctx.closed:
            raise RuntimeError("transport is closed")
        ctx.handler = handler
        ctx.loop = asyncio.get_running_loop()
        ctx.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix=f"liferaft-transport-{self.node_id}"
        )
        self.address = format_address(*await self._inbound.listen(*self._listen))
        self._log.info("node %s listening on %s", self.node_id, self.address)
        for link in self._links.values():
            link.start()

    async def close(self) -> None:
        """Stop listening, close every connection and cancel every task.

        Every pending call fails with :class:`CallError`.  Idempotent."""
        ctx = self._ctx
        if ctx.closed:
            return
        ctx.closed = True
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(link.close()) for link in self._links.values()]
        tasks += [*self._calls.close(), *self._served.close(), *self._inbound.close()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5.0)
            if pending:  # never expected: every task honours cancellation
                self._log.error("%d transport tasks ignored cancellation", len(pending))
        await self._inbound.wait_closed()
        if ctx.pool is not None:
            ctx.pool.shutdown(wait=False)

    # -- peers -----------------------------------------------------------------------

    def check_address(self, address: str) -> None:
        """Raise ``ValueError`` unless ``address`` is a usable "host:port"."""
        check_tcp_address(address)

    def set_peers(self, peers: Mapping[NodeId, str]) -> None:
        """Replace the peer table (id -> "host:port"); our own id is ignored.

        New peers are dialed, removed ones disconnected (both directions), and
        a peer whose address changed is redialed.  Raises ``ValueError`` for a
        malformed address, before changing anything.
        """
        table = {pid: addr for pid, addr in peers.items() if pid != self.node_id}
        for addr in table.values():
            check_tcp_address(addr)
        for pid in list(self._links):
            if pid not in table:
                self._links.pop(pid).stop("the peer table changed")
                self._inbound.drop_peer(pid)
        for pid, addr in table.items():
            link = self._links.get(pid)
            if link is None:
                link = self._links[pid] = PeerLink(
                    self._ctx, self._dialer, self._link_settings, pid, addr
                )
                link.start()
            elif link.address != addr:
                link.readdress(addr)

    # -- sending ---------------------------------------------------------------------

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.to``; drop and count it if that cannot be done."""
        link = self._links.get(msg.to)
        if link is None or not self._ctx.running or self._ctx.epoch.stale is not None:
            self._unknown_dropped += 1
            if self._ctx.running:
                self._log.debug("dropped %s to %r (unknown peer, or this node is stale)",
                                type(msg).__name__, msg.to)  # fmt: skip
                self._ctx.report_unreachable(msg.to)
                if isinstance(msg, InstallSnapshot):
                    self._ctx.snapshot_status_soon(msg.to, False)
            return
        link.send(msg)

    # -- calls -------------------------------------------------------------------------

    async def call(self, peer: NodeId, payload: bytes, timeout: float) -> bytes:
        """Send ``payload`` to ``peer`` on its connection; return the reply.

        Raises :class:`CallError` or ``TimeoutError`` (see
        :meth:`~liferaft.transport.base.Transport.call`).  A peer that is
        still being dialed for the first time is waited for; one whose
        connection is down fails at once.
        """
        self._calls.check(payload)
        if self._ctx.epoch.stale is not None:
            raise CallNotSentError(f"this node is stale: {self._ctx.epoch.stale}")
        link = self._links.get(peer)
        if link is None:
            raise CallNotSentError(f"unknown peer {peer!r}")
        link.check_call()
        item = self._calls.new(payload)
        link.enqueue_call(item)
        return await self._calls.wait(item, timeout)

    async def call_address(self, address: str, payload: bytes, timeout: float) -> bytes:
        """Call whoever listens at ``address`` over a one-off CALLER connection.

        The other node need not know us, nor we its id; it must be in the same
        cluster (and pass the TLS checks).  Raises :class:`CallError` or
        ``TimeoutError``.
        """
        return await self._calls.call_address(address, payload, timeout)

    # -- introspection ------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``{"peers": {id: {connected, sent, dropped, reconnects, ...}}, ...node-wide...}``."""
        inbound = self._inbound
        return {
            "node_id": self.node_id,
            "address": self.address,
            "peers": {pid: link.stats() for pid, link in self._links.items()},
            "inbound": sorted(c.peer for c in inbound.conns if not c.caller),
            "callers": sum(1 for c in inbound.conns if c.caller),
            "calls_pending": len(self._calls.pending),
            "calls_served": self._served.served,
            "received": self._ctx.received,
            "refused": inbound.refused,
            "bad_frames": inbound.bad_frames,
            "handshaking": len(inbound.accepting),
            "over_capacity": inbound.over_capacity,
            "idle_closed": inbound.idle_closed,
            "authentication": self._authentication(),
            "unknown_dropped": self._unknown_dropped,
            "epoch": self._ctx.epoch.value,
            "stale": self._ctx.epoch.stale,
        }

    def _authentication(self) -> str:
        """How this node's peers prove who they are, for stats and logs."""
        ways = [w for w, on in (("secret", self._secret), ("mtls", self._cert_ids)) if on]
        return "+".join(ways) or "none"

    def __repr__(self) -> str:
        return f"TcpTransport({self.node_id!r}, {self.address!r})"
