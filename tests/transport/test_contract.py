"""The transport contract (liferaft/transport/base.py, docs/transport.md,
"Transport contract"), run over both transports: what the runtime relies on.

Every test takes ``net``, a :class:`Net` over the memory network or over TCP
on 127.0.0.1; the same assertions must hold for both.  Transport-specific
behaviour (partitions and pauses; handshakes, frames, TLS, backoff) is
tested in the other files of this directory.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest

from liferaft.core.messages import (
    AppendEntries,
    ConfState,
    Entry,
    Heartbeat,
    InstallSnapshot,
    NodeId,
    Snapshot,
    SnapshotMeta,
)
from liferaft.transport import (
    CallError,
    CallNotSentError,
    MemoryNetwork,
    TcpTransport,
    Transport,
)

from ..codec.strategies import one_of_each
from .conftest import FAST
from .helpers import HashSink, Recorder, hanging, pseudo_random_chunks, sha_of, wait_until

KiB = 1024


class Net:
    """Nodes of one kind of transport, each with a :class:`Recorder`."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.memory = MemoryNetwork() if kind == "memory" else None
        self.nodes: dict[NodeId, tuple[Transport, Recorder]] = {}
        self.made: list[Transport] = []

    async def start(self, nid: NodeId) -> tuple[Transport, Recorder]:
        """A started transport for ``nid``, in nobody's peer table yet."""
        t: Transport
        if self.memory is not None:
            t = self.memory.transport(nid)
        else:
            args: dict[str, Any] = {**FAST, "rng": random.Random(len(self.made))}
            t = TcpTransport(nid, "c1", "127.0.0.1:0", snapshot_chunk=64 * KiB, **args)
        self.made.append(t)
        rec = Recorder(nid)
        await t.start(rec)
        self.nodes[nid] = (t, rec)
        return t, rec

    def address(self, nid: NodeId) -> str:
        t = self.nodes[nid][0]
        return t.address if isinstance(t, TcpTransport) else nid

    async def cluster(self, ids: Iterable[NodeId] = ("n1", "n2", "n3")) -> None:
        """Start ``ids``; each knows every one of them (itself included, which
        the contract says is ignored)."""
        for nid in ids:
            await self.start(nid)
        table = {nid: self.address(nid) for nid in ids}
        for nid in ids:
            self.nodes[nid][0].set_peers(table)

    async def close_all(self) -> None:
        for t in reversed(self.made):
            await t.close()


@pytest.fixture(params=["memory", "tcp"])
async def net(request: pytest.FixtureRequest) -> AsyncIterator[Net]:
    n = Net(request.param)
    try:
        yield n
    finally:
        await n.close_all()


def hb(frm: str, to: str, commit: int) -> Heartbeat:
    return Heartbeat(1, frm, to, commit)


def install(index: int, to: str = "n2") -> InstallSnapshot:
    meta = SnapshotMeta(index, 2, ConfState(frozenset({"n1", "n2", "n3"})))
    return InstallSnapshot(2, "n1", to, Snapshot(meta, b""))


async def test_both_are_transports(net: Net) -> None:
    await net.cluster()
    t1, _ = net.nodes["n1"]
    assert isinstance(t1, Transport)
    # The node's own id in the table is ignored.
    assert sorted(t1.stats()["peers"]) == ["n2", "n3"]


# -- messages ------------------------------------------------------------------------


async def test_messages_arrive_exactly_and_in_order_per_peer(net: Net) -> None:
    await net.cluster()
    t1, r1 = net.nodes["n1"]
    _, r2 = net.nodes["n2"]
    _, r3 = net.nodes["n3"]
    every = [m for m in one_of_each() if not isinstance(m, InstallSnapshot)]  # n1 -> n2
    for m in every:
        t1.send(m)
    beats = [hb("n1", to, i) for i in range(300) for to in ("n2", "n3")]
    for m in beats:
        t1.send(m)
    assert r2.delivered == [] and r3.delivered == []  # never re-entrant
    want2 = every + [m for m in beats if m.to == "n2"]
    want3 = [m for m in beats if m.to == "n3"]
    await wait_until(lambda: len(r2.delivered) == len(want2) and len(r3.delivered) == len(want3))
    assert r2.delivered == want2 and r3.delivered == want3
    peers = t1.stats()["peers"]
    assert peers["n2"]["sent"] == len(want2) and peers["n2"]["dropped"] == 0
    assert peers["n2"]["connected"] and peers["n3"]["sent"] == len(want3)
    assert r1.unreachables == []


