"""TLS and mutual TLS with certificates from trustme."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl

import pytest
import trustme

from liferaft.core.messages import Heartbeat
from liferaft.transport import CallError, TcpTransport

from .conftest import MakeCluster
from .helpers import Recorder, wait_until

LOGGER = "liferaft.transport"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_ctx(ca: trustme.CA, mutual: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    if mutual:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(ctx)
    return ctx


def client_ctx(trust: trustme.CA | None, cert_from: trustme.CA | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if trust is not None:
        trust.configure_trust(ctx)
    if cert_from is not None:
        cert_from.issue_cert("liferaft-node").configure_cert(ctx)
    return ctx


async def exchange(nodes: dict, frm: str, to: str) -> None:  # type: ignore[type-arg]
    nodes[frm][0].send(Heartbeat(1, frm, to, 11))
    await wait_until(lambda: Heartbeat(1, frm, to, 11) in nodes[to][1].delivered)


async def test_tls(make_cluster: MakeCluster, ca: trustme.CA) -> None:
    nodes = await make_cluster(
        ["n1", "n2"], ssl_server=server_ctx(ca, False), ssl_client=client_ctx(ca, None)
    )
    await exchange(nodes, "n1", "n2")
    await exchange(nodes, "n2", "n1")


async def test_mutual_tls(make_cluster: MakeCluster, ca: trustme.CA) -> None:
    """Each node's certificate names its node id (and the address it is dialed at)."""
    nodes = await make_cluster(
        ["n1", "n2"], per_node={"n1": node_tls(ca, "n1"), "n2": node_tls(ca, "n2")}
    )
    await exchange(nodes, "n1", "n2")
    await exchange(nodes, "n2", "n1")


