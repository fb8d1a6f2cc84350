"""Several replicated objects on one node, each in its own section (runtime/composite.py).

The objects share one log and one snapshot, but a command reaches only its
own object, and a snapshot restores only into a node with exactly the same
named sections, never a silent mix-up.
"""

from __future__ import annotations

from typing import Any

import pytest

from liferaft.runtime import (
    BadConfigError,
    Composite,
    ReplicatedCounter,
    ReplicatedDict,
    UnknownSectionError,
)
from liferaft.runtime.commands import BadEnvelopeError
from liferaft.runtime.composite import decode_frame, encode_frame
from liferaft.runtime.statemachine import SnapshotFormatError
from tests.runtime.cluster import MemCluster


def _two() -> list[Any]:
    return [ReplicatedCounter(), ReplicatedDict()]


async def test_two_objects_share_a_cluster_and_a_follower_catches_up_by_snapshot() -> None:
    c = MemCluster(3, sm=_two, snapshot_entries=20)
    await c.start()
    try:
        ld = await c.leader()
        counter, config = c.sms[ld.id]
        lagger = next(i for i in c.ids if i != ld.id)
        c.net.isolate(lagger)
        for i in range(30):
            await c.drive(counter.add(1))
            await c.drive(config.set(f"k{i % 5}", i))
        await c.until(lambda: ld.status().snapshot_index >= 40)
        # Each object on its own: the counter counted only its own commands.
        assert await c.drive(counter.get()) == 30
        assert await c.drive(config.items()) == [(f"k{k}", 25 + k) for k in range(5)]
        c.net.rejoin(lagger)
        lag_counter, lag_config = c.sms[lagger]
        await c.until(lambda: lag_counter.get.local() == 30 and lag_config.size.local() == 5, 20)
        assert c.nodes[lagger].status().snapshot_index >= 40  # it got there by snapshot
        assert lag_config.items.local() == config.items.local()
        # A restart restores both sections from the node's own snapshot.
        await c.nodes[lagger].stop()
        await c.make(lagger).start()
        again_counter, again_config = c.sms[lagger]
        assert again_counter.get.local() >= 20 and again_config.size.local() == 5
        await c.until(lambda: again_counter.get.local() == 30)
    finally:
        await c.stop()


async def test_a_command_of_one_object_never_touches_the_other() -> None:
    c = MemCluster(3, sm=_two)
    await c.start()
    try:
        ld = await c.leader()
        counter, config = c.sms[ld.id]
        await c.drive(config.set("colour", "blue"))
        seen = config.log_index
        for _ in range(3):
            await c.drive(counter.add(2))
        assert config.log_index == seen  # never applied anything of the counter's
        assert counter.log_index > seen
        assert config.items.local() == [("colour", "blue")]
    finally:
        await c.stop()


def test_an_entry_goes_to_the_section_it_names_only() -> None:
    counter, config = ReplicatedCounter(), ReplicatedDict()
    comp = Composite({"hits": counter, "config": config})
    entry = encode_frame("hits", ReplicatedCounter.add.encode(4), stamp_time=True)
    assert comp.apply(7, entry, leader_time=5.0) == 4
    assert (counter.log_index, counter.leader_time, config.log_index) == (7, 5.0, 0)
    with pytest.raises(UnknownSectionError, match="'misses'"):
        comp.apply(8, encode_frame("misses", ReplicatedCounter.add.encode(1), stamp_time=True))
    with pytest.raises(BadEnvelopeError):
        comp.apply(9, ReplicatedCounter.add.encode(1))  # not framed: nobody's
    assert counter.get.local() == 4 and config.size.local() == 0


