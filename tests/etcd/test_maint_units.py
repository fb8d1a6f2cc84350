"""etcd's Maintenance calls without processes: HashKV's hash
(liferaft/kv/mvcc/hashkv.py), the checkpoint padded for etcdctl's
``snapshot save`` (liferaft/kv/mvcc/checkpoint.py, ``align``), and the
Snapshot handler's blobs and its end when a client goes away."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from liferaft.etcd import errors, ids, maintenance
from liferaft.etcd.context import EtcdContext
from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.kv.cluster import ClusterStatus, Member
from liferaft.kv.mvcc import Compact, DeleteRange, Put
from liferaft.kv.mvcc import compaction as cpass
from liferaft.kv.mvcc.checkpoint import frame, receive
from liferaft.kv.mvcc.codec import Write
from liferaft.kv.mvcc.hashkv import hash_kv
from tests.kv.machine_log import Log


def _history(log: Log) -> int:
    """Three versions of 150 keys (more than one compaction step), some
    deleted; the revision to compact at."""
    for v in (b"a", b"b"):
        log.batch(*(Write(Put(b"k%03d" % i, v)) for i in range(150)))
    at = log.m.revision()
    log.batch(*(Write(Put(b"k%03d" % i, b"c")) for i in range(0, 150, 2)))
    log.apply(Write(DeleteRange(b"k%03d" % 5)))
    return at


def _hash(log: Log, rev: int = 0) -> tuple[int, int]:
    with log.m.read() as view:
        return hash_kv(view, rev or view.revision), view.compact_revision


def test_the_hash_ignores_how_far_a_compaction_pass_has_gone(tmp_path: Path) -> None:
    a, b = Log(tmp_path / "a"), Log(tmp_path / "b")
    try:
        for log in (a, b):
            at = _history(log)
            log.apply(Compact(at))
        for _ in range(5):  # b runs its pass to the end; a has just begun
            b.apply(None)
        with a.m.read() as va, b.m.read() as vb:
            assert cpass.pending(va.txn, va.dbs) and not cpass.pending(vb.txn, vb.dbs)
            assert va.revision == vb.revision
        assert _hash(a) == _hash(b)
    finally:
        a.m.close()
        b.m.close()


def test_the_hash_covers_the_history_up_to_its_revision(tmp_path: Path) -> None:
    log = Log(tmp_path / "m")
    try:
        _history(log)
        rev = log.m.revision()
        before = _hash(log)[0]
        assert _hash(log, rev - 1)[0] != before  # the delete at rev is in it
        log.apply(Write(Put(b"later", b"x")))
        assert _hash(log, rev)[0] == before  # a write after rev is not
        assert _hash(log)[0] != before
        log.apply(Compact(rev - 1))
        assert _hash(log, rev)[0] != before  # compacted versions leave it
    finally:
        log.m.close()


@pytest.mark.parametrize("sizes", [[], [4096], [4096 * 3, 100], [65536] * 5, [511], [467]])
def test_an_aligned_checkpoint_is_32_modulo_512_and_still_a_checkpoint(
    tmp_path: Path, sizes: list[int]
) -> None:
    copy = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    stream = b"".join(frame(copy, align=(512, 32)))
    assert len(stream) % 512 == 32
    receive([stream], tmp_path / "r")
    data = (tmp_path / "r" / "data.mdb").read_bytes()
    # The copy, then zeros only (LMDB ignores bytes past its last page).
    assert data.startswith(b"".join(copy)) and not data[len(b"".join(copy)) :].strip(b"\0")
    # Raft's checkpoints are not padded.
    assert len(b"".join(frame(copy))) == 5 + sum(4 + n for n in sizes) + 4 + 40


# -- the Snapshot handler ----------------------------------------------------------------


class FakeMachine:
    """Checkpoint chunks that can be held back at the second one (``gate``)."""

    def __init__(self, chunks: list[bytes], gate: threading.Event | None = None) -> None:
        self.chunks = chunks
        self.gate = gate
        self.align: Any = None
        self.closed = False

    def db_size_in_use(self) -> int:
        return sum(map(len, self.chunks))

    def checkpoint_chunks(self, align: Any = None) -> Iterator[bytes]:
        self.align = align
        try:
            for i, c in enumerate(self.chunks):
                if i == 1 and self.gate is not None:
                    assert self.gate.wait(10)
                yield c
        finally:
            self.closed = True


class SnapshotService:
    """What Snapshot uses of a KV service."""

    def __init__(self, machine: FakeMachine) -> None:
        self.machine = machine
        self.node = SimpleNamespace(id="n1", rn=None, members={})

    def store_revision(self) -> int:
        return 7


def _ctx(machine: FakeMachine) -> EtcdContext:
    return EtcdContext(SnapshotService(machine), "c")  # type: ignore[arg-type]


def test_snapshot_blobs_are_the_checkpoint_and_only_the_last_says_0_remain() -> None:
    m = FakeMachine([b"a" * 10, b"b" * 20, b"c" * 5])

    async def run() -> list[pb.SnapshotResponse]:
        return [r async for r in maintenance.snapshot(_ctx(m), pb.SnapshotRequest())]

    got = asyncio.run(run())
    assert [r.blob for r in got] == m.chunks and m.align == maintenance.ETCDCTL_ALIGN
    assert [r.remaining_bytes > 0 for r in got] == [True, True, False]
    assert all(r.header.revision == 7 for r in got) and m.closed


def test_a_client_gone_mid_chunk_closes_the_copy_after_its_read_ends() -> None:
    """Cancelled while a worker thread reads the next chunk: the handler
    waits for that read, then closes the copy (closing a generator that
    runs in another thread would raise instead)."""
    gate = threading.Event()
    m = FakeMachine([b"a", b"b", b"c"], gate)

    async def run() -> None:
        agen = maintenance.snapshot(_ctx(m), pb.SnapshotRequest())
        task = asyncio.ensure_future(agen.__anext__())
        while not m.align:  # the copy has started; its second chunk waits
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.sleep(0.2)  # the handler is in its finally now
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert m.closed


def test_a_third_snapshot_at_once_is_too_many_requests() -> None:
    gate = threading.Event()
    m = FakeMachine([b"a", b"b"], gate)
    ctx = _ctx(m)

    async def run() -> list[int]:
        held = [maintenance.snapshot(ctx, pb.SnapshotRequest()) for _ in range(2)]
        tasks = [asyncio.ensure_future(h.__anext__()) for h in held]
        await asyncio.sleep(0.1)  # both copies wait at their second chunk
        with pytest.raises(errors.EtcdError) as e:
            await maintenance.snapshot(ctx, pb.SnapshotRequest()).__anext__()
        assert e.value is errors.TOO_MANY_REQUESTS
        gate.set()
        firsts = [(await t).blob for t in tasks]
        for h in held:
            await h.aclose()  # a client gone after one blob frees its place
        again = [r.blob async for r in maintenance.snapshot(ctx, pb.SnapshotRequest())]
        return [len(firsts), len(again)]

    assert asyncio.run(run()) == [2, 2]


# -- Status and MoveLeader on a node's view ---------------------------------------------


class FakeService:
    """A KV service as Status and MoveLeader see it: n1 and n2 vote, n3 learns."""

    def __init__(self, leader: str | None, me: str = "n3") -> None:
        self.node = SimpleNamespace(id=me, rn=None, members={"n1": {}, "n2": {}, "n3": {}})
        self.machine = FakeMachine([b"x" * 100])
        self.machine.db_size = lambda: 4096  # type: ignore[attr-defined]
        self.leader = leader
        self.transfers: list[str] = []

    def store_revision(self) -> int:
        return 3

    def members(self) -> list[Member]:
        return [Member("n1", "", "", True), Member("n2", "", "", True), Member("n3", "", "", False)]

    def status(self) -> ClusterStatus:
        return ClusterStatus(
            id=self.node.id, role="learner", term=4, leader=self.leader, leader_client_addr="",
            commit_index=9, applied_index=8, last_log_index=9, snapshot_index=0,
            members=self.members(), peers={}, storage_ok=False, bad_peer_addresses={},
            revision=3,
        )  # fmt: skip

    async def transfer(self, to: str | None = None) -> str:
        assert to is not None
        self.transfers.append(to)
        return to


def test_status_of_a_learner_without_a_leader_says_so() -> None:
    svc = FakeService(leader=None)
    ctx = EtcdContext(svc, "c")  # type: ignore[arg-type]
    st = asyncio.run(maintenance.status(ctx, pb.StatusRequest()))
    assert st.isLearner and st.leader == 0 and st.raftIndex == 9 and st.raftAppliedIndex == 8
    assert list(st.errors) == [errors.NO_LEADER.message, maintenance.STORAGE_FAILED]
    assert st.dbSize == 4096 and st.dbSizeInUse == 100 and st.header.revision == 3
    svc.leader = "n1"
    st = asyncio.run(maintenance.status(ctx, pb.StatusRequest()))
    assert st.leader == ids.member_id("c", "n1") and list(st.errors) == [maintenance.STORAGE_FAILED]


@pytest.mark.parametrize("target", ["n3", "stranger", None])
def test_move_leader_refuses_a_learner_or_an_unknown_member(target: str | None) -> None:
    svc = FakeService(leader="n1")
    ctx = EtcdContext(svc, "c")  # type: ignore[arg-type]
    mid = ids.member_id("c", target) if target else 0
    with pytest.raises(errors.EtcdError) as e:
        asyncio.run(maintenance.move_leader(ctx, pb.MoveLeaderRequest(targetID=mid)))
    assert e.value is errors.BAD_LEADER_TRANSFEREE and svc.transfers == []
    asyncio.run(
        maintenance.move_leader(ctx, pb.MoveLeaderRequest(targetID=ids.member_id("c", "n2")))
    )
    assert svc.transfers == ["n2"]