@pytest.mark.parametrize(
    "bad_client",
    ["no_client_cert", "client_cert_from_another_ca", "plaintext", "untrusted_server"],
)
async def test_mutual_tls_refuses_a_peer_without_a_valid_certificate(
    bad_client: str,
    make_cluster: MakeCluster,
    ca: trustme.CA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rogue = trustme.CA()
    bad = {
        "no_client_cert": {"ssl_client": client_ctx(ca, None)},
        "client_cert_from_another_ca": {"ssl_client": client_ctx(ca, rogue)},
        "plaintext": {"ssl_client": None},
        "untrusted_server": {"ssl_client": client_ctx(rogue, ca)},
    }[bad_client]
    nodes = await make_cluster(
        ["n1", "n2", "n3"],
        per_node={
            "n1": node_tls(ca, "n1"),
            "n2": node_tls(ca, "n2"),
            "n3": {**node_tls(ca, "n3"), **bad},
        },
        handshake_timeout=1.0,
    )
    t3, r3 = nodes["n3"]
    await wait_until(lambda: "n1" in r3.unreachables, what="n3 fails to reach n1")
    t3.send(Heartbeat(1, "n3", "n1", 1))
    # The good peers still talk, both ways.
    await exchange(nodes, "n2", "n1")
    await exchange(nodes, "n1", "n2")
    assert all(m.frm == "n2" for m in nodes["n1"][1].delivered)
    assert not t3.stats()["peers"]["n1"]["connected"]
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("handshake with peer n1" in m for m in msgs), msgs


def node_tls(ca: trustme.CA, *names: str) -> dict[str, ssl.SSLContext]:
    """mTLS contexts for one node whose certificate names ``names`` (its
    node id) and 127.0.0.1, the address it is dialed at."""
    cert = ca.issue_cert(*names, "127.0.0.1")
    srv = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(srv)
    srv.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(srv)
    cli = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    cert.configure_cert(cli)
    ca.configure_trust(cli)
    return {"ssl_server": srv, "ssl_client": cli}


@pytest.mark.parametrize("how", ["peer", "caller"])
async def test_mutual_tls_refuses_a_certificate_naming_another_node(
    how: str, make_cluster: MakeCluster, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    """n2's certificate, signed by the cluster's CA, does not make its holder n3."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    nodes = await make_cluster(
        ["n1", "n2", "n3"],
        per_node={"n1": node_tls(ca, "n1"), "n2": node_tls(ca, "n2"), "n3": node_tls(ca, "n2")},
        knows={"n1": ["n2", "n3"], "n2": ["n1"], "n3": [] if how == "caller" else ["n1"]},
    )
    t1, r1 = nodes["n1"]
    t3, _ = nodes["n3"]
    if how == "caller":
        with pytest.raises(CallError, match="refused by the peer"):
            await t3.call_address(t1.address, b"join", 5)
    else:
        await wait_until(lambda: t1.stats()["refused"] >= 1, what="n3 refused")
        t3.send(Heartbeat(1, "n3", "n1", 1))
    await exchange(nodes, "n2", "n1")  # the honest n2 gets through
    assert all(m.frm == "n2" for m in r1.delivered) and r1.calls == []
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("certificate names" in m and "not 'n3'" in m for m in msgs), msgs


async def test_mutual_tls_dialer_checks_the_listeners_certificate(
    make_cluster: MakeCluster, ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    """A node at n2's address whose certificate names n3 is not n2 to its dialer."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    nodes = await make_cluster(
        ["n1", "n2"],
        per_node={"n1": node_tls(ca, "n1"), "n2": node_tls(ca, "n3")},
        knows={"n1": ["n2"], "n2": ["n1"]},
    )
    t1, r1 = nodes["n1"]
    await wait_until(lambda: "n2" in r1.unreachables, what="n1 gives up on n2")
    assert not t1.stats()["peers"]["n2"]["connected"]
    msgs = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert any("handshake with peer n2" in m and "certificate names" in m for m in msgs), msgs


async def test_accepted_tls_connections_send_without_nagle_delays(
    make_cluster: MakeCluster, ca: trustme.CA
) -> None:
    """Call replies and snapshot results go back on the accepted socket.
    With Nagle's algorithm on, a reply written while the one before is
    unacknowledged waits for the dialer's delayed ACK (some 40 ms): eight
    concurrent calls over TLS took 44 ms each on asyncio's own loop, 1.5 ms
    in plain TCP.  asyncio turns Nagle off only for sockets whose ``proto``
    is TCP, which the TLS listener's accepted sockets did not say."""
    nodes = await make_cluster(["n1", "n2"], per_node={n: node_tls(ca, n) for n in ("n1", "n2")})
    await exchange(nodes, "n1", "n2")
    t2, _ = nodes["n2"]
    (conn,) = t2._inbound.conns
    sock = conn.writer.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_connections_in_the_tls_handshake_count_against_the_inbound_cap(
    make_cluster: MakeCluster, ca: trustme.CA
) -> None:
    """A stranger who opens TCP connections and never starts TLS holds a
    file descriptor each until the TLS handshake times out.  They are capped
    by max_inbound like any unproven connection (the inbound part accepts
    plain TCP, counts it, and only then starts TLS), not unbounded."""
    nodes = await make_cluster(["n1"], max_inbound=3, handshake_timeout=30.0, **node_tls(ca, "n1"))
    t1, _ = nodes["n1"]
    assert await silent_connections_kept(t1.address, 8) <= 3
    assert t1.stats()["over_capacity"] >= 5


async def silent_connections_kept(address: str, n: int) -> int:
    """Open ``n`` TCP connections that never say anything; how many the node keeps."""
    host, port = address.rsplit(":", 1)
    opened = [await asyncio.open_connection(host, int(port)) for _ in range(n)]
    try:
        await asyncio.sleep(0.2)  # time for the node to close what it will not keep
        still_open = 0
        for r, _ in opened:
            try:
                await asyncio.wait_for(r.read(1), 0.05)
            except TimeoutError:
                still_open += 1
        return still_open
    finally:
        for _, w in opened:
            w.close()


def test_mutual_tls_under_uvloop(ca: trustme.CA) -> None:
    """On uvloop (what ``liferaft serve`` runs on), TLS started by the
    inbound part after accepting: peers talk both ways, a caller is
    answered, and silent connections are capped.  (Starting TLS on a stream
    that had already read the ClientHello used to stall here.)"""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        made = {
            nid: TcpTransport(
                nid, "c1", "127.0.0.1:0", max_inbound=4, rng=random.Random(i), **node_tls(ca, nid)
            )
            for i, nid in enumerate(["n1", "n2", "n3"])
        }
        recs = {nid: Recorder(nid) for nid in made}
        try:
            for nid, t in made.items():
                await t.start(recs[nid])
            peers = {nid: made[nid].address for nid in ("n1", "n2")}
            made["n1"].set_peers(peers)
            made["n2"].set_peers(peers)
            await exchange({nid: (made[nid], recs[nid]) for nid in made}, "n1", "n2")
            await exchange({nid: (made[nid], recs[nid]) for nid in made}, "n2", "n1")
            # n3 is no member: it calls n1 over a caller connection, in TLS.
            assert await made["n3"].call_address(made["n1"].address, b"join", 5) == b"re:join"
            assert await silent_connections_kept(made["n1"].address, 8) <= 4
        finally:
            for t in made.values():
                await t.close()

    uvloop.run(main())
