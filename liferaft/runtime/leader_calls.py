"""Leader calls: an application's request to whichever node leads.

Theory of operation
-------------------
Some work belongs to the leader alone and is not a log entry: a lease's
keep-alive touches only the leader's memory (etcd keeps lease deadlines on
the leader and restarts them at full TTL after an election), and a console
asks the leader for what only it knows.  An application registers a handler
by name on every node (:meth:`LeaderCalls.on_call`); a call from any member
(:meth:`LeaderCalls.call`) runs it on the leader:

* on the leader itself, directly;
* on a follower, forwarded over the peer RPC as an ``app`` request
  (liferaft/runtime/peer_rpc.py), the same path and trust model as every
  other call a member makes of the leader (docs/architecture.md, "Trust
  model"): only a proven member's call is served (a stranger's is refused
  by liferaft/runtime/peer_server.py before it gets here), and the leader
  runs the handler only while it still leads.

What the caller is told (docs/architecture.md, "Outcomes"): the handler's
bytes; :class:`NotLeaderError` when no leader ran it within the timeout (a
leader that stepped down, or none known, is retried until then, since the
handler provably did not run); :class:`UnknownCallError` when the leader
has no handler of that name (or is a build without leader calls);
:class:`CallFailedError` with the handler's exception type and text (never
a traceback) when it raised; :class:`NodeTimeoutError` when the outcome is
unknown (the handler or the network took longer than the timeout).  A
handler that raises a runtime error (``NotLeaderError``, ``BadConfigError``
...) has it passed on as that type.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from liferaft.core import Role
from liferaft.transport.base import CallError, CallNotSentError, Transport

from . import peer_rpc
from ._futures import bounded
from .clock import Clock
from .config import NodeConfig
from .errors import (
    BadConfigError,
    CallFailedError,
    NodeError,
    NodeTimeoutError,
    NotLeaderError,
    UnknownCallError,
)
from .loop import RaftLoop

log = logging.getLogger("liferaft.runtime")

#: What a leader call's handler is: payload in, payload out, on the leader.
Handler = Callable[[bytes], Awaitable[bytes]]

#: Longest handler name (it travels in every call).
MAX_NAME = 255

# Refusals after which the call is tried again through whoever leads next:
# the handler did not run.
_MOVED_ON = (peer_rpc.Refusal.NOT_LEADER, peer_rpc.Refusal.NO_LEADER)


class LeaderCalls:
    """The handlers registered on this node, and calls to the leader's."""

    def __init__(
        self, loop: RaftLoop, transport: Transport, clock: Clock, config: NodeConfig
    ) -> None:
        self._loop = loop
        self._transport = transport
        self._clock = clock
        self._config = config
        self._handlers: dict[str, Handler] = {}
        self.id = loop.id

    def on_call(self, name: str, handler: Handler) -> None:
        """Register ``handler`` as the leader call ``name`` (on every node:
        any of them may lead).  :class:`BadConfigError` for a bad name, a
        handler that is not callable, or a name registered already."""
        _check_name(name)
        if not callable(handler):
            raise BadConfigError(f"the handler of leader call {name!r} is not callable")
        if name in self._handlers:
            raise BadConfigError(f"leader call {name!r} is registered already")
        self._handlers[name] = handler

    async def call(self, name: str, payload: bytes, timeout: float | None = None) -> bytes:
        """Run the leader's handler ``name`` on ``payload``; its bytes (see
        the module doc for every error)."""
        _check_name(name)
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise BadConfigError(
                f"a leader call's payload must be bytes, not {type(payload).__name__}"
            )
        data = bytes(payload)
        t = self._config.commit_timeout if timeout is None else timeout
        if t <= 0:
            raise BadConfigError(f"timeout must be positive, not {t}")
        loop, clock = self._loop, self._clock
        deadline = clock.monotonic() + t
        while True:
            loop.check_running()
            rn = loop.rn
            assert rn is not None
            leader = rn.leader
            left = deadline - clock.monotonic()
            if rn.role is Role.LEADER:
                try:
                    return await self.run(name, data, left)
                except NotLeaderError:
                    leader = None  # stepped down under it: nothing ran, try the next
            elif leader is not None and leader != self.id:
                got = await self._forward(leader, name, data, deadline)
                if got is not None:
                    return got
            left = deadline - clock.monotonic()
            if left <= 0:
                raise NotLeaderError(
                    f"leader call {name!r}: no leader ran it (node {self.id} knows of {leader})",
                    leader,
                )
            await loop.wait_leader_change(
                min(left, self._config.tick_interval * self._config.election_ticks)
            )

    async def run(self, name: str, payload: bytes, t: float) -> bytes:
        """On the leader: run the handler ``name`` for at most ``t`` seconds."""
        handler = self._handlers.get(name)
        if handler is None:
            raise UnknownCallError(f"node {self.id} has no leader call {name!r}")
        try:
            out = await bounded(
                self._clock,
                handler(payload),
                max(0.0, t),
                f"leader call {name!r} did not finish in time; outcome unknown",
            )
        except NodeError:
            raise  # typed already (a timeout, a handler's NotLeaderError, ...)
        except Exception as exc:
            log.warning("node %s: leader call %r failed: %r", self.id, name, exc, exc_info=exc)
            raise CallFailedError(
                f"leader call {name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(out, bytes | bytearray | memoryview):
            raise CallFailedError(
                f"leader call {name!r} returned {type(out).__name__}, not bytes"
            )
        return bytes(out)

    async def serve(self, req: peer_rpc.AppCall) -> bytes:
        """The leader's side of a member's call (peer_server checked the caller)."""
        rn = self._loop.rn
        try:
            _check_name(req.name)
            if rn is None or rn.role is not Role.LEADER or not self._loop.running:
                raise NotLeaderError(
                    f"node {self.id} is not the leader", None if rn is None else rn.leader
                )
            out = await self.run(req.name, req.payload, req.timeout)
        except NodeError as exc:
            return peer_rpc.encode(peer_rpc.refusal(exc))
        return peer_rpc.encode(peer_rpc.Answer(out))

    async def _forward(
        self, leader: str, name: str, payload: bytes, deadline: float
    ) -> bytes | None:
        """Ask ``leader`` to run it: its answer, or None if it provably did
        not run and the leader moved on (try the next)."""
        left = max(0.01, deadline - self._clock.monotonic())
        # The leader bounds the handler by ``left``; its answer needs a
        # moment more to come back.
        slack = self._config.tick_interval * self._config.heartbeat_ticks * 2
        req = peer_rpc.encode(peer_rpc.AppCall(name, payload, left))
        try:
            raw = await bounded(
                self._clock,
                self._transport.call(leader, req, left + slack),
                left + slack,
                f"leader call {name!r} to {leader} timed out; outcome unknown",
            )
        except CallNotSentError as exc:
            log.debug("node %s: cannot reach leader %s: %s", self.id, leader, exc)
            return None
        except NodeTimeoutError:
            raise
        except TimeoutError:
            raise NodeTimeoutError(
                f"leader call {name!r} to {leader} timed out; outcome unknown"
            ) from None
        except Exception as exc:
            if isinstance(exc, CallError) and str(exc).startswith("remote error:"):
                # The leader could not read the call (a build without leader
                # calls) or refused the caller: nothing ran.
                raise UnknownCallError(f"{leader} refused leader call {name!r}: {exc}") from None
            raise NodeTimeoutError(
                f"leader call {name!r} to {leader} failed: {exc}; outcome unknown"
            ) from None
        rep = peer_rpc.reply_of(raw, leader, peer_rpc.Answer)
        if isinstance(rep, peer_rpc.Answer):
            return rep.payload
        if rep.code in _MOVED_ON:
            return None
        raise peer_rpc.error_of(rep, leader)


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise BadConfigError(
            f"a leader call's name must be a non-empty string of at most {MAX_NAME} "
            f"characters, not {name!r:.80}"
        )


__all__ = ["MAX_NAME", "Handler", "LeaderCalls"]
