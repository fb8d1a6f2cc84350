"""MemoryNetwork / MemoryTransport: deterministic delivery and fault switches."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from liferaft.core.messages import ConfState, Heartbeat, InstallSnapshot, Snapshot, SnapshotMeta
from liferaft.transport import MemoryNetwork, MemoryTransport

from ..codec.strategies import one_of_each
from .helpers import HashSink, Recorder, pseudo_random_chunks, sha_of

IDS = ["n1", "n2", "n3"]
Nodes = dict[str, tuple[MemoryTransport, Recorder]]


async def make(net: MemoryNetwork, ids: list[str] = IDS) -> Nodes:
    nodes: Nodes = {}
    for nid in ids:
        t = net.transport(nid)
        rec = Recorder(nid)
        await t.start(rec)
        t.set_peers({p: f"mem://{p}" for p in ids})
        nodes[nid] = (t, rec)
    return nodes


def hb(frm: str, to: str, commit: int = 0) -> Heartbeat:
    return Heartbeat(1, frm, to, commit)


def delivered(nodes: Nodes, nid: str) -> list[tuple[str, int]]:
    return [(m.frm, getattr(m, "commit", -1)) for m in nodes[nid][1].delivered]


async def test_delivery_is_asynchronous_ordered_and_exact() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    t1, _ = nodes["n1"]
    msgs = [m for m in one_of_each() if not isinstance(m, InstallSnapshot)]
    for m in msgs:
        t1.send(m)  # all addressed n1 -> n2
    assert nodes["n2"][1].delivered == []  # nothing re-entrant
    assert net.in_flight == len(msgs)
    await net.settle()
    assert nodes["n2"][1].delivered == msgs
    assert t1.stats()["peers"]["n2"] == {
        "connected": True,
        "sent": len(msgs),
        "dropped": 0,
        "reconnects": 0,
    }


async def test_unknown_peers_are_refused() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    t1, r1 = nodes["n1"]
    t1.send(hb("n1", "n9"))
    await net.settle()
    assert r1.unreachables == ["n9"]
    assert t1.stats()["unknown_dropped"] == 1
    # A node that is a peer of nobody can be reached by nobody.
    t1.set_peers({"n2": ""})
    t1.send(hb("n1", "n3"))
    await net.settle()
    assert nodes["n3"][1].delivered == []


async def test_partition_isolates_groups_and_heals() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    net.partition(["n1"], ["n2", "n3"])
    for frm in IDS:
        for to in IDS:
            if frm != to:
                nodes[frm][0].send(hb(frm, to, 1))
    await net.settle()
    assert delivered(nodes, "n1") == []
    assert delivered(nodes, "n2") == [("n3", 1)]
    assert delivered(nodes, "n3") == [("n2", 1)]
    assert sorted(nodes["n1"][1].unreachables) == ["n2", "n3"]
    assert nodes["n2"][1].unreachables == ["n1"]
    assert not nodes["n1"][0].stats()["peers"]["n2"]["connected"]
    net.heal()
    nodes["n1"][0].send(hb("n1", "n2", 2))
    await net.settle()
    assert delivered(nodes, "n2") == [("n3", 1), ("n1", 2)]


async def test_a_node_outside_every_group_talks_to_no_one() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    net.partition(["n1", "n2"])
    nodes["n3"][0].send(hb("n3", "n1"))
    nodes["n1"][0].send(hb("n1", "n2"))
    await net.settle()
    assert delivered(nodes, "n1") == [] and delivered(nodes, "n2") == [("n1", 0)]
    with pytest.raises(ValueError):
        net.partition(["n1"], ["n1", "n2"])


async def test_isolate_and_rejoin() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    net.isolate("n2")
    nodes["n1"][0].send(hb("n1", "n2"))
    nodes["n2"][0].send(hb("n2", "n3"))
    nodes["n1"][0].send(hb("n1", "n3"))
    await net.settle()
    assert delivered(nodes, "n2") == [] and delivered(nodes, "n3") == [("n1", 0)]
    net.rejoin("n2")
    nodes["n1"][0].send(hb("n1", "n2", 5))
    await net.settle()
    assert delivered(nodes, "n2") == [("n1", 5)]


async def test_cut_one_direction() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    net.cut("n1", "n2", both=False)
    nodes["n1"][0].send(hb("n1", "n2"))
    nodes["n2"][0].send(hb("n2", "n1"))
    await net.settle()
    assert delivered(nodes, "n2") == [] and delivered(nodes, "n1") == [("n2", 0)]
    net.mend("n1", "n2")
    nodes["n1"][0].send(hb("n1", "n2"))
    await net.settle()
    assert delivered(nodes, "n2") == [("n1", 0)]


async def test_a_partition_also_loses_what_is_in_flight() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    nodes["n1"][0].send(hb("n1", "n2"))
    net.isolate("n1")
    await net.settle()
    assert delivered(nodes, "n2") == []
    assert net.dropped == 1 and nodes["n1"][1].unreachables == ["n2"]


async def test_random_loss_is_seeded() -> None:
    async def run(seed: int) -> list[int]:
        net = MemoryNetwork(seed=seed)
        nodes = await make(net)
        net.set_loss(0.5)
        for i in range(200):
            nodes["n1"][0].send(hb("n1", "n2", i))
        await net.settle()
        assert nodes["n1"][1].unreachables == []  # loss is silent
        return [c for _, c in delivered(nodes, "n2")]

    a, b, c = await run(1), await run(1), await run(2)
    assert a == b != c
    assert 50 < len(a) < 150
    with pytest.raises(ValueError):
        MemoryNetwork().set_loss(1.5)


async def test_pause_holds_everything_in_order() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    net.pause()
    for i in range(5):
        nodes["n1"][0].send(hb("n1", "n2", i))
    await net.settle()
    assert delivered(nodes, "n2") == [] and net.held == 5
    assert net.step(2) == 2
    await net.settle()
    assert delivered(nodes, "n2") == [("n1", 0), ("n1", 1)]
    net.resume()
    await net.settle()
    assert [c for _, c in delivered(nodes, "n2")] == [0, 1, 2, 3, 4]
    assert net.held == 0


async def test_a_closed_node_receives_nothing_and_can_be_replaced() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    await nodes["n2"][0].close()
    nodes["n1"][0].send(hb("n1", "n2"))
    await net.settle()
    assert delivered(nodes, "n2") == [] and nodes["n1"][1].unreachables == ["n2"]
    with pytest.raises(ValueError):
        net.transport("n1")
    t2 = net.transport("n2")
    r2 = Recorder("n2b")
    await t2.start(r2)
    t2.set_peers({p: "" for p in IDS})
    nodes["n1"][0].send(hb("n1", "n2", 3))
    await net.settle()
    assert [m.commit for m in r2.delivered] == [3]  # type: ignore[attr-defined]


# -- snapshots ----------------------------------------------------------------------------


def install(index: int) -> InstallSnapshot:
    meta = SnapshotMeta(index, 2, ConfState(frozenset(IDS)))
    return InstallSnapshot(2, "n1", "n2", Snapshot(meta, b""))


async def test_a_snapshot_streams_chunk_by_chunk_into_the_sink() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    r1, r2 = nodes["n1"][1], nodes["n2"][1]
    r1.sources[4] = lambda: pseudo_random_chunks(1024 * 1024, 64 * 1024)
    nodes["n1"][0].send(install(4))
    nodes["n1"][0].send(hb("n1", "n2", 9))
    await net.settle()
    (sink,) = r2.sinks
    assert sink.committed and sink.writes == 16
    assert sink.sha.hexdigest() == sha_of(pseudo_random_chunks(1024 * 1024, 64 * 1024))
    # The heartbeat overtook the stream; the header came after the commit.
    assert r2.delivered == [hb("n1", "n2", 9), install(4)]
    assert r1.statuses == [("n2", True)]


async def test_a_partition_mid_stream_aborts_and_reports() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    r1, r2 = nodes["n1"][1], nodes["n2"][1]
    r1.sources[4] = lambda: pseudo_random_chunks(1024 * 1024, 1024)
    nodes["n1"][0].send(install(4))
    r2.sink_factory = lambda: HashSink(
        on_write=lambda n: net.partition(["n1"], ["n2", "n3"]) if n == 3 else None
    )
    await net.settle()
    (sink,) = r2.sinks
    assert sink.aborted and sink.writes == 3
    assert r2.delivered == [] and r1.statuses == [("n2", False)]


async def test_a_paused_stream_waits_and_a_failing_source_aborts() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    r1, r2 = nodes["n1"][1], nodes["n2"][1]

    def broken() -> Iterator[bytes]:
        yield b"a"
        raise OSError("gone")

    r1.sources[4] = broken
    net.pause()
    nodes["n1"][0].send(install(4))
    await net.settle()
    assert r2.sinks == [] and net.held == 1
    net.resume()
    await net.settle()
    assert r2.sinks[0].aborted and r1.statuses == [("n2", False)]


async def test_a_dropped_snapshot_still_gets_a_status() -> None:
    net = MemoryNetwork()
    nodes = await make(net)
    t1, r1 = nodes["n1"]
    t1.send(InstallSnapshot(2, "n1", "n9", Snapshot(SnapshotMeta(4, 2))))
    net.isolate("n2")
    t1.send(install(4))
    await net.settle()
    assert r1.statuses == [("n9", False), ("n2", False)]
    assert nodes["n2"][1].sinks == []
