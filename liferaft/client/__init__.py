"""Python client for liferaft-kv, async (:class:`AsyncClient`) and sync
(:class:`Client`).

Give it any members' client addresses; it finds the leader itself (through
``/v1/status``) and sends writes there, since a follower would only forward
them.  Writes go through a client session (Raft thesis §6.3): the first
write opens one (``POST /v1/sessions``, one committed entry), and every write
names it with its sequence number and the lowest sequence number still
awaiting an answer.  So a write whose outcome is unknown (a 504, a dropped
connection) is retried safely until the deadline: the cluster applies it at
most once.  All tasks of a client share its session, and at most
:data:`SESSION_WINDOW` of its writes are ever unresolved (the cluster keeps
that many outcomes per session): a write past the window waits for the
lowest one to resolve.  If the cluster has forgotten the session, a write it
refused without applying is sent again in a new session; one that may have
applied earlier raises :class:`SessionExpiredError`.

Errors are typed, and every one is a :class:`ClientError`:
:class:`NotFoundError`, :class:`PreconditionFailedError` (with the key's
``current`` value), :class:`BadRequestError`, :class:`UnauthorizedError`,
:class:`TooLargeError`, :class:`UnavailableError` (no leader until the
deadline; nothing was applied), :class:`ClientTimeoutError` (the deadline
passed with the outcome unknown; a builtin ``TimeoutError`` too),
:class:`SessionExpiredError` (a ClientTimeoutError: the cluster forgot the
outcome of a write that may have applied) and :class:`TLSError`.  Names
follow docs/architecture.md, "Names"; the old names (``NotFound``,
``PreconditionFailed``, ``BadRequest``, ``Unauthorized``, ``TooLarge``,
``Unavailable``, ``Timeout``, ``SessionExpired``) are aliases of the same classes until 0.2.0.

A write no attempt could have delivered (none got a connection) ends in
:class:`UnavailableError`; once one may have (a timeout once connected, a
reset, a 504), in :class:`ClientTimeoutError` (docs/operations.md, "Exit
codes").  ``dial_timeout`` (2 s, as etcdctl's) bounds each connect.

An ``https://`` endpoint is TLS or an error, never plain HTTP: the bearer
token only goes out over the scheme asked for.  Bare ``host:port``
endpoints use https when an SSL context is given, else http.

    async with AsyncClient("127.0.0.1:8001,127.0.0.1:8002") as c:
        await c.put("greeting", "hello")
        item = await c.get("greeting")      # Item(key, value, revision) or None

Coordination (docs/kv.md, "The Python client"): reads at a revision and
ranges pinned at one (``get(key, revision=)``, ``range``), transactions
(``txn`` with :class:`Compare` and :class:`Op`), ``compact``, leases
(``lease_grant`` ... and ``async with c.lease(ttl)``, kept alive), ``watch``
(an async iterator of :class:`Event` that resumes by itself) and the
recipes :class:`Lock` and :class:`Election`.

The package, by concern: :mod:`.errors` (the errors and their old names),
:mod:`.model` (Item, WriteResult, Page, Lease, Event), :mod:`.wire`
(endpoints, attempts, the session window), :mod:`.aio` (AsyncClient, its
transport and sessions), :mod:`.calls` (keys, ranges, txn, compact),
:mod:`.txn` (its builders), :mod:`.leases`, :mod:`.watch`,
:mod:`.concurrency` (Lock, Election) and :mod:`.sync` (Client).
Every public name is importable from ``liferaft.client`` itself.
"""

from __future__ import annotations

from .aio import AsyncClient
from .concurrency import Election, Lock, LockLostError
from .errors import (
    BadRequest,
    BadRequestError,
    ClientError,
    ClientTimeoutError,
    NoSuchLeaseError,
    NotFound,
    NotFoundError,
    PreconditionFailed,
    PreconditionFailedError,
    RevisionCompactedError,
    SessionExpired,
    SessionExpiredError,
    Timeout,
    TLSError,
    TooLarge,
    TooLargeError,
    Unauthorized,
    UnauthorizedError,
    Unavailable,
    UnavailableError,
)
from .leases import KeptLease
from .model import Event, Item, Lease, LeaseInfo, Page, Progress, WriteResult
from .model import Members as Members
from .sync import Client
from .txn import Cmp, Compare, Deleted, Op, TxnResult
from .watch import WatchStream
from .wire import DIAL_TIMEOUT as DIAL_TIMEOUT
from .wire import IDLE_KEEPALIVE as IDLE_KEEPALIVE
from .wire import MAX_PAGE as MAX_PAGE
from .wire import RESERVE_SLACK as RESERVE_SLACK
from .wire import SESSION_WINDOW

__all__ = [
    "SESSION_WINDOW",
    "AsyncClient",
    "BadRequestError",
    "Client",
    "ClientError",
    "ClientTimeoutError",
    "Cmp",
    "RevisionCompactedError",
    "Compare",
    "Deleted",
    "Election",
    "Event",
    "Item",
    "KeptLease",
    "Lease",
    "LeaseInfo",
    "NoSuchLeaseError",
    "Lock",
    "LockLostError",
    "Op",
    "Page",
    "Progress",
    "TxnResult",
    "WatchStream",
    "NotFoundError",
    "PreconditionFailedError",
    "SessionExpiredError",
    "TLSError",
    "TooLargeError",
    "UnauthorizedError",
    "UnavailableError",
    "WriteResult",
    # old names, until 0.2.0
    "BadRequest",
    "NotFound",
    "PreconditionFailed",
    "SessionExpired",
    "Timeout",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
]
