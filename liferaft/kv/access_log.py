"""The client API's access log (``liferaft serve --access-log``, off by default).

One INFO record per request on the ``liferaft.access`` logger, printed by the
server's log format like every other record: the message reads
``GET /v1/kv/a 200``, and the fields are ``method``, ``path``, ``query``
(present only when the request had one), ``status``, ``duration`` (seconds)
and ``remote``.  Never logged: headers (the bearer token travels in
``Authorization``) and bodies; the value of a query parameter the API does
not read (``token``, ``password``, anything else) is logged as ``REDACTED``.  Requests the
listener refuses before the app sees them (header timeout, connection cap)
are not in it (docs/operations.md, "Logs").
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger("liferaft.access")

_SECRET = re.compile(r"token|secret|passw|auth|api[-_]?key|signature|credential", re.I)
# A parameter name shown as it is: a short plain word.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")
# nginx's code for a request whose client went away before the answer.
CLIENT_CLOSED = 499

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# The query parameters of the client API (kv/server.py): only these keep
# their values in the log.
API_PARAMS = frozenset({"consistency", "limit", "prefix", "start"})


def safe_query(query: str) -> str:
    """``query`` with every value the API does not read replaced by
    ``REDACTED``: a secret may travel under any name (``x=1;token=...``,
    since parameters are split on ``&`` only), not just one that says so.
    A parameter with no value, whose name may itself be a secret, is
    replaced whole."""
    if not query:
        return ""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    shown = []
    for k, v in pairs:
        if k in API_PARAMS:
            shown.append((k, v))
        elif v or _SECRET.search(k):
            shown.append((k if _NAME.fullmatch(k) else "REDACTED", "REDACTED"))
        else:
            shown.append(("REDACTED", ""))
    return urllib.parse.urlencode(shown, safe="/")


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log ``request`` once its answer is known (the outermost middleware)."""
    t0 = time.perf_counter()
    status = 500  # an exception the inner middleware did not render
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        log_request(request, status, t0)


def log_request(request: web.BaseRequest, status: int, t0: float) -> None:
    """The access log's record of ``request``, answered ``status``, which
    arrived at ``perf_counter()`` ``t0`` (the middleware's and the hot
    path's: liferaft/kv/hot_path.py)."""
    fields = {
        "method": request.method,
        "path": request.path,
        "status": status,
        "duration": round(time.perf_counter() - t0, 6),
        "remote": request.remote or "",
    }
    query = safe_query(request.query_string)
    if query:
        fields["query"] = query
    log.info("%s %s %d", request.method, request.path, status, extra=fields)
