"""Listen and advertise addresses of ``liferaft serve`` (docs/deploy.md).

A node *listens* on one address (a socket binds it: ``0.0.0.0:7001`` in a
container) and *advertises* another (what the others dial and what clients
are told: ``n1.liferaft.default.svc:7001``).  The advertised addresses are
the ones that enter the address book, ``/v1/status`` (``leader_client_addr``)
and the member lists; the listen addresses stay on this machine.

Two rules live here, so the CLI and :func:`liferaft.kv.serve.serve` apply
the same ones:

* :func:`check_advertise`: a wildcard (``0.0.0.0``, ``::``) is never
  advertised: a client told "the leader is at 0.0.0.0:8001" dials itself.
* :func:`same_address`: the node's own ``--initial-cluster`` entry must name
  its advertised peer address, compared as addresses, not as text: host
  case and IP spelling are normalised, and two different host names (or a
  name and an IP) match when they resolve to a common IP address.
"""

from __future__ import annotations

import ipaddress
import socket

from liferaft.transport.base import check_tcp_address, parse_address

__all__ = ["check_advertise", "is_wildcard", "same_address"]


def is_wildcard(host: str) -> bool:
    """True for a host that means "every interface" when bound:
    ``0.0.0.0``, ``::`` (any spelling), or the empty host."""
    host = host.strip("[]")
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def check_advertise(addr: str, flag: str) -> None:
    """Raise ``ValueError`` (one line, naming ``flag``) unless ``addr`` is an
    address other machines can dial: "host:port" with an IP or a DNS name,
    a real port, and not a wildcard."""
    try:
        check_tcp_address(addr)
    except ValueError as exc:
        raise ValueError(f"{flag} {addr}: {exc}") from None
    host, _ = parse_address(addr)
    if is_wildcard(host):
        raise ValueError(
            f"{flag} {addr}: a wildcard address is where a node listens, never where others "
            f"reach it; give {flag} an address or DNS name the other machines can dial"
        )


def _canonical_host(host: str) -> str:
    host = host.strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _resolve(host: str, port: int) -> set[str]:
    """The IP addresses ``host`` resolves to now (empty if it does not)."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return set()
    return {str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos}


def same_address(a: str, b: str) -> tuple[bool, str]:
    """Whether "host:port" ``a`` and ``b`` name the same endpoint, and what
    was compared (for the error message).  Ports must be equal; hosts match
    when equal after normalising (case, a trailing dot, IP spelling) or, if
    they still differ, when their resolved IP addresses overlap."""
    (ha, pa), (hb, pb) = parse_address(a), parse_address(b)
    if pa != pb:
        return False, f"ports {pa} and {pb} differ"
    ca, cb = _canonical_host(ha), _canonical_host(hb)
    if ca == cb:
        return True, f"hosts {ca!r} and {cb!r} are the same"
    ra, rb = _resolve(ca, pa), _resolve(cb, pb)
    if ra & rb:
        return True, f"{ca!r} and {cb!r} both resolve to {sorted(ra & rb)[0]}"
    shown = [
        f"{h!r} ({', '.join(sorted(r)) or 'does not resolve'})" for h, r in ((ca, ra), (cb, rb))
    ]
    return False, f"hosts {shown[0]} and {shown[1]} share no address"
