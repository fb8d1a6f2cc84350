"""Streamed snapshots over TCP: intact delivery, fairness, and every way to fail."""

from __future__ import annotations

import asyncio
import hashlib
import time
import zlib
from collections.abc import Iterator

from liferaft.codec import encode_message
from liferaft.core.messages import ConfState, Heartbeat, InstallSnapshot, Snapshot, SnapshotMeta
from liferaft.transport._frames import Kind, SnapEnd, control, frame

from .conftest import MakeCluster
from .helpers import HashSink, pseudo_random_chunks, sha_of, wait_until
from .test_tcp import closed_by_server, connected, hello, open_raw

MiB = 1024 * 1024
CONF = ConfState(frozenset({"n1", "n2"}))


def install(index: int, frm: str = "n1", to: str = "n2", data: bytes = b"") -> InstallSnapshot:
    return InstallSnapshot(5, frm, to, Snapshot(SnapshotMeta(index, 4, CONF), data))


async def test_a_5_mib_snapshot_arrives_intact(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    t2, r2 = nodes["n2"]
    # The source yields 1 MiB pieces; the transport cuts them into 256 KiB frames.
    r1.sources[100] = lambda: pseudo_random_chunks(5 * MiB, MiB)
    t1.send(install(100, data=b"ignored: the source has the data"))
    await wait_until(lambda: r1.statuses, what="snapshot status")
    assert r1.statuses == [("n2", True)]
    (sink,) = r2.sinks
    assert sink.committed and not sink.aborted
    assert sink.size == 5 * MiB and sink.writes == 20
    assert sink.sha.hexdigest() == sha_of(pseudo_random_chunks(5 * MiB, MiB))
    # Sink calls ran in the transport's worker threads, not on the loop.
    assert all(name.startswith("liferaft-transport") for name in sink.threads)
    # The header arrives after the commit, with its data emptied.
    assert r2.delivered == [install(100)]
    assert t1.stats()["peers"]["n2"]["snapshots_sent"] == 1
    assert not t1.stats()["peers"]["n2"]["streaming"]


async def test_other_traffic_flows_while_a_snapshot_streams(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"], snapshot_chunk=64 * 1024)
    t1, r1 = nodes["n1"]
    t2, r2 = nodes["n2"]
    await connected(t1, "n2")
    r2.sink_factory = lambda: HashSink(on_write=lambda n: time.sleep(0.001))
    r1.sources[7] = lambda: pseudo_random_chunks(4 * MiB, 64 * 1024)
    t1.send(install(7))
    for i in range(20):
        await asyncio.sleep(0.002)
        t1.send(Heartbeat(5, "n1", "n2", i))
    await wait_until(lambda: r1.statuses == [("n2", True)], timeout=10)
    kinds = [type(m).__name__ for m in r2.delivered]
    assert kinds.count("Heartbeat") == 20
    # Heartbeats were not held back behind the whole snapshot.
    assert kinds.index("Heartbeat") < kinds.index("InstallSnapshot")


async def test_a_stream_cut_by_a_receiver_crash_aborts_and_reports(
    make_cluster: MakeCluster,
) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    t2, r2 = nodes["n2"]
    r1.sources[9] = lambda: pseudo_random_chunks(64 * MiB, 256 * 1024)
    t1.send(install(9))
    await wait_until(lambda: r2.sinks and r2.sinks[0].writes >= 3, what="some chunks")
    await t2.close()
    await wait_until(lambda: r2.sinks[0].aborted, what="sink aborted")
    assert not r2.sinks[0].committed
    await wait_until(lambda: r1.statuses == [("n2", False)], what="status False")
    assert t1.stats()["peers"]["n2"]["snapshots_failed"] == 1
    assert r2.delivered == []


async def test_a_stream_cut_by_a_sender_crash_aborts_the_sink(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    _, r2 = nodes["n2"]
    r1.sources[9] = lambda: pseudo_random_chunks(64 * MiB, 256 * 1024)
    t1.send(install(9))
    await wait_until(lambda: r2.sinks and r2.sinks[0].writes >= 2, what="some chunks")
    await t1.close()
    await wait_until(lambda: r2.sinks[0].aborted, what="sink aborted")
    assert r2.delivered == []
    assert r1.statuses == []  # a closed transport calls nobody back


async def test_a_failing_source_aborts_the_stream_but_not_the_connection(
    make_cluster: MakeCluster,
) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    _, r2 = nodes["n2"]

    def broken() -> Iterator[bytes]:
        yield b"a" * 1000
        yield b"b" * 1000
        raise OSError("snapshot file vanished")

    r1.sources[3] = broken
    t1.send(install(3))
    await wait_until(lambda: r1.statuses == [("n2", False)])
    await wait_until(lambda: r2.sinks and r2.sinks[0].aborted)
    t1.send(Heartbeat(5, "n1", "n2", 1))
    await wait_until(lambda: r2.delivered == [Heartbeat(5, "n1", "n2", 1)])
    assert t1.stats()["peers"]["n2"]["reconnects"] == 0
    # A later snapshot to the same peer goes through.
    r1.sources[4] = lambda: iter([b"fine"])
    t1.send(install(4))
    await wait_until(lambda: r1.statuses[-1:] == [("n2", True)])


async def test_a_failing_sink_commit_reports_false(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    _, r2 = nodes["n2"]

    def failing() -> HashSink:
        s = HashSink()
        s.fail_commit = True
        return s

    r2.sink_factory = failing
    r1.sources[3] = lambda: iter([b"x" * 5000])
    t1.send(install(3))
    await wait_until(lambda: r1.statuses == [("n2", False)])
    await wait_until(lambda: r2.sinks[0].aborted)
    assert r2.delivered == []


async def test_a_receiver_without_a_sink_stops_the_sender_early(
    make_cluster: MakeCluster,
) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    _, r2 = nodes["n2"]

    def no_sink() -> HashSink:
        raise OSError("no space for a snapshot")

    r2.sink_factory = no_sink
    pulled = []

    def source() -> Iterator[bytes]:
        for chunk in pseudo_random_chunks(256 * MiB, 256 * 1024):
            pulled.append(len(chunk))
            yield chunk

    r1.sources[3] = source
    t1.send(install(3))
    await wait_until(lambda: r1.statuses == [("n2", False)])
    assert sum(pulled) < 256 * MiB
    t1.send(Heartbeat(5, "n1", "n2", 1))
    await wait_until(lambda: r2.delivered == [Heartbeat(5, "n1", "n2", 1)])


async def test_snapshots_to_one_peer_go_one_at_a_time_newest_waiting_wins(
    make_cluster: MakeCluster,
) -> None:
    nodes = await make_cluster(["n1", "n2"])
    t1, r1 = nodes["n1"]
    _, r2 = nodes["n2"]
    await connected(t1, "n2")
    r1.sources[1] = lambda: pseudo_random_chunks(2 * MiB, 256 * 1024)
    r1.sources[2] = lambda: iter([b"second"])
    r1.sources[3] = lambda: iter([b"third"])
    t1.send(install(1))
    await wait_until(lambda: t1.stats()["peers"]["n2"]["streaming"])
    t1.send(install(2))
    t1.send(install(3))  # supersedes 2, which fails without being streamed
    await wait_until(lambda: len(r1.statuses) == 3)
    # Every InstallSnapshot handed to send() got exactly one status.
    assert sorted(r1.statuses) == [("n2", False), ("n2", True), ("n2", True)]
    assert r1.statuses[0] == ("n2", False)
    await wait_until(lambda: len(r2.delivered) == 2)
    assert [m.snapshot.index for m in r2.delivered] == [1, 3]  # type: ignore[attr-defined]
    assert t1.stats()["peers"]["n2"]["dropped"] == 1


async def test_a_dropped_snapshot_still_gets_a_status(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1", "n2"], queue_size=1, direct_writes=False)
    t1, r1 = nodes["n1"]
    await connected(t1, "n2")
    r1.sources[5] = lambda: iter([b"x"])
    t1.send(install(9, to="n9"))  # unknown peer
    t1.send(Heartbeat(5, "n1", "n2", 0))
    t1.send(install(5))  # the queue (of 1) is full
    await wait_until(lambda: len(r1.statuses) == 2)
    assert r1.statuses == [("n9", False), ("n2", False)]


async def test_a_corrupt_stream_aborts_the_sink_and_closes_the_connection(
    make_cluster: MakeCluster,
) -> None:
    nodes = await make_cluster(["n1"], knows={"n1": []})
    t1, r1 = nodes["n1"]
    t1.set_peers({"n3": "127.0.0.1:1"})
    reader, writer = await open_raw(t1)
    writer.write(hello())
    writer.write(frame(Kind.SNAP_BEGIN, encode_message(install(5, "n3", "n1"))))
    writer.write(frame(Kind.SNAP_CHUNK, b"abc"))
    writer.write(control(Kind.SNAP_END, SnapEnd(3, 12345)))
    answer = await closed_by_server(reader)
    writer.close()
    assert r1.sinks[0].aborted and r1.delivered == []
    assert answer.endswith(b"\xc2\xb1checksum mismatch")  # SNAP_RESULT(False, reason)
    assert t1.stats()["bad_frames"] == 1


async def test_a_raw_stream_with_a_good_checksum_is_committed(make_cluster: MakeCluster) -> None:
    nodes = await make_cluster(["n1"], knows={"n1": []})
    t1, r1 = nodes["n1"]
    t1.set_peers({"n3": "127.0.0.1:1"})
    reader, writer = await open_raw(t1)
    writer.write(hello())
    writer.write(frame(Kind.SNAP_BEGIN, encode_message(install(5, "n3", "n1"))))
    writer.write(frame(Kind.SNAP_CHUNK, b"abc"))
    writer.write(control(Kind.SNAP_END, SnapEnd(3, zlib.crc32(b"abc"))))
    await wait_until(lambda: r1.delivered == [install(5, "n3", "n1")])
    assert r1.sinks[0].committed
    assert r1.sinks[0].sha.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    # A snapshot must start with an empty data field.
    writer.write(frame(Kind.SNAP_BEGIN, encode_message(install(6, "n3", "n1", b"inline"))))
    await closed_by_server(reader)
    writer.close()
