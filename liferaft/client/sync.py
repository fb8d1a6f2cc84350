"""The blocking client, :class:`Client`: an :class:`AsyncClient` on a
private event loop in a daemon thread, for code that is not asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from .aio import AsyncClient

T = TypeVar("T")

#: AsyncClient features with no blocking form, and the blocking calls to use instead.
_ASYNC_ONLY = {
    "lease": "a lease kept alive in the background; or lease_grant and lease_keepalive",
    "watch": "an async stream of events",
}


class Client:
    """The same API, blocking: runs an :class:`AsyncClient` on a private event
    loop in a daemon thread.  Use as a context manager, or call close()."""

    def __init__(self, endpoints: str | Sequence[str], **kw: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._async = self._run(self._make(endpoints, kw))

    @staticmethod
    async def _make(endpoints: str | Sequence[str], kw: dict[str, Any]) -> AsyncClient:
        return AsyncClient(endpoints, **kw)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __getattr__(self, name: str) -> Any:
        if name in _ASYNC_ONLY:
            # These hand back objects bound to the private loop (a background
            # keep-alive task, an async iterator): unusable from this thread.
            raise TypeError(
                f"Client.{name}() is asyncio-only ({_ASYNC_ONLY[name]}): use "
                f"liferaft.client.AsyncClient for it"
            )
        attr = getattr(self._async, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            return self._run(attr(*args, **kw))

        call.__doc__ = attr.__doc__
        return call
