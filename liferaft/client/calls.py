"""The key calls of :class:`~liferaft.client.AsyncClient` over the MVCC
store (docs/kv.md, "The Python client"): reads at a revision, ranges whose
pages are pinned at one revision, transactions and compaction.  A mixin: the
client gives it ``request`` (retried) and ``_write`` (retried in the
client's session, so it applies at most once)."""

from __future__ import annotations

import builtins
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .errors import NotFoundError
from .model import Item, Page, item_of
from .txn import Cmp, Op, TxnResult, txn_result
from .wire import MAX_PAGE, quote_key


class KeyCalls:
    """get, range, list, txn and compact, for a client with ``request`` and ``_write``."""

    request: Callable[..., Awaitable[dict[str, Any]]]
    _write: Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]

    async def get(
        self, key: str, consistency: str = "linearizable", *, revision: int = 0
    ) -> Item | None:
        """The key now (``revision`` 0) or as it was at store ``revision``,
        or None if it did not exist.  RevisionCompactedError if that is compacted."""
        q = {"consistency": consistency}
        if revision:
            q["revision"] = str(revision)
        try:
            d = await self.request("GET", f"/v1/kv/{quote_key(key)}?" + urllib.parse.urlencode(q))
        except NotFoundError:
            return None
        return item_of(d)

    async def range(
        self,
        key: str | None = None,
        *,
        prefix: str | None = None,
        end: str | None = None,
        revision: int = 0,
        limit: int | None = None,
        keys_only: bool = False,
        count_only: bool = False,
        consistency: str = "linearizable",
    ) -> Page:
        """Keys under ``prefix`` (``""``: all), or in ``[key, end)`` (no
        ``end``: to the last key), in key order: at most ``limit``, as of
        ``revision`` (0: now).  The server answers in pages; this follows
        them, every page read at the first one's ``read_revision``, so the
        listing is one snapshot however long (RevisionCompactedError if compaction
        overtakes it)."""
        base = range_span(key, prefix, end)
        items: builtins.list[Item] = []
        start: str | None = None
        pinned = revision
        first: dict[str, Any] | None = None
        while limit is None or len(items) < limit:
            q: dict[str, str] = {**base, "consistency": consistency}
            if start is not None:
                q["start"] = start
            if pinned:
                q["revision"] = str(pinned)
            if limit is not None:
                q["limit"] = str(min(limit - len(items), MAX_PAGE))
            if keys_only:
                q["keys_only"] = "true"
            if count_only:
                q["count_only"] = "true"
            d = await self.request("GET", "/v1/kv?" + urllib.parse.urlencode(q))
            first = first or d
            pinned = pinned or int(d.get("read_revision", 0))
            items += [item_of(i) for i in d["items"]]
            if count_only or d.get("next") is None:
                break
            start = d["next"]
        assert first is not None
        return Page(items, int(first.get("count", 0)), pinned, int(d["revision"]))

    async def list(
        self, prefix: str = "", limit: int | None = None, consistency: str = "linearizable"
    ) -> tuple[builtins.list[Item], int]:
        """Keys under ``prefix`` in order (at most ``limit``), and the store
        revision they were read at (one snapshot: see :meth:`range`)."""
        p = await self.range(prefix=prefix, limit=limit, consistency=consistency)
        return p.items, p.read_revision

    async def txn(
        self, compare: Sequence[Cmp] = (), success: Sequence[Op] = (), failure: Sequence[Op] = ()
    ) -> TxnResult:
        """If every ``compare`` holds run ``success``, else ``failure``, at
        one revision (:mod:`liferaft.client.txn` builds them).  Sent in the
        client's session: a retry applies it at most once."""
        body = {
            "compare": [c.to_json() for c in compare],
            "success": [o.to_json() for o in success],
            "failure": [o.to_json() for o in failure],
        }
        return txn_result(await self._write("POST", "/v1/txn", body))

    async def compact(self, revision: int) -> int:
        """Drop history below ``revision`` on every replica; reads and
        watches below it then raise RevisionCompactedError.  The store revision."""
        d = await self.request("POST", "/v1/compact", {"revision": revision}, write=True)
        return int(d["revision"])


def range_span(key: str | None, prefix: str | None, end: str | None) -> dict[str, str]:
    """The query naming a range: a ``prefix`` (none given: every key), or
    ``[key, end)`` (no ``end``: to the last key)."""
    if prefix is not None or key is None:
        if key is not None or end is not None:
            raise ValueError("give a prefix, or a key (and an end), not both")
        return {"prefix": prefix or ""}
    return {"start": key, **({"end": end} if end else {})}
