"""Peer connections read in pieces small enough for the heap.

asyncio reads with a fresh 256 KiB bytes per read (``sock.recv`` or
``SSLObject.read``), over glibc's 128 KiB mmap threshold: with no free heap
chunk that large, each message read cost an mmap, page faults and a munmap,
which made a write at 100/s 0.1 ms slower after issue 13 (docs/transport.md,
"Reads").  Every connection, dialed or accepted, plain or TLS, must read at
most ``READ_SIZE`` bytes at a time.
"""

from __future__ import annotations

import ssl
import sys
from typing import Any

import pytest
import trustme

from liferaft.core.messages import Heartbeat
from liferaft.transport import TcpTransport
from liferaft.transport._context import READ_SIZE

from .conftest import MakeCluster
from .helpers import wait_until
from .test_tls import client_ctx, server_ctx

# glibc's mmap threshold starts here and only ever rises.
GLIBC_MIN_MMAP_THRESHOLD = 128 * 1024


def read_size(writer: Any, tls: bool) -> int:
    """What the connection asks of its socket (or of its TLS object) per read."""
    reads = writer.transport._ssl_protocol if tls else writer.transport
    return int(reads.max_size)


def test_read_size_is_under_the_mmap_threshold() -> None:
    # The bytes object of a full read, header included, stays on the heap.
    assert READ_SIZE + sys.getsizeof(b"") < GLIBC_MIN_MMAP_THRESHOLD


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_every_peer_connection_reads_at_most_read_size(
    tls: bool, make_cluster: MakeCluster
) -> None:
    kw: dict[str, Any] = {}
    if tls:
        ca = trustme.CA()
        kw = {"ssl_server": server_ctx(ca, False), "ssl_client": client_ctx(ca, None)}
    nodes = await make_cluster(["n1", "n2"], **kw)
    for frm, to in (("n1", "n2"), ("n2", "n1")):
        nodes[frm][0].send(Heartbeat(1, frm, to, 11))
        await wait_until(lambda to=to, frm=frm: Heartbeat(1, frm, to, 11) in nodes[to][1].delivered)
    for nid, (t, _) in nodes.items():
        assert isinstance(t, TcpTransport)
        (peer,) = {"n1", "n2"} - {nid}
        # Dialed: the link's connection (its writer is handed out while idle).
        link = t._links[peer]
        await wait_until(lambda link=link: link.direct is not None, what="an idle link")
        assert read_size(link.direct, tls) == READ_SIZE
        # Accepted: the connection the peer dialed.
        (conn,) = t._inbound.conns
        assert read_size(conn.writer, tls) == READ_SIZE
        assert isinstance(conn.writer.get_extra_info("ssl_object"), ssl.SSLObject) == tls
