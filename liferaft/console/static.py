"""``/ui/``: the console's static files, from the package.

Served open (no token): the files carry no data; everything the page
shows comes from /v1 with the token.  Only files directly in
liferaft/console/static/ whose names are plain (letters, digits, ``.``,
``_``, ``-``; not starting with a dot) and whose type is known: no
subdirectories, no listing, no ``..``, nothing outside that directory.
Every answer says ``Cache-Control: no-cache`` (a node upgraded under an
open page serves its new files) and carries a Content-Security-Policy that
allows scripts and styles from the node itself only (no inline script),
and connections to itself and to the members' client addresses (the page
carries on through another member).

A page's policy is the one its ``index.html`` came with, fixed for the
page's life: a member whose client address enters the address book later
(a node that just started announces its own a moment after, a member added
since) is outside it, and the browser blocks the page's calls to it.  So
``index.html`` also names the origins its policy allows, in ``<meta
name="liferaft-connect-src">``; the page compares them with the members a
line names and reloads itself from its node to get a current policy
(docs/console.md, "Failover").
"""

from __future__ import annotations

import html
import importlib.resources
import re
from collections.abc import Callable

from aiohttp import web

from liferaft.kv.http_util import error_response

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


#: An origin a browser can send and a policy can name: scheme, an ASCII host
#: name or IPv4 address or bracketed IPv6 address, an optional port.  Nothing
#: else (no path, userinfo, space, ``;``, quote or control character).
_ORIGIN = re.compile(r"https?://(?:[a-z0-9_.-]{1,253}|\[[0-9a-f:.]{2,45}\])(?::[0-9]{1,5})?")


def policy_origins(origins: set[str]) -> set[str]:
    """The well-formed ones of ``origins``.  The address book keeps whatever
    JSON was committed (a member's forwarded raw change is proposed
    unchecked), and an address is data: one with ``;`` or a space would add
    directives or sources to the header, a newline would make every answer a
    500.  Such an address names no origin a browser could reach anyway."""
    return {o for o in origins if _ORIGIN.fullmatch(o)}


#: The tag in index.html that names the origins its policy allows (filled per answer).
CONNECT_META = b'<meta name="liferaft-connect-src" content="">'


def csp(origins: set[str]) -> str:
    """The Content-Security-Policy of every console file."""
    connect = " ".join(["'self'", *sorted(origins)])
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def with_connect_meta(page: bytes, origins: set[str]) -> bytes:
    """``page`` with its :data:`CONNECT_META` tag naming ``origins`` (the
    origins of the policy it is sent with), escaped: an address is data."""
    content = html.escape(" ".join(sorted(origins)), quote=True).encode()
    filled = CONNECT_META.replace(b'content=""', b'content="%s"' % content)
    return page.replace(CONNECT_META, filled)


class StaticFiles:
    """The handlers of ``/ui``, ``/ui/`` and ``/ui/{name}``."""

    def __init__(self, origins: Callable[[], set[str]], package: str = "liferaft.console") -> None:
        self.origins = origins
        self.root = importlib.resources.files(package).joinpath("static")
        # name -> bytes: the package's files do not change under a running node.
        self._cache: dict[str, bytes] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/ui", self.redirect)
        app.router.add_get("/ui/", self.file)
        app.router.add_get("/ui/{name}", self.file)

    async def redirect(self, request: web.Request) -> web.Response:
        # Returned, not raised: the API's error middleware renders raised
        # HTTP exceptions as JSON errors.
        return web.Response(status=308, headers={"Location": "/ui/"})

    async def file(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name", "index.html")
        ctype = TYPES.get(name[name.rfind(".") :] if "." in name else "")
        body = self._read(name) if ctype and _NAME.fullmatch(name) else None
        if body is None:
            return error_response(404, "not_found", f"no console file {name[:100]!r}")
        # One reading for the header and the page alike.
        origins = policy_origins(self.origins())
        if name == "index.html":
            body = with_connect_meta(body, origins)
        return web.Response(body=body, headers={
            "Content-Type": ctype or "",
            "Cache-Control": "no-cache",
            "Content-Security-Policy": csp(origins),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        })  # fmt: skip

    def _read(self, name: str) -> bytes | None:
        body = self._cache.get(name)
        if body is None:
            path = self.root.joinpath(name)
            if not path.is_file():
                return None
            body = self._cache[name] = path.read_bytes()
        return body
