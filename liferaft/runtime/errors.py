"""Typed errors of the running node and of replicated commands.

Names follow docs/architecture.md, "Names": every exception ends in
``Error``, a layer's base is ``<Layer>Error``, no name shadows a builtin,
and a condition two layers both raise has one name, the upper class
deriving from the lower one.

Every failure a caller of :class:`~liferaft.runtime.Node` can see is a
:class:`NodeError`, so ``except NodeError`` catches them all.  What the error
promises about the outcome matters to a caller that retries
(docs/architecture.md, "Outcomes"):

* :class:`NotLeaderError`, :class:`StoppedError` raised before proposing:
  nothing was proposed; retrying elsewhere is safe.
* :class:`DroppedError`: the entry was proposed but is known never to be
  applied (another leader overwrote it).
* :class:`NodeTimeoutError`: proposed, outcome unknown: it may still be
  applied.

The errors of :class:`~liferaft.runtime.commands.Replicated` objects
(:class:`CommandError` and below) are raised by the call or by ``apply``,
never by the node.

Old names (``NotLeader``, ``Timeout``, ``Stopped``, ``Dropped``,
``StorageFailed``, ``BadConfig``, ``BadMember``, ``BadArguments``,
``UnknownCommand``, ``BadEnvelope``, ``NotAttached``) are aliases of the same
class objects for one release: they go in 0.2.0.
"""

from __future__ import annotations

import msgspec

from liferaft.core import errors as _core

__all__ = [
    "BadArgumentsError",
    "BadConfigError",
    "BadEnvelopeError",
    "BadMemberError",
    "CallFailedError",
    "CommandError",
    "DroppedError",
    "LockTimeoutError",
    "MembershipError",
    "NodeError",
    "NodeTimeoutError",
    "NotAttachedError",
    "NotLeaderError",
    "StorageFailedError",
    "StoppedError",
    "UnknownCallError",
    "UnknownCommandError",
    "UnknownSectionError",
]

# --- the node ------------------------------------------------------------------


class NodeError(Exception):
    """Base of every error a :class:`~liferaft.runtime.Node` raises."""


class NotLeaderError(NodeError, _core.NotLeaderError):
    """This node cannot do that because it is not the leader (and could not
    forward).  ``leader_hint`` is the leader it knows of, if any.

    It is also the core's :class:`liferaft.core.NotLeaderError` (same
    condition, one name; docs/architecture.md, "Names"), whose ``leader``
    holds the same hint.
    """

    def __init__(self, message: str, leader_hint: str | None = None) -> None:
        super().__init__(message, leader_hint)
        self.leader_hint = leader_hint


class NodeTimeoutError(NodeError, TimeoutError):
    """The operation did not finish in time.  A proposal that timed out may
    still be committed and applied later.

    It is also the builtin ``TimeoutError``, so ``except TimeoutError`` (or
    ``asyncio.TimeoutError``) catches it as Python code expects; its own name
    keeps it from shadowing that builtin (docs/architecture.md, "Names")."""


class LockTimeoutError(NodeTimeoutError):
    """A lock's ``acquire(timeout=...)`` did not get the lock in time
    (liferaft/runtime/locks.py).  The lock is not held by this caller,
    unless the last attempt's outcome was unknown: a grant it may have won
    lapses after its ttl, and its token is never handed out again."""


class StoppedError(NodeError):
    """The node is stopped (or stopping)."""


class DroppedError(NodeError):
    """The proposal will never be applied: its log slot was taken by another
    leader's entry, or the leader refused it."""


class StorageFailedError(NodeError):
    """The disk refused a write (full, or an I/O error).  The node stops taking
    writes until a retry succeeds; nothing already synced is lost."""


class MembershipError(NodeError):
    """A membership change was refused (another in flight, unknown node,
    learner not caught up...)."""


class BadConfigError(NodeError, ValueError):
    """Invalid constructor or configuration arguments."""


class BadMemberError(BadConfigError):
    """A member id, address or description that cannot be used: refused before
    anything is proposed (the HTTP API answers 400)."""


class UnknownCallError(NodeError, LookupError):
    """The leader has no handler for a leader call of that name
    (:meth:`~liferaft.runtime.Node.call_leader`); nothing ran."""


class PeerUnreachableError(NodeError):
    """A call to a member was never answered: no connection to it, or the
    connection was lost (liferaft/runtime/peer_status.py)."""


class CallFailedError(NodeError):
    """A leader call's handler raised; the message is its exception's type
    and text (never a traceback).  What it did before raising is the
    handler's business."""


# --- replicated commands -----------------------------------------------------


class CommandError(Exception):
    """Base class of the errors of replicated commands and queries."""


class BadArgumentsError(CommandError, TypeError):
    """Arguments do not match the command's signature or type hints.

    Raised by the call, before anything is proposed, and by ``apply`` for an
    entry whose arguments fail validation (the state is then unchanged).
    """


class UnknownCommandError(CommandError, LookupError):
    """An entry names a command this class does not register.

    ``apply`` raises it before touching the state, e.g. when a newer
    version of the class proposed a command this replica does not know yet.
    """

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class UnknownSectionError(CommandError, LookupError):
    """An entry of a :class:`~liferaft.runtime.composite.Composite` names a
    section this node's state machine does not have; ``apply`` raises it
    before any object is touched."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class BadEnvelopeError(CommandError, ValueError):
    """An entry is not a command envelope (too short, bad version, bad msgpack)."""


class NotAttachedError(CommandError, RuntimeError):
    """A command or query was called on an instance no node has attached to."""


#: What msgspec raises for a value it cannot encode (a type, an int past 64
#: bits, a cycle); the command call and the snapshot writer both catch it.
ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError)

# --- old names: the same class objects, kept for one release (they go in 0.2.0) ---

NotLeader = NotLeaderError
Timeout = NodeTimeoutError
Stopped = StoppedError
Dropped = DroppedError
StorageFailed = StorageFailedError
BadConfig = BadConfigError
BadMember = BadMemberError
BadArguments = BadArgumentsError
UnknownCommand = UnknownCommandError
BadEnvelope = BadEnvelopeError
NotAttached = NotAttachedError
