"""Status calls: one member asks another for its own state.

Theory of operation
-------------------
A view of the whole cluster (the web console, liferaft/console/) needs each
member's role, term, indices and storage health as that member sees them;
the leader's progress table knows only match indices, and a follower knows
nothing of the others.  So any member may ask any other, over the peer RPC
(liferaft/runtime/peer_rpc.py: ``StatusQuery``, answered ``NodeState``).
The answer is the node's own, never routed to the leader, and costs a
status read: no log entry, no disk.

Who may ask (docs/architecture.md, "Trust model"): proven members only; a
stranger's query is refused by liferaft/runtime/peer_server.py with a
``PermissionError`` before it gets here, as every call but ``join`` is.

An application adds its own counters to the answer with :meth:`on_status`
(a function returning a small JSON-like map, called for each answer); the
map is bounded (:data:`MAX_EXTRA` encoded bytes), and a function that
raises or returns too much yields ``{"extra_error": why}`` instead: a bad
hook must not make the member look down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec

from liferaft.transport.base import CallError, CallNotSentError, Transport

from . import peer_rpc
from .config import NodeStatus
from .errors import NodeTimeoutError, PeerUnreachableError, UnknownCallError

log = logging.getLogger("liferaft.runtime")

#: Largest encoded ``extra`` map a node sends with its state.
MAX_EXTRA = 8 * 1024

Extra = Callable[[], dict[str, Any]]


class PeerStatus:
    """This node's answer to status queries, and its queries of others."""

    def __init__(
        self, node_id: str, status: Callable[[], NodeStatus], transport: Transport
    ) -> None:
        self.id = node_id
        self._status = status
        self._transport = transport
        self._extra: Extra | None = None

    def on_status(self, extra: Extra) -> None:
        """Add ``extra()`` (a small map) to every state this node reports."""
        self._extra = extra

    def local(self) -> peer_rpc.NodeState:
        """This node's state, as it answers a query."""
        st = self._status()
        return peer_rpc.NodeState(
            st.role, st.term, st.leader, st.commit_index, st.applied_index,
            st.last_log_index, st.snapshot_index, st.storage_ok, self._extras(),
        )  # fmt: skip

    def _extras(self) -> dict[str, Any]:
        if self._extra is None:
            return {}
        try:
            got = dict(self._extra())
            size = len(msgspec.msgpack.encode(got))
        except Exception as exc:  # the application's hook: never fail the answer
            log.warning("node %s: status extra failed: %r", self.id, exc)
            return {"extra_error": f"{type(exc).__name__}: {exc}"[:200]}
        if size > MAX_EXTRA:
            return {"extra_error": f"{size} bytes of extra status (at most {MAX_EXTRA})"}
        return got

    def serve(self) -> bytes:
        """The reply to a member's query (peer_server checked the caller)."""
        return peer_rpc.encode(self.local())

    async def ask(self, node_id: str, timeout: float) -> peer_rpc.NodeState:
        """``node_id``'s own state (this node's without a call).  Raises
        :class:`NodeTimeoutError` (no answer in ``timeout`` s),
        :class:`PeerUnreachableError` (not asked) or :class:`UnknownCallError`
        (it refused or cannot read the query: an older build)."""
        if node_id == self.id:
            return self.local()
        req = peer_rpc.encode(peer_rpc.StatusQuery())
        try:
            raw = await self._transport.call(node_id, req, timeout)
        except CallNotSentError as exc:
            raise PeerUnreachableError(f"{node_id}: {exc}") from None
        except TimeoutError:
            raise NodeTimeoutError(f"{node_id} did not answer within {timeout:g} s") from None
        except CallError as exc:
            if str(exc).startswith("remote error:"):
                raise UnknownCallError(f"{node_id} refused the status query: {exc}") from None
            raise PeerUnreachableError(f"{node_id}: {exc}") from None
        try:
            rep = peer_rpc.decode_reply(raw)
        except peer_rpc.RpcError as exc:
            raise UnknownCallError(f"{node_id}: {exc}") from None
        if not isinstance(rep, peer_rpc.NodeState):
            raise UnknownCallError(f"{node_id} answered {type(rep).__name__}, not its state")
        return rep


__all__ = ["MAX_EXTRA", "Extra", "PeerStatus"]
