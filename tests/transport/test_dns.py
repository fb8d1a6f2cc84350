"""Peers named by DNS name (docs/transport.md, "Addresses and DNS"): the name
is resolved on every dial, so a peer that comes back at a new IP address
under the same name is found again; the system resolver is the default."""

from __future__ import annotations

import random
from typing import Any

from liferaft.core.messages import Heartbeat
from liferaft.harness.ports import free_port
from liferaft.transport import TcpTransport

from .helpers import Recorder, wait_until


def tcp(node_id: str, address: str, seed: int, **kw: Any) -> TcpTransport:
    """A transport with fast reconnects (as tests/transport/conftest.py's)."""
    return TcpTransport(
        node_id, "c1", address, rng=random.Random(seed), min_backoff=0.01, max_backoff=0.05,
        handshake_timeout=2.0, **kw,
    )  # fmt: skip


async def test_a_peer_back_at_a_new_ip_is_found_again_under_its_name() -> None:
    port = free_port()
    # What "n2.cluster.test" maps to; the test changes it as DNS would.
    table = {"n2.cluster.test": "127.0.0.1"}
    asked: list[str] = []

    async def resolver(host: str, p: int) -> list[str]:
        asked.append(host)
        return [table[host]]

    t1 = tcp("n1", "127.0.0.1:0", 1, resolver=resolver)
    r1 = Recorder("n1")
    old = tcp("n2", f"127.0.0.1:{port}", 2)
    new = tcp("n2", f"127.0.0.2:{port}", 3)
    r_old, r_new = Recorder("n2"), Recorder("n2")
    try:
        await t1.start(r1)
        await old.start(r_old)
        old.set_peers({"n1": t1.address})
        t1.set_peers({"n2": f"n2.cluster.test:{port}"})
        t1.send(Heartbeat(1, "n1", "n2", 0))
        await wait_until(lambda: r_old.delivered, what="the first n2 got the heartbeat")
        assert t1.stats()["peers"]["n2"]["remote"] == f"127.0.0.1:{port}"
        dials = len(asked)

        # The pod is replaced: the same name, the same port, another IP (the
        # old address now refuses connections), and the name points there.
        await old.close()
        table["n2.cluster.test"] = "127.0.0.2"
        await new.start(r_new)
        new.set_peers({"n1": t1.address})

        def delivered_to_new() -> bool:
            t1.send(Heartbeat(2, "n1", "n2", 0))
            return bool(r_new.delivered)

        await wait_until(delivered_to_new, what="n1 found n2 at its new IP")
        assert len(asked) > dials  # asked again, not a kept answer
        assert t1.stats()["peers"]["n2"]["remote"] == f"127.0.0.2:{port}"
        assert t1.stats()["peers"]["n2"]["address"] == f"n2.cluster.test:{port}"
    finally:
        for t in (t1, old, new):
            await t.close()


async def test_localhost_by_name_with_the_system_resolver() -> None:
    a = tcp("n1", "127.0.0.1:0", 1)
    b = tcp("n2", "127.0.0.1:0", 2)
    ra, rb = Recorder("n1"), Recorder("n2")
    try:
        await a.start(ra)
        await b.start(rb)
        port = b.address.rpartition(":")[2]
        a.set_peers({"n2": f"localhost:{port}"})
        b.set_peers({"n1": a.address})
        a.send(Heartbeat(1, "n1", "n2", 0))
        await wait_until(lambda: rb.delivered, what="delivered to localhost by name")
        # A call to a name (the join path) resolves the same way.
        assert await a.call_address(f"localhost:{port}", b"ping", 5.0) == b"re:ping"
    finally:
        await a.close()
        await b.close()


async def test_a_name_that_does_not_resolve_is_a_down_link_not_a_crash() -> None:
    async def nowhere(host: str, port: int) -> list[str]:
        raise OSError(f"{host}: Name or service not known")

    a = tcp("n1", "127.0.0.1:0", 1, resolver=nowhere)
    try:
        await a.start(Recorder("n1"))
        a.set_peers({"n2": "gone.cluster.test:7000"})
        await wait_until(
            lambda: a.stats()["peers"]["n2"]["dial_failures"] >= 2, what="dials failed"
        )
        assert a.stats()["peers"]["n2"]["state"] == "down"
    finally:
        await a.close()
