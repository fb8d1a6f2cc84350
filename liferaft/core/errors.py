"""Typed errors raised by the core for API misuse.

Protocol rejections (a stale term, a refused vote, a log mismatch) are never
exceptions: they travel as messages.  Exceptions are only for a caller that
asked the core for something it cannot do right now, or for a configuration
that can never work.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raised by liferaft.core."""


class ConfigError(RaftError, ValueError):
    """The node configuration is invalid (e.g. heartbeat >= election timeout)."""


class NotLeaderError(RaftError):
    """The operation needs the leader; ``leader`` is the best-known hint or None."""

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class ReadyOutstandingError(RaftError):
    """A message was stepped between ready() and advance(): handle the Ready
    (or advance) first, then step it again; nothing was changed."""


class ProposalDroppedError(RaftError):
    """The leader refused a proposal it could otherwise take (e.g. during transfer)."""


class ConfChangeError(RaftError):
    """A membership change was refused: another is in flight, or it is invalid."""


class LogCompactedError(RaftError):
    """The requested index lies before the first index kept in storage."""


class LogUnavailableError(RaftError):
    """The requested index lies after the last index in storage."""


class SnapshotTemporarilyUnavailableError(RaftError):
    """Storage cannot produce a snapshot right now; the leader retries later."""


class LogCorruptionError(RaftError):
    """The log would break a Raft invariant (e.g. overwriting a committed entry).

    This means storage returned something impossible, or a peer is byzantine.
    The node must stop rather than continue with diverged state.
    """
