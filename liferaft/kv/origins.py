"""Which browser origins may act on the client port.

A browser sends ``Origin`` with every request a page makes across origins,
and with every POST.  Two rules use it:

- **Cross-site writes are refused.**  Without a token, a web page the
  operator happens to visit could otherwise make the browser POST to
  ``http://127.0.0.1:8001`` (a "simple" request, ``text/plain`` body: no
  preflight) and write keys, move the leader, or add a learner whose client
  address is that page's own origin, after which the console's CORS would
  let it read everything.  So a request with a method other than GET, HEAD
  or OPTIONS whose Origin is neither a member's client origin nor the
  node's own (the Host it was asked as: the console opened as
  ``localhost:8001``) is refused with 403 before any route runs.  Clients
  that send no Origin (curl, the CLI, etcd3gw) are not affected.
- **CORS** for the members' origins only: liferaft/console/cors.py.

docs/console.md, "Trust".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web

from liferaft.runtime import Node
from liferaft.runtime import address_book as book

#: Methods a browser page may send anywhere without changing anything.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def origins_of(client_addrs: Iterable[str]) -> set[str]:
    """The browser origins of these client addresses (``host:port``)."""
    out: set[str] = set()
    for addr in client_addrs:
        if not addr:
            continue
        a = addr.lower()
        out |= {f"http://{a}", f"https://{a}"}
        # A browser leaves the scheme's default port out of its Origin.
        if a.endswith(":80"):
            out.add(f"http://{a[:-3]}")
        if a.endswith(":443"):
            out.add(f"https://{a[:-4]}")
    return out


def member_origins(node: Node, own: str = "") -> set[str]:
    """Every current member's client origins (and this node's ``own`` client
    address, before its book entry holds it), read from the address book
    now: a removed member's origin is refused at once."""
    addrs = [book.addresses(e).client_addr for e in node.members.values()]
    return origins_of([*addrs, own])


def foreign_write(request: web.Request, allowed: Callable[[], set[str]]) -> str | None:
    """The request's Origin if the request must be refused (a write from a
    page that is not a member's nor this node's own), else None."""
    origin = request.headers.get("Origin")
    if origin is None or request.method in SAFE_METHODS:
        return None
    o = origin.lower()
    if o == f"{request.scheme}://{request.host}".lower():
        return None  # the page this node served itself, under any host name
    return None if o in allowed() else origin