async def test_order_holds_while_the_sender_is_backed_up(net: Net) -> None:
    """50 MiB in bursts, faster than the receiver reads, with other tasks
    running in between: a TCP link then switches between writing at once and
    queueing behind its write loop, and no message may overtake an earlier
    one.  (The test above never backs a link up: its messages all queue
    before the first dial.  A write loop that offered its socket for direct
    writes while messages still waited in its queue passed it.)"""
    await net.cluster(["n1", "n2"])
    t1, _ = net.nodes["n1"]
    _, r2 = net.nodes["n2"]
    blob = b"x" * (32 * KiB)
    sent = 0
    for _burst in range(100):
        for _ in range(16):
            t1.send(AppendEntries(1, "n1", "n2", sent, 1, (Entry(sent + 1, 1, blob),), sent))
            sent += 1
        await asyncio.sleep(0)
    await wait_until(lambda: len(r2.delivered) == sent, what="every append")
    assert [m.prev_index for m in r2.delivered] == list(range(sent))  # type: ignore[attr-defined]
    assert t1.stats()["peers"]["n2"]["dropped"] == 0


async def test_an_unknown_peer_is_dropped_counted_and_reported_later(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, r1 = net.nodes["n1"]
    t1.send(hb("n1", "n9", 1))
    assert r1.unreachables == []  # scheduled, never from inside send
    await wait_until(lambda: r1.unreachables == ["n9"])
    assert t1.stats()["unknown_dropped"] == 1
    assert "n9" not in t1.stats()["peers"]


async def test_a_peer_that_is_gone_is_reported_unreachable(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, r1 = net.nodes["n1"]
    t2, r2 = net.nodes["n2"]
    t1.send(hb("n1", "n2", 0))
    await wait_until(lambda: len(r2.delivered) == 1)
    await t2.close()

    def reported() -> bool:
        t1.send(hb("n1", "n2", 1))
        return "n2" in r1.unreachables

    await wait_until(reported, what="n2 reported unreachable")
    assert t1.stats()["peers"]["n2"]["dropped"] >= 1


async def test_set_peers_replaces_the_table(net: Net) -> None:
    await net.cluster()
    t1, r1 = net.nodes["n1"]
    t1.set_peers({"n2": net.address("n2")})
    assert sorted(t1.stats()["peers"]) == ["n2"]
    t1.send(hb("n1", "n3", 5))
    await wait_until(lambda: "n3" in r1.unreachables)
    assert net.nodes["n3"][1].delivered == []


# -- calls ---------------------------------------------------------------------------


async def test_calls_are_answered_both_ways_and_out_of_order(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, r1 = net.nodes["n1"]
    t2, r2 = net.nodes["n2"]
    assert await t1.call("n2", b"ping", 5) == b"re:ping"
    assert await t2.call("n1", b"pong", 5) == b"re:pong"
    assert r2.calls == [("n1", b"ping", True)] and r1.calls == [("n2", b"pong", True)]

    async def slow_first(frm: NodeId, payload: bytes, known: bool) -> bytes:
        await asyncio.sleep((20 - int(payload)) * 0.001)
        return payload + b"!"

    r2.on_call = slow_first
    got = await asyncio.gather(*(t1.call("n2", b"%d" % i, 5) for i in range(20)))
    assert got == [b"%d!" % i for i in range(20)]
    assert t1.stats()["calls_pending"] == 0 and t2.stats()["calls_served"] == 21


async def test_call_address_reaches_a_node_that_does_not_know_the_caller(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    _, r1 = net.nodes["n1"]
    stranger, _ = await net.start("new")
    assert await stranger.call_address(net.address("n1"), b"join", 5) == b"re:join"
    assert r1.calls == [("new", b"join", False)]


async def test_a_remote_exception_comes_back_as_call_error(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, _ = net.nodes["n1"]
    _, r2 = net.nodes["n2"]

    async def boom(frm: NodeId, payload: bytes, known: bool) -> bytes:
        raise ValueError("no such thing")

    r2.on_call = boom
    with pytest.raises(CallError, match=r"^remote error: ValueError: no such thing$"):
        await t1.call("n2", b"x", 5)


async def test_calls_that_never_left_raise_call_not_sent(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, _ = net.nodes["n1"]
    with pytest.raises(CallNotSentError, match="unknown peer 'n9'"):
        await t1.call("n9", b"x", 5)
    await t1.close()
    with pytest.raises(CallNotSentError, match="closed"):
        await t1.call("n2", b"x", 5)
    with pytest.raises(CallNotSentError, match="closed"):
        await t1.call_address(net.address("n2"), b"x", 5)


async def test_a_call_times_out_and_its_late_reply_is_ignored(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, _ = net.nodes["n1"]
    t2, r2 = net.nodes["n2"]
    release = asyncio.Event()
    r2.on_call = hanging(release=release)
    with pytest.raises(TimeoutError):
        await t1.call("n2", b"slow", 0.05)
    release.set()
    await wait_until(lambda: t2.stats()["calls_served"] == 1)
    r2.on_call = None
    assert await t1.call("n2", b"next", 5) == b"re:next"
    assert t1.stats()["calls_pending"] == 0


async def test_closing_fails_pending_calls_on_both_sides(net: Net) -> None:
    await net.cluster(["n1", "n2", "n3"])
    t1, r1 = net.nodes["n1"]
    t2, r2 = net.nodes["n2"]
    t3, _ = net.nodes["n3"]
    r2.on_call = r1.on_call = hanging()
    served = asyncio.create_task(t1.call("n2", b"a", 5))  # n2 serves it, then closes
    waiting = asyncio.create_task(t3.call("n1", b"b", 5))  # n3 waits, then closes
    await wait_until(lambda: len(r2.calls) == 1 and len(r1.calls) == 1)
    await t2.close()
    with pytest.raises(CallError):
        await served
    await t3.close()
    with pytest.raises(CallError, match="closed"):
        await waiting


# -- snapshots -----------------------------------------------------------------------


async def test_a_snapshot_is_streamed_committed_and_delivered(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, r1 = net.nodes["n1"]
    _, r2 = net.nodes["n2"]
    r1.sources[7] = lambda: pseudo_random_chunks(512 * KiB, 64 * KiB)
    t1.send(install(7))
    t1.send(hb("n1", "n2", 9))  # other traffic is not held up behind it
    await wait_until(lambda: r1.statuses, what="a snapshot status")
    assert r1.statuses == [("n2", True)]
    (sink,) = r2.sinks
    assert sink.committed and sink.size == 512 * KiB
    assert sink.sha.hexdigest() == sha_of(pseudo_random_chunks(512 * KiB, 64 * KiB))
    await wait_until(lambda: len(r2.delivered) == 2)
    # The header comes after the commit, with its data emptied.
    assert set(r2.delivered) == {install(7), hb("n1", "n2", 9)}


async def test_a_failing_source_aborts_the_sink_and_reports_false(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, r1 = net.nodes["n1"]
    _, r2 = net.nodes["n2"]

    def broken() -> Iterator[bytes]:
        yield b"a" * KiB
        raise OSError("disk gone")

    r1.sources[7] = broken
    t1.send(install(7))
    await wait_until(lambda: r1.statuses and r2.sinks and r2.sinks[0].aborted)
    assert r1.statuses == [("n2", False)] and install(7) not in r2.delivered


async def test_a_failing_sink_commit_reports_false(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, r1 = net.nodes["n1"]
    _, r2 = net.nodes["n2"]
    r1.sources[7] = lambda: pseudo_random_chunks(64 * KiB, 16 * KiB)

    def failing() -> HashSink:
        sink = HashSink()
        sink.fail_commit = True
        return sink

    r2.sink_factory = failing
    t1.send(install(7))
    await wait_until(lambda: r1.statuses)
    assert r1.statuses == [("n2", False)] and r2.sinks[0].aborted
    assert install(7) not in r2.delivered


async def test_every_dropped_snapshot_still_gets_a_status(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, r1 = net.nodes["n1"]
    t2, _ = net.nodes["n2"]
    t1.send(install(4, to="n9"))  # unknown peer
    await wait_until(lambda: r1.statuses == [("n9", False)])
    await t2.close()

    def reported() -> bool:
        t1.send(install(5))
        return ("n2", False) in r1.statuses

    await wait_until(reported, what="a status for a snapshot to a gone peer")
    assert all(not ok for _, ok in r1.statuses)


# -- lifecycle and addresses ---------------------------------------------------------


def tasks_of(nid: NodeId) -> set[str]:
    """Names of running transport tasks that work for ``nid`` (links,
    snapshot streams and calls are named ``liferaft-<what>-<from>-><to>``)."""
    names = {t.get_name() for t in asyncio.all_tasks() if not t.done()}
    return {n for n in names if n.startswith("liferaft-") and f"-{nid}->" in n}


async def test_close_is_idempotent_ends_its_tasks_and_calls_nothing_after(net: Net) -> None:
    await net.cluster()
    t1, r1 = net.nodes["n1"]
    _, r2 = net.nodes["n2"]
    r1.sources[3] = lambda: pseudo_random_chunks(64 * KiB, 16 * KiB)
    t1.send(install(3))
    assert await t1.call("n2", b"x", 5) == b"re:x"
    await wait_until(lambda: r1.statuses == [("n2", True)])
    # n1 closes while its peers go on: its own tasks end, theirs carry on.
    await t1.close()
    await t1.close()
    assert tasks_of("n1") == set()
    seen = (len(r1.delivered), len(r1.unreachables), len(r1.statuses), len(r1.calls))
    t1.send(hb("n1", "n2", 1))
    t1.send(install(4))
    net.nodes["n2"][0].send(hb("n2", "n1", 2))
    await wait_until(lambda: "n1" in r2.unreachables or net.kind == "memory")
    await asyncio.sleep(0.01)
    assert (len(r1.delivered), len(r1.unreachables), len(r1.statuses), len(r1.calls)) == seen
    await net.close_all()
    await wait_until(lambda: not tasks_of("n2") and not tasks_of("n3"))


async def test_check_address_accepts_a_member_address_and_refuses_nonsense(net: Net) -> None:
    await net.cluster(["n1", "n2"])
    t1, _ = net.nodes["n1"]
    t1.check_address(net.address("n2"))
    for bad in ["", 7]:
        with pytest.raises(ValueError):
            t1.check_address(bad)  # type: ignore[arg-type]
