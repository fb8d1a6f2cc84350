"""Small helpers for futures that may already be done."""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import NodeError


def _resolve(f: asyncio.Future[Any], value: Any) -> None:
    if not f.done():
        f.set_result(value)


def _as_error(x: Any) -> BaseException:
    return x if isinstance(x, BaseException) else NodeError(repr(x))


def _fail(f: asyncio.Future[Any], exc: BaseException) -> None:
    if not f.done():
        f.set_exception(exc)
        # Retrieved or not, a failed proposal is not an unhandled error.
        f.exception()
