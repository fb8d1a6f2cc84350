"""The client API's access log (``liferaft serve --access-log``, off by default).

One INFO record per request on the ``liferaft.access`` logger, printed by the
server's log format like every other record: the message reads
``GET /v1/kv/a 200``, and the fields are ``method``, ``path``, ``query``
(present only when the request had one), ``status``, ``duration`` (seconds)
and ``remote``.  Never logged: headers (the bearer token travels in
``Authorization``) and bodies; a query parameter whose name says it holds a
secret (``token``, ``password``, ...) is logged as ``REDACTED``.  Requests the
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
# nginx's code for a request whose client went away before the answer.
CLIENT_CLOSED = 499

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def safe_query(query: str) -> str:
    """``query`` with the value of every secret-looking parameter replaced."""
    if not query:
        return ""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return urllib.parse.urlencode(
        [(k, "REDACTED" if _SECRET.search(k) else v) for k, v in pairs], safe="/"
    )


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
