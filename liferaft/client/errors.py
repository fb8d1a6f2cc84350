"""The client's errors: every one is a :class:`ClientError`, typed by the
HTTP status that answered (docs/kv.md, "Errors"), with the old names of
issue 13's rename as aliases until 0.2.0 (docs/architecture.md, "Names")."""

from __future__ import annotations

import urllib.parse
from typing import Any

from .model import Item, item_or_none


class ClientError(Exception):
    """An answer the client cannot turn into success."""

    def __init__(self, message: str, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NotFoundError(ClientError):
    """The key does not exist (HTTP 404)."""


class PreconditionFailedError(ClientError):
    """A compare-and-swap's condition did not hold (HTTP 412); ``current`` is
    the key's value now, None if it is absent."""

    def __init__(self, message: str, current: Item | None) -> None:
        super().__init__(message, 412, "precondition_failed")
        self.current = current


class NoSuchLeaseError(NotFoundError):
    """The lease does not exist: never granted, revoked, or expired
    (code ``lease_not_found``, whatever the status that carried it)."""


class BadRequestError(ClientError):
    """The server refused the request as malformed (HTTP 400)."""


class RevisionCompactedError(BadRequestError):
    """A read or watch at a revision compaction removed; history starts at
    ``compact_revision`` (read or watch from there, or later)."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message, 400, "compacted")
        self.compact_revision = compact_revision


class UnauthorizedError(ClientError):
    """A missing or wrong bearer token (HTTP 401)."""


class TooLargeError(ClientError):
    """The key, value or request body is over the server's limit (HTTP 413)."""


class TLSError(ClientError):
    """The TLS handshake with an https endpoint failed (not TLS there, or a
    certificate the client does not trust); nothing was sent."""


class UnavailableError(ClientError):
    """No node could take the request before the deadline; nothing applied
    (no attempt of a write reached a server, or every one that did was
    refused as not applied)."""


class ClientTimeoutError(ClientError, TimeoutError):
    """The deadline passed and the outcome of the last attempt is unknown.

    A subclass of the builtin ``TimeoutError`` (issue 14), so ``except
    TimeoutError`` catches it as it catches ``asyncio.timeout``'s; it is
    named ``ClientTimeoutError`` so as not to shadow that builtin."""


class SessionExpiredError(ClientTimeoutError):
    """The cluster no longer holds this write's session or outcome, and an
    earlier attempt may have applied it: the outcome is unknown.  (It did
    not apply on the attempt that got this answer.)"""


# --- old names: the same class objects, kept for one release (they go in 0.2.0) ---

NotFound = NotFoundError
PreconditionFailed = PreconditionFailedError
BadRequest = BadRequestError
Unauthorized = UnauthorizedError
TooLarge = TooLargeError
Unavailable = UnavailableError
Timeout = ClientTimeoutError
SessionExpired = SessionExpiredError


class ExpiredUnappliedError(ClientError):
    """session_expired with no earlier attempt that may have applied: the
    write was not applied, so it may be sent again in a new session."""


def typed_error(status: int, code: str, msg: str, data: dict[str, Any], path: str) -> ClientError:
    """The typed error of a refused request (HTTP ``status`` >= 400 other than
    503 and 504, which :meth:`AsyncClient.request` retries)."""
    # By code first: a lease the leader lost answers 404 when a follower
    # forwarded the call, 400 when the node itself found it missing.
    if code == "lease_not_found":
        return NoSuchLeaseError(msg, status, code)
    if code == "compacted":
        return RevisionCompactedError(msg, int(data.get("compact_revision", 0)))
    if status == 404:
        return NotFoundError(msg, status, code)
    if status == 412:
        key = urllib.parse.unquote(path.split("/v1/kv/", 1)[-1].split("?")[0])
        return PreconditionFailedError(msg, item_or_none(key, data.get("current")))
    if status == 401:
        return UnauthorizedError(msg, status, code)
    if status == 413:
        return TooLargeError(msg, status, code)
    if status == 400:
        return BadRequestError(msg, status, code)
    return ClientError(f"{status} {code}: {msg}", status, code)
