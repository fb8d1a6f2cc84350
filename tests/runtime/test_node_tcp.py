"""Runtime nodes over real TCP on 127.0.0.1 with DiskStorage in a temp dir.

Real time passes here, so every wait is bounded; nothing asserts timings."""

from __future__ import annotations

import asyncio
from pathlib import Path

from liferaft.harness.ports import free_port
from liferaft.runtime import NodeTimeoutError, NotLeaderError
from tests.runtime.cluster import TcpCluster


async def eventually(cond, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_tcp_cluster_replicates_and_survives_a_killed_writer(tmp_path: Path) -> None:
    """Kill a node's task in the middle of a write stream, restart it from its
    data dir: every acknowledged write is still there, on every node."""
    c = TcpCluster(tmp_path, 3)
    await c.start()
    try:
        ld = await c.leader()
        acked = 0
        victim = next(i for i in c.ids if i != ld.id)
        for i in range(60):
            await c.sms[ld.id].add(1)
            acked += 1
            if i == 30:
                await c.nodes[victim].stop()  # mid-stream
        node = await c.make(victim)
        await node.start()
        await eventually(lambda: c.sms[victim]._value == acked)
        # And the leader itself: stop it, restart, nothing lost.
        await ld.stop()
        ld2 = await c.leader()
        assert await c.sms[ld2.id].add(1) == acked + 1
        again = await c.make(ld.id)
        await again.start()
        await eventually(lambda: c.sms[ld.id]._value == acked + 1)
    finally:
        await c.stop()


async def test_a_lagging_node_gets_a_snapshot_over_tcp(tmp_path: Path) -> None:
    c = TcpCluster(tmp_path, 3, snapshot_entries=50)
    await c.start()
    try:
        ld = await c.leader()
        lagger = next(i for i in c.ids if i != ld.id)
        await c.nodes[lagger].stop()
        for _ in range(150):
            await c.sms[ld.id].add(1)
        await eventually(lambda: ld.status().snapshot_index >= 100)
        node = await c.make(lagger)
        await node.start()
        await eventually(lambda: c.sms[lagger]._value == 150, 20)
        assert node.status().snapshot_index >= 100
    finally:
        await c.stop()


async def test_leadership_transfer_under_load(tmp_path: Path) -> None:
    c = TcpCluster(tmp_path, 3)
    await c.start()
    try:
        ld = await c.leader()
        stop = False
        done = 0

        async def writer() -> None:
            nonlocal done
            while not stop:
                try:
                    await c.sms[c.nodes[ld.id].id].add(1)
                    done += 1
                except (NotLeaderError, NodeTimeoutError):
                    await asyncio.sleep(0.01)

        w = asyncio.create_task(writer())
        await eventually(lambda: done >= 20)
        to = next(i for i in c.ids if i != ld.id)
        assert await ld.transfer_leadership(to) == to
        await eventually(lambda: done >= 40, 15)
        stop = True
        await w
        new = c.nodes[to]
        assert new.is_leader
        await eventually(lambda: len({sm._value for sm in c.sms.values()}) == 1)
    finally:
        await c.stop()


async def test_a_new_node_joins_over_tcp_through_a_follower(tmp_path: Path) -> None:
    """A brand-new, empty node contacts a *follower* by address (call_address
    from a non-member); the follower forwards to the leader, which adds it as
    a learner and promotes it once it has caught up."""
    c = TcpCluster(tmp_path, 3)
    await c.start()
    try:
        ld = await c.leader()
        for _ in range(20):
            await c.sms[ld.id].add(1)
        follower = next(i for i in c.ids if i != ld.id)
        c.addrs["n4"] = f"127.0.0.1:{free_port()}"  # never one of the three (ports.py)
        new = await c.make("n4", initial=False)
        await new.start()
        await new.join(c.addrs[follower], c.addrs["n4"])
        await eventually(lambda: "n4" in ld.status().voters, 20)
        await eventually(lambda: c.sms["n4"]._value == 20)
        assert await c.sms["n4"].add(1) == 21  # and it forwards writes too
    finally:
        await c.stop()


async def test_a_cluster_over_mutual_tls(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    # With mutual TLS a certificate must name the node id it is used for;
    # TcpCluster shares one pair of contexts, so one certificate names all three.
    cert = ca.issue_cert("127.0.0.1", "n1", "n2", "n3")
    srv = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(srv)
    srv.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(srv)
    cli = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(cli)
    cert.configure_cert(cli)
    c = TcpCluster(tmp_path, 3, ssl_pair=(srv, cli))
    await c.start()
    try:
        ld = await c.leader()
        follower = next(i for i in c.ids if i != ld.id)
        assert await c.sms[follower].add(3) == 3  # forwarded over TLS too
        await eventually(lambda: {sm._value for sm in c.sms.values()} == {3})
    finally:
        await c.stop()


async def test_a_membership_change_is_in_force_when_its_call_returns(tmp_path: Path) -> None:
    """Found by the kv process tests: a leader with nothing to persist
    answered its callers before the core applied the change (advance), so
    status() right after `await remove(x)` still listed x."""
    c = TcpCluster(tmp_path, 3)
    await c.start()
    try:
        ld = await c.leader()
        await c.sms[ld.id].add(1)
        victim = next(i for i in c.ids if i != ld.id)
        for _ in range(5):
            await ld.remove(victim)
            st = ld.status()
            assert victim not in st.voters and victim not in st.learners
            await ld.add_learner(victim, c.addrs[victim])
            assert victim in ld.status().learners
            await ld.add_voter(victim, c.addrs[victim], catch_up_timeout=10)
            assert victim in ld.status().voters
    finally:
        await c.stop()
