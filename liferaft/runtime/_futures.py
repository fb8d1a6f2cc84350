"""Small helpers for futures that may already be done, and for bounded waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from .clock import Clock, SystemClock
from .errors import NodeError, NodeTimeoutError

T = TypeVar("T")


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


async def bounded(clock: Clock, aw: Awaitable[T], t: float, what: str) -> T:
    """Await ``aw`` for at most ``t`` seconds of ``clock``; :class:`NodeTimeoutError`
    (saying ``what``) after that."""
    if isinstance(clock, SystemClock):
        # The fast path (one timer handle, no extra tasks): profiling the
        # leader showed the generic path below costing more than the core.
        try:
            async with asyncio.timeout(t):
                return await aw
        except NodeTimeoutError:
            # Already the node's verdict (e.g. "replaced by a snapshot"): it
            # is a TimeoutError too, but its own message is the truer one.
            raise
        except TimeoutError:
            raise NodeTimeoutError(what or "timed out") from None
    fut = asyncio.ensure_future(aw)
    sleeper = asyncio.ensure_future(clock.sleep(t))
    try:
        done, _ = await asyncio.wait({fut, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        fut.cancel()
        raise
    finally:
        sleeper.cancel()
    if fut in done:
        return fut.result()
    fut.cancel()
    raise NodeTimeoutError(what or "timed out")
