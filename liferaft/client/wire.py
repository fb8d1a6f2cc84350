"""The HTTP plumbing under :class:`~liferaft.client.AsyncClient`: the
endpoints it is given, one attempt's connection state (what separates
"unavailable" from "outcome unknown", docs/operations.md, "Exit codes"),
and a write session's window (docs/kv.md, "Idempotent writes")."""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import Any

from .errors import BadRequestError

# The outcomes liferaft-kv keeps per session (kv.mvcc.sessions.SESSION_OUTCOMES).
SESSION_WINDOW = 256
MAX_PAGE = 10_000  # the server's largest list page, by count
IDLE_KEEPALIVE = 5.0  # seconds an idle pooled connection is kept
RESERVE_SLACK = 0.1  # seconds past a write's deadline its wait for a session may end
DIAL_TIMEOUT = 2.0  # seconds to connect (TCP and TLS), as etcdctl's --dial-timeout


class WriteSession:
    """A session's client side: its id and the writes it has sent."""

    def __init__(self, session_id: int) -> None:
        self.id = session_id
        self.next_seq = 1
        self.pending: set[int] = set()  # sequence numbers without an answer yet

    def lowest_pending(self) -> int:
        return min(self.pending, default=self.next_seq)

    def has_room(self) -> bool:
        # Every seq the server may still be asked about lies in
        # [lowest_pending, lowest_pending + window): it can hold them all.
        return self.next_seq < self.lowest_pending() + SESSION_WINDOW


def parse_endpoints(endpoints: str | Sequence[str]) -> tuple[list[str], str | None]:
    """``host:port`` of each endpoint, and the one scheme they name (None if
    none names one).  ValueError for an unknown scheme or a mix."""
    parts = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = []
    schemes = set()
    for p in parts:
        p = p.strip().rstrip("/")
        if not p:
            continue
        if "://" in p:
            scheme, p = p.split("://", 1)
            if scheme.lower() not in ("http", "https"):
                raise ValueError(f"endpoint scheme {scheme!r}: only http and https")
            schemes.add(scheme.lower())
        out.append(p)
    if not out:
        raise ValueError("no endpoints given")
    if len(schemes) > 1:
        raise ValueError("endpoints mix http:// and https://")
    return out, schemes.pop() if schemes else None


class Attempt:
    """One HTTP attempt: ``connected`` once aiohttp had a connection for it
    (new or pooled; its tracing says so).  Before that no byte can have left
    this process: a failure then (refused, DNS, a dial timeout) leaves a
    write provably unsent."""

    connected = False


async def on_connection(_session: Any, ctx: Any, _params: Any) -> None:
    """aiohttp's trace hook: the attempt it traces now has a connection."""
    if isinstance(ctx.trace_request_ctx, Attempt):
        ctx.trace_request_ctx.connected = True


def quote_key(key: str) -> str:
    """``key`` for a URL path (its slashes kept); BadRequestError if empty."""
    if not key:
        raise BadRequestError("empty key", 400, "bad_request")
    return urllib.parse.quote(key, safe="/")
