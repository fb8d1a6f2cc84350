"""etcd's errors: gRPC status codes and messages, exactly as etcd 3.4 sends them.

Clients match on these: etcdctl prints the message, clientv3 turns known
messages back into typed errors (``rpctypes.ErrCompacted``...), and its
retry policy reads the code.  The texts and codes are those of etcd 3.4's
``etcdserver/api/v3rpc/rpctypes/error.go``; the HTTP status of each code is
the JSON gateway's (grpc-gateway v1, which etcd 3.4 embeds).

Outcomes (docs/architecture.md): liferaft's "not applied" and "unknown"
both become ``UNAVAILABLE``, as in etcd; the message tells them apart
("etcdserver: no leader" was never proposed, "etcdserver: request timed
out" may still apply).  docs/etcd.md says what each tested client retries.
"""

from __future__ import annotations

import grpc

from liferaft.kv.errors import (
    KVBadRequestError,
    KVConflictError,
    KVError,
    KVNotFoundError,
    KVOutcomeUnknownError,
    KVPreconditionFailedError,
    KVTooLargeError,
    KVUnavailableError,
)
from liferaft.kv.mvcc.ops import (
    CompactedError,
    FutureRevisionError,
    KeyNotFoundError,
    LeaseExistsError,
    LeaseNotFoundError,
)

Code = grpc.StatusCode


class EtcdError(Exception):
    """An error as etcd sends it: a gRPC status code and etcd's message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The JSON gateway's HTTP status for this error."""
        return HTTP_STATUS.get(self.code, 500)


def _e(code: grpc.StatusCode, message: str) -> EtcdError:
    return EtcdError(code, "etcdserver: " + message)


# The errors the handlers raise by name (etcd's texts).
EMPTY_KEY = _e(Code.INVALID_ARGUMENT, "key is not provided")
KEY_NOT_FOUND = _e(Code.INVALID_ARGUMENT, "key not found")
VALUE_PROVIDED = _e(Code.INVALID_ARGUMENT, "value is provided")
LEASE_PROVIDED = _e(Code.INVALID_ARGUMENT, "lease is provided")
TOO_MANY_OPS = _e(Code.INVALID_ARGUMENT, "too many operations in txn request")
DUPLICATE_KEY = _e(Code.INVALID_ARGUMENT, "duplicate key given in txn request")
REQUEST_TOO_LARGE = _e(Code.INVALID_ARGUMENT, "request is too large")
COMPACTED = _e(Code.OUT_OF_RANGE, "mvcc: required revision has been compacted")
FUTURE_REV = _e(Code.OUT_OF_RANGE, "mvcc: required revision is a future revision")
LEASE_NOT_FOUND = _e(Code.NOT_FOUND, "requested lease not found")
LEASE_EXIST = _e(Code.FAILED_PRECONDITION, "lease already exists")
LEASE_TTL_TOO_LARGE = _e(Code.OUT_OF_RANGE, "too large lease TTL")
MEMBER_EXIST = _e(Code.FAILED_PRECONDITION, "member ID already exist")
PEER_URL_EXIST = _e(Code.FAILED_PRECONDITION, "Peer URLs already exists")
MEMBER_BAD_URLS = _e(Code.INVALID_ARGUMENT, "given member URLs are invalid")
MEMBER_NOT_FOUND = _e(Code.NOT_FOUND, "member not found")
MEMBER_NOT_LEARNER = _e(Code.FAILED_PRECONDITION, "can only promote a learner member")
LEARNER_NOT_READY = _e(
    Code.FAILED_PRECONDITION, "can only promote a learner member which is in sync with leader"
)
NOT_ENOUGH_STARTED = _e(
    Code.FAILED_PRECONDITION,
    "re-configuration failed due to not enough started members",
)
BAD_LEADER_TRANSFEREE = _e(Code.FAILED_PRECONDITION, "bad leader transferee")
NO_LEADER = _e(Code.UNAVAILABLE, "no leader")
NOT_LEADER = _e(Code.FAILED_PRECONDITION, "not leader")
STOPPED = _e(Code.UNAVAILABLE, "server stopped")
TIMEOUT = _e(Code.UNAVAILABLE, "request timed out")
TOO_MANY_REQUESTS = _e(Code.RESOURCE_EXHAUSTED, "too many requests")
UNHEALTHY = _e(Code.UNAVAILABLE, "unhealthy cluster")
AUTH_FAILED = _e(Code.INVALID_ARGUMENT, "authentication failed, invalid user ID or password")
AUTH_NOT_ENABLED = _e(Code.FAILED_PRECONDITION, "authentication is not enabled")
INVALID_AUTH_TOKEN = _e(Code.UNAUTHENTICATED, "invalid auth token")
USER_EMPTY = _e(Code.INVALID_ARGUMENT, "user name is empty")
PERMISSION_DENIED = _e(Code.PERMISSION_DENIED, "permission denied")

# grpc-gateway v1's runtime.HTTPStatusFromCode (what etcd 3.4's gateway answers).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    Code.OK: 200,
    Code.CANCELLED: 408,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.UNAUTHENTICATED: 401,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 412,  # v1.9 (etcd 3.4.23): later v1s answer 400
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
}


def etcd_error(exc: Exception) -> EtcdError:
    """The etcd error for anything a handler raised (an :class:`EtcdError`
    as it is).  Unknown exceptions are ``UNKNOWN`` with their text, as a
    Go panic would never be: they are bugs, logged by the caller."""
    if isinstance(exc, EtcdError):
        return exc
    if isinstance(exc, KVError):
        return _kv_error(exc)
    return EtcdError(Code.UNKNOWN, f"{type(exc).__name__}: {exc}")


def _kv_error(exc: KVError) -> EtcdError:
    if isinstance(exc, CompactedError):
        return COMPACTED
    if isinstance(exc, FutureRevisionError):
        return FUTURE_REV
    if isinstance(exc, LeaseNotFoundError):
        return LEASE_NOT_FOUND
    if isinstance(exc, LeaseExistsError):
        return LEASE_EXIST
    if isinstance(exc, KeyNotFoundError):
        return KEY_NOT_FOUND
    if isinstance(exc, KVUnavailableError):
        if exc.code == "store_closed":
            return STOPPED
        return NO_LEADER if exc.code == "no_leader" else UNHEALTHY
    if isinstance(exc, KVOutcomeUnknownError):
        return TIMEOUT
    if isinstance(exc, KVTooLargeError):
        return REQUEST_TOO_LARGE
    if isinstance(exc, KVNotFoundError):
        return EtcdError(Code.NOT_FOUND, str(exc))
    if isinstance(exc, KVConflictError | KVPreconditionFailedError):
        return EtcdError(Code.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, KVBadRequestError):
        return EtcdError(Code.INVALID_ARGUMENT, str(exc))
    return EtcdError(Code.UNKNOWN, str(exc))
