"""What every HTTP handler of liferaft-kv shares: JSON answers, the error
shape and statuses, body decoding and query parameters.

Errors render as ``{"error": code, "message": text, ...extra}`` with the
status of the service error's class: ``retry_safe`` is 503 (with
``Retry-After``), ``outcome_unknown`` is 504, :class:`KVNotFoundError` 404,
:class:`KVConflictError` 409, :class:`KVPreconditionFailedError` 412,
:class:`KVTooLargeError` 413, :class:`KVBadRequestError` and the rest 400.
The store's ``lease_not_found`` is a 404 too: the lease named does not exist,
however the request reached the store (a revoke, a put, a txn).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import msgspec
from aiohttp import web

from .errors import (
    KVBadRequestError,
    KVConflictError,
    KVError,
    KVNotFoundError,
    KVPreconditionFailedError,
    KVTooLargeError,
)
from .mvcc.ops import LeaseNotFoundError

_STATUS: tuple[tuple[type[KVError], int], ...] = (
    (KVNotFoundError, 404),
    (LeaseNotFoundError, 404),
    (KVConflictError, 409),
    (KVPreconditionFailedError, 412),
    (KVTooLargeError, 413),
)
_TRUE = ("1", "true", "yes", "")  # "?keys_only" alone says yes
_FALSE = ("0", "false", "no")

_encode = msgspec.json.Encoder().encode


class ApiError(Exception):
    """An error answer of HTTP's own: status, code and message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.extra = extra


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encode(data), status=status, content_type="application/json", headers=headers
    )


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return json_response({"error": code, "message": message, **extra}, status, headers)


def http_status(exc: KVError) -> int:
    """The HTTP status of a service error."""
    if exc.retry_safe:
        return 503
    if exc.outcome_unknown:
        return 504
    return next((st for cls, st in _STATUS if isinstance(exc, cls)), 400)


async def read_within(request: web.BaseRequest, timeout: float) -> bytes:
    """The request body, read within ``timeout`` seconds (TimeoutError if
    not: a stranger must not hold a connection by trickling a body it
    announced).  A body that came whole with its head, the common case, is
    read without arming a timer."""
    if request.content.is_eof():
        return await request.read()
    async with asyncio.timeout(timeout):
        return await request.read()


def decode_body(body: bytes, typ: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body, type=typ)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise KVBadRequestError(f"bad JSON body: {exc}") from exc


def query_int(q: Mapping[str, str], name: str, default: int = 0) -> int:
    raw = q.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise KVBadRequestError(f"{name} must be an integer, not {raw!r}") from None


def query_bool(q: Mapping[str, str], name: str) -> bool:
    got = q.get(name)
    if got is None:
        return False
    raw = got.lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise KVBadRequestError(f"{name} must be true or false, not {raw!r}")
