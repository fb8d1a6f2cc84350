"""The KV service's error for each runtime error.

============================  =========================  ==============  ====
runtime error                 KVError                    code            HTTP
============================  =========================  ==============  ====
NotLeaderError, StoppedError  KVUnavailableError         no_leader       503
DroppedError                  KVUnavailableError         no_leader       503
StorageFailedError            KVUnavailableError         storage_failed  503
NodeTimeoutError              KVOutcomeUnknownError      timeout         504
MembershipError               KVConflictError            conflict        409
BadConfigError (any other)    KVBadRequestError          bad_request     400
============================  =========================  ==============  ====

``KVUnavailableError`` is ``retry_safe``: provably not applied (and never
will be).  ``KVOutcomeUnknownError`` is ``outcome_unknown``: it may apply;
retry in the same session (docs/architecture.md, "Outcomes").
"""

from __future__ import annotations

from liferaft.runtime import (
    DroppedError,
    MembershipError,
    NodeError,
    NodeTimeoutError,
    NotLeaderError,
    StoppedError,
    StorageFailedError,
)

from .errors import (
    KVBadRequestError,
    KVConflictError,
    KVError,
    KVOutcomeUnknownError,
    KVUnavailableError,
)


def node_error(exc: NodeError) -> KVError:
    """The service error for a runtime error (the table in the module doc)."""
    if isinstance(exc, NotLeaderError):
        return KVUnavailableError("no_leader", f"no leader: {exc}; not proposed, safe to retry")
    if isinstance(exc, DroppedError):
        return KVUnavailableError("no_leader", f"{exc}; not applied, safe to retry")
    if isinstance(exc, StorageFailedError):
        return KVUnavailableError("storage_failed", f"{exc}; not proposed")
    if isinstance(exc, StoppedError):
        return KVUnavailableError("no_leader", f"{exc}; not proposed")
    if isinstance(exc, NodeTimeoutError):
        return KVOutcomeUnknownError("timeout", f"{exc}; the outcome is unknown")
    if isinstance(exc, MembershipError):
        return KVConflictError("conflict", str(exc))
    return KVBadRequestError(str(exc))
