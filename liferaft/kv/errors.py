"""The typed errors of the KV service (liferaft/kv/service.py).

Each carries a stable ``code`` (the ``error`` field of the HTTP API) and two
facts a client retries on (docs/architecture.md, "Outcomes"):
``retry_safe`` (provably not applied, and never will be: HTTP 503) and
``outcome_unknown`` (it may have applied or may still: HTTP 504).  The
status each front end answers with is its own mapping of the class; these
carry no transport in them.
"""

from __future__ import annotations

from typing import Any


class KVError(Exception):
    """Base of every error the KV service raises; ``extra`` holds the fields
    an answer carries beside ``code`` and the message (``current``)."""

    code = "error"
    retry_safe = False
    outcome_unknown = False

    def __init__(self, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.extra = extra


class KVBadRequestError(KVError):
    """Input the service cannot take: nothing was proposed."""

    code = "bad_request"


class KVNotFoundError(KVError):
    """No such key or member."""

    code = "not_found"


class KVConflictError(KVError):
    """Refused as it stands: a membership change in flight or refused
    (``conflict``), or a session ``seq`` holding another write's outcome
    (``seq_reused``).  Not applied."""

    code = "conflict"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


class KVPreconditionFailedError(KVError):
    """A write's condition did not hold; ``current`` is what the key holds
    (a JSON-ready ``{"value", "revision"}``, or None if absent)."""

    code = "precondition_failed"

    def __init__(self, current: Any) -> None:
        cur = None if current is None else {"value": current.value, "revision": current.revision}
        super().__init__("the condition did not hold", current=cur)


class KVTooLargeError(KVError):
    """A value over the configured limit: nothing was proposed."""

    code = "too_large"


class KVUnavailableError(KVError):
    """Not applied, and it never will be: safe to retry (``no_leader``,
    ``storage_failed``)."""

    retry_safe = True

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


class KVOutcomeUnknownError(KVError):
    """It may have applied, or may still (``timeout``); or the session can
    no longer tell (``session_expired``).  Retry in the same session."""

    outcome_unknown = True

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code)


__all__ = [
    "KVBadRequestError",
    "KVConflictError",
    "KVError",
    "KVNotFoundError",
    "KVOutcomeUnknownError",
    "KVPreconditionFailedError",
    "KVTooLargeError",
    "KVUnavailableError",
]
