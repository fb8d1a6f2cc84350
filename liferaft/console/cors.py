"""Cross-origin requests to /v1/*, for the console page only.

The page is loaded from one node and, when that node goes down, carries on
through another member's client port: a cross-origin request.  So the /v1
routes answer CORS, including the preflight, for exactly the origins
``http://`` or ``https://`` + a current member's advertised client address
(read from the address book at each request, so a removed member's origin
is refused at once).  Any other origin gets no CORS headers at all, and the
browser keeps the answer from its page.

What it does not weaken (docs/console.md, "Trust"): a preflight (OPTIONS
with ``Access-Control-Request-Method``) from an allowed origin is answered
here without the token, since it carries no data and the browser sends no
Authorization header with it; every other request still meets the bearer
token check.  No cookies are used, so ``Allow-Credentials`` is never sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

# The origin sets live in kv: its cross-site write check uses them too.
from liferaft.kv.origins import member_origins, origins_of

#: How long a browser may cache a preflight's answer (seconds): short, so a
#: removed member's origin stops working soon.
MAX_AGE = 60
_PREFIX = "/v1/"

__all__ = ["MAX_AGE", "Cors", "member_origins", "origins_of"]


class Cors:
    """The preflight middleware and the response hook that add CORS headers."""

    def __init__(self, origins: Callable[[], set[str]]) -> None:
        self.origins = origins

    def allowed(self, request: web.Request) -> str | None:
        """The request's Origin if it may have CORS headers, else None."""
        origin = request.headers.get("Origin")
        if not origin or not request.path.startswith(_PREFIX):
            return None
        return origin if origin.lower() in self.origins() else None

    @web.middleware
    async def preflight(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            origin = self.allowed(request)
            if origin is not None:
                return web.Response(status=204, headers={
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": "GET, PUT, POST, DELETE",
                    "Access-Control-Allow-Headers": "Authorization, Content-Type",
                    "Access-Control-Max-Age": str(MAX_AGE),
                    "Vary": "Origin",
                })  # fmt: skip
        # Anything else (a refused origin's preflight too) goes on to the
        # token check and the routes, and gets no CORS headers.
        return await handler(request)

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Before any answer's headers go out (streams too): the CORS headers
        for an allowed origin."""
        if "Access-Control-Allow-Origin" in response.headers:
            return  # the preflight's own
        origin = self.allowed(request)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.add("Vary", "Origin")

    def install(self, app: web.Application) -> None:
        # First: a preflight must not meet the token check, and the 401 a
        # page gets for a missing token must carry CORS headers to be read.
        app.middlewares.insert(0, self.preflight)
        app.on_response_prepare.append(self.on_prepare)
