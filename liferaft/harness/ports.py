"""Free ports on 127.0.0.1 for the processes a harness starts."""

from __future__ import annotations

import random
import socket
import threading

HOST = "127.0.0.1"
LOW = 12000  # below: well-known and registered services we would rather not shadow
TRIES = 200  # every search is bounded: a clear error beats a hang

_given: set[int] = set()
_given_lock = threading.Lock()


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports the OS hands out on 127.0.0.1 (held together, then
    released for child processes to bind)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def can_listen(port: int) -> bool:
    """True unless something listens on (or holds) 127.0.0.1:``port``.

    With SO_REUSEADDR, as asyncio's servers bind: a port in TIME_WAIT from
    a cluster stopped a moment ago is free to them, so it must not count
    as taken here (:func:`port_is_free` is stricter)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port that is free on 127.0.0.1 now.

    Chosen at random below the ephemeral range (checked by binding it), so
    that an outgoing connection of some other process cannot take it while
    a node is down between a kill and its restart; falls back to binding
    port 0.  Never the same port twice in one process."""
    low = min(_ephemeral_low(), 32768)
    with _given_lock:
        for _ in range(TRIES):
            p = random.randint(LOW, max(LOW + 1, low - 1))
            if p not in _given and port_is_free(p):
                _given.add(p)
                return p
        for _ in range(TRIES):
            p = free_ports(1)[0]
            if p not in _given:
                _given.add(p)
                return p
    raise RuntimeError(f"no free port on {HOST} after {2 * TRIES} tries")


def free_base_port(nodes: int) -> int:
    """A base port P for ``cluster up``: P+1..P+n (peers), P+1001..P+1000+n
    (clients) and P+2001..P+2000+n (etcd's gRPC API) free."""
    top = min(_ephemeral_low(), 32768) - 2100 - nodes
    if top <= LOW:
        # No room below the ephemeral range (ip_local_port_range starting at
        # 1024, say): anywhere whose client ports still end by 65535; the
        # bind check below keeps it off ports in use.
        top = 65535 - 2000 - nodes
    with _given_lock:
        for _ in range(500):
            base = random.randint(LOW, top)
            ports = [base + i for i in range(1, nodes + 1)]
            ports += [base + 1000 + i for i in range(1, nodes + 1)]
            ports += [base + 2000 + i for i in range(1, nodes + 1)]
            if not any(p in _given for p in ports) and all(port_is_free(p) for p in ports):
                _given.update(ports)
                return base
    raise RuntimeError("no free base port found")
