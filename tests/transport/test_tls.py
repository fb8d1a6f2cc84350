"""TLS and mutual TLS with certificates from trustme."""

from __future__ import annotations

import logging
import ssl

import pytest
import trustme

from liferaft.core.messages import Heartbeat

from .conftest import MakeCluster
from .helpers import wait_until

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
    nodes = await make_cluster(
        ["n1", "n2"], ssl_server=server_ctx(ca, True), ssl_client=client_ctx(ca, ca)
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
    good = {"ssl_server": server_ctx(ca, True), "ssl_client": client_ctx(ca, ca)}
    nodes = await make_cluster(
        ["n1", "n2", "n3"],
        per_node={"n1": good, "n2": good, "n3": {**good, **bad}},
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
