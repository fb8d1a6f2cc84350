"""The node id and cluster id are given once, in NodeConfig (issue 14).

They used to be passed to NodeConfig and to TcpTransport, with
``NodeConfig.cluster_id`` unused, so a mismatch showed only as handshake
refusals once the nodes ran.  Now the Node hands its ids to a transport
built without them, and refuses, at construction and naming both values, a
transport that holds different ones.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from liferaft.harness.ports import free_port
from liferaft.runtime import BadConfigError, Node, NodeConfig, ReplicatedCounter
from liferaft.transport import MemoryNetwork, TcpTransport


def _config(nid: str, **kw: object) -> NodeConfig:
    return NodeConfig(id=nid, tick_interval=0.02, election_ticks=10, heartbeat_ticks=2, **kw)  # type: ignore[arg-type]


async def test_a_cluster_built_with_each_id_given_once_elects_and_replicates(
    tmp_path: Path,
) -> None:
    # The handshake carries the ids the Node gave the transport: if binding
    # missed any part (the dialer, the listener), peers would refuse each other.
    peers = {f"n{i}": f"127.0.0.1:{free_port()}" for i in (1, 2, 3)}
    counters = {nid: ReplicatedCounter() for nid in peers}
    nodes = [
        Node(
            _config(nid, cluster_id="orders"),
            counters[nid],
            TcpTransport(listen_addr=addr),
            data_dir=tmp_path / nid,
            initial_members=peers,
        )
        for nid, addr in peers.items()
    ]
    try:
        for node in nodes:
            assert node.transport.node_id == node.id  # type: ignore[attr-defined]
            assert node.transport.cluster_id == "orders"  # type: ignore[attr-defined]
            await node.start()
        assert await asyncio.wait_for(counters["n2"].add(5), 10) == 5
        assert await asyncio.wait_for(counters["n3"].add(2), 10) == 7
        stats = nodes[0].transport.stats()
        assert stats["node_id"] == "n1"
        assert not stats["refused"], stats
    finally:
        for node in nodes:
            await node.stop()


def test_a_different_node_id_in_the_transport_is_refused_naming_both() -> None:
    with pytest.raises(BadConfigError, match=r"node id .*'n1'.*'n2'"):
        Node(_config("n1"), ReplicatedCounter(), TcpTransport("n2", "c", "127.0.0.1:0"))
    net = MemoryNetwork()
    with pytest.raises(BadConfigError, match=r"node id .*'n1'.*'n3'"):
        Node(_config("n1"), ReplicatedCounter(), net.transport("n3"))


def test_a_different_cluster_id_in_the_transport_is_refused_naming_both() -> None:
    with pytest.raises(BadConfigError, match=r"cluster id .*'prod'.*'staging'"):
        Node(
            _config("n1", cluster_id="prod"),
            ReplicatedCounter(),
            TcpTransport("n1", "staging", "127.0.0.1:0"),
        )


def test_the_old_call_form_keeps_working_and_the_config_learns_its_cluster() -> None:
    # README's example up to 0.1: the ids in both, the cluster id only in
    # the transport (NodeConfig.cluster_id was unused then).
    node = Node(_config("n1"), ReplicatedCounter(), TcpTransport("n1", "demo", "127.0.0.1:0"))
    assert node.config.cluster_id == "demo"
    bare = Node(_config("n1"), ReplicatedCounter(), TcpTransport(listen_addr="127.0.0.1:0"))
    assert bare.config.cluster_id == "liferaft"  # neither gave one: the default
    assert bare.transport.cluster_id == "liferaft"  # type: ignore[attr-defined]


async def test_a_transport_without_ids_cannot_start_on_its_own() -> None:
    t = TcpTransport(listen_addr="127.0.0.1:0")
    with pytest.raises(RuntimeError, match="no node id"):
        await t.start(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="listen_addr is required"):
        TcpTransport("n1", "c")


def test_bad_cluster_ids_are_refused_by_the_config() -> None:
    with pytest.raises(BadConfigError, match="cluster_id"):
        _config("n1", cluster_id="").validate()