async def test_a_node_without_an_object_says_so_when_its_entries_arrive(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A misconfigured follower skips the other object's entries (nothing to
    # apply them to); it must say so in its log at once, not only when a
    # snapshot of the leader is refused later.
    made: list[str] = []

    def objects() -> list[Any]:
        made.append("x")
        return [ReplicatedCounter(), ReplicatedDict()] if len(made) < 3 else [ReplicatedCounter()]

    c = MemCluster(3, sm=objects)
    await c.start()
    try:
        ld = await c.leader()
        if ld.id == c.ids[2]:
            await c.drive(ld.transfer_leadership(c.ids[0]))
            ld = await c.leader()
        config = c.sms[ld.id][1]
        caplog.set_level("WARNING", logger="liferaft.runtime")
        for n in range(3):
            await c.drive(config.set(f"k{n}", n))
        await c.until(lambda: c.nodes[c.ids[2]].applied >= config.log_index)
        lines = [r.getMessage() for r in caplog.records if "'ReplicatedDict'" in r.getMessage()]
        assert len(lines) == 1, lines  # once, not per entry
        assert "lacks" in lines[0] and "ReplicatedCounter" in lines[0]
    finally:
        await c.stop()


def test_the_frame_keeps_the_leader_time_slot_where_the_object_put_it() -> None:
    # Entry format 1: the leader overwrites data[0:8] of a stamped proposal.
    # The frame keeps the object's first 8 bytes there, so the stamp lands in
    # the object's own envelope.
    data = bytes(range(20))
    framed = encode_frame("s", data, stamp_time=True)
    assert framed[:8] == data[:8]
    stamped = b"\xff" * 8 + framed[8:]
    assert decode_frame(stamped) == ("s", b"\xff" * 8 + data[8:])
    assert decode_frame(encode_frame("s", b"ab", stamp_time=False)) == ("s", b"ab")


def _snapshot_of(comp: Composite) -> list[bytes]:
    snap = comp.snapshot()
    try:
        return list(snap.chunks())
    finally:
        snap.release()


def test_a_snapshot_restores_only_into_the_same_named_sections() -> None:
    counter, config = ReplicatedCounter(), ReplicatedDict()
    counter.add.local(3)
    config.set.local("a", 1)
    chunks = _snapshot_of(Composite({"hits": counter, "config": config}))

    twin = Composite({"config": ReplicatedDict(), "hits": ReplicatedCounter()})
    twin.restore(chunks)
    assert twin["hits"].get.local() == 3  # type: ignore[attr-defined]
    assert twin["config"].items.local() == [("a", 1)]  # type: ignore[attr-defined]

    with pytest.raises(SnapshotFormatError, match="section 'config'.*does not"):
        Composite({"hits": ReplicatedCounter()}).restore(chunks)
    with pytest.raises(SnapshotFormatError, match="lacks section 'queue'"):
        Composite(
            {"hits": ReplicatedCounter(), "config": ReplicatedDict(), "queue": ReplicatedDict()}
        ).restore(chunks)


def test_a_section_that_refuses_its_stream_leaves_every_section_as_it_was() -> None:
    counter, config = ReplicatedCounter(), ReplicatedDict()
    counter.add.local(3)
    config.set.local("a", 1)
    chunks = _snapshot_of(Composite({"hits": counter, "config": config}))
    # Same names, but "config" holds a counter here: its own type check refuses.
    mine_counter, wrong = ReplicatedCounter(), ReplicatedCounter(9)
    mine_counter.add.local(100)
    comp = Composite({"hits": mine_counter, "config": wrong})
    with pytest.raises(SnapshotFormatError, match="section 'config'"):
        comp.restore(chunks)
    assert mine_counter.get.local() == 100  # "hits" was restored, then put back
    assert wrong.get.local() == 9
    with pytest.raises(SnapshotFormatError, match="bad magic"):
        comp.restore([b"LRSM\x01" + bytes(20)])


def test_sections_are_named_once() -> None:
    with pytest.raises(BadConfigError, match="two sections are named 'ReplicatedDict'"):
        Composite([ReplicatedDict(), ReplicatedDict()])
    with pytest.raises(BadConfigError, match="section name"):
        Composite({"": ReplicatedDict()})
    for odd in ("\ud800", "é" * 128, 7):  # no UTF-8, 256 bytes, not text
        with pytest.raises(BadConfigError, match="section name"):
            Composite({odd: ReplicatedDict()})  # type: ignore[dict-item]
    assert "a/b c\x00" in Composite({"a/b c\x00": ReplicatedDict()}).sections
    with pytest.raises(BadConfigError, match="at least one"):
        Composite([])
