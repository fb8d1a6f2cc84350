"""A dial to a port nobody listens on must never connect to itself.

Linux picks the source port of a connect() from the ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range).  Dialing 127.0.0.1:P with P in
that range while nothing listens there, the kernel sooner or later picks P
as the source port too: the SYN meets itself (a simultaneous open) and the
socket is connected to itself.  A dialer that then closes it normally
leaves a TIME-WAIT on 127.0.0.1:P, and the peer that owns P cannot bind it
("address already in use", even with SO_REUSEADDR) for a minute when it
restarts.  The dialer must see the self-connection, reset it (no
TIME-WAIT) and report the peer unreachable."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from liferaft.harness.ports import port_is_free
from liferaft.transport.greeting import Dialer, SelfConnectionError

ATTEMPTS = 60_000  # the ephemeral range holds at most 64k ports
SECONDS = 30.0


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range (not Linux)")
    return low, high


def _closed_ephemeral_port(low: int, high: int) -> int:
    """An even port in the ephemeral range that nothing holds (Linux's
    connect() prefers even source ports, so a self-connection comes soonest
    on one)."""
    for port in range(low + (low % 2), high, 2):
        if port_is_free(port) and port_is_free(port + 1):
            return port
    pytest.skip("no free port in the ephemeral range")


def dialer() -> Dialer:
    return Dialer("n1", "c1", None, None, False, connect_timeout=2.0, handshake_timeout=2.0)


async def test_a_dial_that_meets_itself_is_reset_and_reported_unreachable() -> None:
    low, high = _ephemeral_range()
    port = _closed_ephemeral_port((low + high) // 2, high)
    d = dialer()
    met_itself = 0
    refused = 0
    deadline = time.monotonic() + SECONDS
    for _ in range(ATTEMPTS):
        if time.monotonic() > deadline:
            break
        try:
            _, writer = await d.connect("127.0.0.1", port)
        except SelfConnectionError:
            met_itself += 1
            break
        except ConnectionRefusedError:
            refused += 1
            continue
        # Nothing listens on the port: a connection can only be to itself.
        sock: socket.socket = writer.get_extra_info("socket")
        ends = (writer.get_extra_info("sockname"), writer.get_extra_info("peername"))
        # Reset it (no TIME-WAIT left on the port) before failing.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        pytest.fail(f"the dialer handed back a connection to itself {ends} ({refused} refusals)")
    if not met_itself:
        pytest.skip(f"no self-connection to 127.0.0.1:{port} in {refused} dials")
    # The peer that owns the port can bind it at once (no TIME-WAIT left).
    assert port_is_free(port)
    # And the error says what happened, as a refusal does.
    assert issubclass(SelfConnectionError, ConnectionRefusedError)
