"""Typed errors of the running node.

Every failure a caller of :class:`~liferaft.runtime.Node` can see is one of
these, so ``except NodeError`` catches them all.  What the error promises
about the outcome matters to a caller that retries:

* :class:`NotLeader`, :class:`Stopped` raised before proposing: nothing was
  proposed; retrying elsewhere is safe.
* :class:`Dropped`: the entry was proposed but is known never to be applied
  (another leader overwrote it).
* :class:`Timeout`: proposed, outcome unknown: it may still be applied.
"""

from __future__ import annotations


class NodeError(Exception):
    """Base of every runtime error."""


class NotLeader(NodeError):
    """This node cannot do that because it is not the leader (and could not
    forward).  ``leader_hint`` is the leader it knows of, if any."""

    def __init__(self, message: str, leader_hint: str | None = None) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


class Timeout(NodeError):
    """The operation did not finish in time.  A proposal that timed out may
    still be committed and applied later."""


class Stopped(NodeError):
    """The node is stopped (or stopping)."""


class Dropped(NodeError):
    """The proposal will never be applied: its log slot was taken by another
    leader's entry, or the leader refused it."""


class StorageFailed(NodeError):
    """The disk refused a write (full, or an I/O error).  The node stops taking
    writes until a retry succeeds; nothing already synced is lost."""


class MembershipError(NodeError):
    """A membership change was refused (another in flight, unknown node,
    learner not caught up...)."""


class BadConfig(NodeError, ValueError):
    """Invalid constructor or configuration arguments."""


class BadMember(BadConfig):
    """A member id, address or description that cannot be used: refused before
    anything is proposed (the HTTP API answers 400)."""
