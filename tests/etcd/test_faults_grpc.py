"""etcd's gRPC API under faults (issue 16's review): what a client relies on
when a node is killed, restarted or cut off, checked with raw gRPC stubs
against real ``liferaft serve`` processes.

- A watch that resumes as clientv3 does (from the last revision it saw + 1,
  on the next endpoint) across a leader's kill -9 and a node's restart
  sees every revision once, in order: exactly what a replay shows after.
- A keep-alive stream held open on a follower renews its lease across the
  leader's kill -9 (the follower waits for the new leader's lease clock).
- A linearizable Range on an old leader cut off from the others (they are
  paused after electing a new leader and writing) never answers the value
  the new leader overwrote; a serializable one may, and does.
- Every header: one cluster_id on every node, each node's member_id its
  MemberList id, the same after a restart, and the raft term of Status.

One cluster for the module; each test leaves it whole (every node running,
none paused) for the next.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.etcd.proto import rpc_pb2_grpc
from tests.kv.procs import ProcCluster, proc_cluster, wait_for

PREFIX = b"fw/"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    root: Path = tmp_path_factory.mktemp("etcd-faults")
    # A short request timeout: a read without a quorum gives up sooner.
    with proc_cluster(root, grpc=True, extra=["--request-timeout", "2"]) as c:
        c.start_cluster(3)
        c.wait_leader()
        yield c


def _kv(addr: str) -> tuple[grpc.Channel, rpc_pb2_grpc.KVStub]:
    ch = grpc.insecure_channel(addr)
    return ch, rpc_pb2_grpc.KVStub(ch)


def _put_any(c: ProcCluster, key: bytes, value: bytes, deadline: float) -> int:
    """Put through any running node, again on UNAVAILABLE (a client's
    retry: a put may so apply twice, which the watch must show as two
    revisions); the revision of the one acknowledged."""
    while True:
        for n in c.nodes.values():
            if not n.running() or n.paused:
                continue
            ch, kv = _kv(n.grpc)
            with ch:
                try:
                    return kv.Put(pb.PutRequest(key=key, value=value), timeout=3).header.revision
                except grpc.RpcError:
                    pass
        assert time.monotonic() < deadline, f"no node took the put of {key!r}"
        time.sleep(0.1)


class ResumingWatch(threading.Thread):
    """A watch on ``PREFIX`` that does what clientv3 does when its stream
    fails: watch again on the next endpoint from the revision after the
    last event it got."""

    def __init__(self, c: ProcCluster, order: list[str], start: int) -> None:
        super().__init__(daemon=True)
        self.c, self.order, self.next_rev = c, order, start
        self.events: list[tuple[int, bytes, int]] = []  # (mod_revision, key, type)
        self.reconnects = 0
        self.stopping = threading.Event()
        self.failure: str | None = None

    def run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            node = self.c.nodes[self.order[i % len(self.order)]]
            i += 1
            if not node.running():
                continue
            try:
                self._watch(node.grpc)
            except grpc.RpcError:
                self.reconnects += 1
                time.sleep(0.1)

    def _watch(self, addr: str) -> None:
        create = pb.WatchCreateRequest(
            key=PREFIX, range_end=PREFIX[:-1] + b"0", start_revision=self.next_rev
        )
        reqs: queue.Queue[pb.WatchRequest | None] = queue.Queue()
        reqs.put(pb.WatchRequest(create_request=create))

        def requests() -> Iterator[pb.WatchRequest]:
            while not self.stopping.is_set():
                with contextlib.suppress(queue.Empty):
                    r = reqs.get(timeout=0.1)
                    if r is not None:
                        yield r

        with grpc.insecure_channel(addr) as ch:
            stream = rpc_pb2_grpc.WatchStub(ch).Watch(requests(), timeout=60)
            stop = threading.Thread(target=lambda: (self.stopping.wait(), stream.cancel()))
            stop.start()
            for resp in stream:
                if resp.canceled:
                    self.failure = f"canceled: {resp}"
                    self.stopping.set()
                for ev in resp.events:
                    self.events.append((ev.kv.mod_revision, ev.kv.key, ev.type))
                    self.next_rev = ev.kv.mod_revision + 1


def _replay(addr: str, start: int, upto: int) -> list[tuple[int, bytes, int]]:
    """Every event on PREFIX from ``start`` to ``upto``, from a fresh watch."""
    got: list[tuple[int, bytes, int]] = []
    done = threading.Event()

    def requests() -> Iterator[pb.WatchRequest]:
        yield pb.WatchRequest(create_request=pb.WatchCreateRequest(
            key=PREFIX, range_end=PREFIX[:-1] + b"0", start_revision=start))  # fmt: skip
        done.wait(30)

    with grpc.insecure_channel(addr) as ch:
        stream = rpc_pb2_grpc.WatchStub(ch).Watch(requests(), timeout=30)
        try:
            for resp in stream:
                got += [(e.kv.mod_revision, e.kv.key, e.type) for e in resp.events]
                if got and got[-1][0] >= upto:
                    break
        finally:
            done.set()
            stream.cancel()
    return got


def test_watch_resumed_as_clientv3_misses_and_repeats_nothing(cluster: ProcCluster) -> None:
    c = cluster
    leader = c.wait_leader()
    others = [i for i in c.nodes if i != leader]
    deadline = time.monotonic() + 60
    start = _put_any(c, PREFIX + b"start", b"0", deadline)
    # The watch starts on the leader, so killing it cuts the stream.
    w = ResumingWatch(c, [leader, *others], start)
    w.start()
    try:
        for i in range(60):
            _put_any(c, PREFIX + b"k%d" % (i % 7), b"%d" % i, deadline)
            if i == 15:
                c.kill(leader)  # kill -9: the stream breaks without a word
            elif i == 30:
                c.start(leader)  # back on its data, as a follower
            elif i == 40:
                c.restart(others[0])  # where the watch has likely moved
        last = _put_any(c, PREFIX + b"end", b"1", deadline)
        wait_for(lambda: w.next_rev > last or w.failure, 30, "the watch to catch up")
    finally:
        w.stopping.set()
        w.join(10)
    assert w.failure is None, w.failure
    revs = [e[0] for e in w.events]
    assert revs == sorted(set(revs)), "a revision was repeated or came out of order"
    c.wait_leader()
    truth = _replay(c.nodes[others[1]].grpc, start, last)
    assert w.events == truth
    assert revs[0] == start and revs[-1] == last
    assert w.reconnects >= 1  # the faults did reach the watch


def test_keepalive_stream_on_a_follower_outlives_a_leader_kill(cluster: ProcCluster) -> None:
    c = cluster
    leader = c.wait_leader()
    follower = next(i for i in c.nodes if i != leader)
    ttl = 2
    with grpc.insecure_channel(c.nodes[follower].grpc) as ch:
        lease = rpc_pb2_grpc.LeaseStub(ch)
        kv = rpc_pb2_grpc.KVStub(ch)
        lid = lease.LeaseGrant(pb.LeaseGrantRequest(TTL=ttl), timeout=10).ID
        kv.Put(pb.PutRequest(key=b"fk/held", value=b"v", lease=lid), timeout=10)
        stop = threading.Event()

        def requests() -> Iterator[pb.LeaseKeepAliveRequest]:
            while not stop.wait(0.5):
                yield pb.LeaseKeepAliveRequest(ID=lid)

        stream = lease.LeaseKeepAlive(requests(), timeout=60)
        ttls: list[int] = []
        try:
            for resp in stream:
                ttls.append(resp.TTL)
                if len(ttls) == 2:
                    c.kill(leader)
                    c.wait_leader(among=[i for i in c.nodes if i != leader])
                    after = len(ttls)
                if len(ttls) >= 2 and len(ttls) - after >= 4 * ttl:  # 2 TTLs of renewals
                    break
        finally:
            stop.set()
            stream.cancel()
        # One stream the whole time, every answer a renewal, and the key kept.
        assert ttls and all(t == ttl for t in ttls), ttls
        got = kv.Range(pb.RangeRequest(key=b"fk/held"), timeout=10)
        assert [x.lease for x in got.kvs] == [lid]
        lease.LeaseRevoke(pb.LeaseRevokeRequest(ID=lid), timeout=10)
    c.start(leader)
    c.wait_leader()


def test_linearizable_range_on_a_cut_off_old_leader_is_never_stale(cluster: ProcCluster) -> None:
    """The old leader is paused while the others elect and overwrite the
    key, then they are paused and it goes on, still thinking it leads."""
    c = cluster
    old = c.wait_leader()
    others = [i for i in c.nodes if i != old]
    ch, kv = _kv(c.nodes[old].grpc)
    with ch:
        kv.Put(pb.PutRequest(key=b"fp/k", value=b"old"), timeout=10)
        c.pause(old)
        try:
            new = c.wait_leader(among=others)
            ch2, kv2 = _kv(c.nodes[new].grpc)
            with ch2:
                kv2.Put(pb.PutRequest(key=b"fp/k", value=b"new"), timeout=10)
            for i in others:
                c.pause(i)
            c.resume(old)
            # Serializable: its own applied store, stale by design; this is
            # what a broken linearizable read would answer.
            got = kv.Range(pb.RangeRequest(key=b"fp/k", serializable=True), timeout=10)
            assert [x.value for x in got.kvs] == [b"old"]
            with pytest.raises(grpc.RpcError) as e:
                got = kv.Range(pb.RangeRequest(key=b"fp/k"), timeout=8)
                pytest.fail(f"a linearizable read answered {got.kvs} without a quorum")
            assert e.value.code() in (grpc.StatusCode.UNAVAILABLE,
                                      grpc.StatusCode.DEADLINE_EXCEEDED), e.value  # fmt: skip
        finally:
            for i in c.nodes:
                c.resume(i)
        c.wait_leader()
        got = kv.Range(pb.RangeRequest(key=b"fp/k"), timeout=10)
        assert [x.value for x in got.kvs] == [b"new"]


def test_headers_name_the_cluster_the_member_and_the_term(cluster: ProcCluster) -> None:
    c = cluster
    c.wait_leader()

    def look() -> dict[str, tuple[int, int, int, int]]:
        out = {}
        for nid, n in c.nodes.items():
            with grpc.insecure_channel(n.grpc) as ch:
                h = rpc_pb2_grpc.KVStub(ch).Range(pb.RangeRequest(key=b"fh"), timeout=10).header
                st = rpc_pb2_grpc.MaintenanceStub(ch).Status(pb.StatusRequest(), timeout=10)
            out[nid] = (h.cluster_id, h.member_id, h.raft_term, st.raftTerm)
        return out

    def settled() -> dict[str, tuple[int, int, int, int]] | None:
        got = look()  # no election between a Range and its Status
        return got if all(t == st for _, _, t, st in got.values()) else None

    before = wait_for(settled, 20, "one term across a Range and a Status")
    with grpc.insecure_channel(next(iter(c.nodes.values())).grpc) as ch:
        members = rpc_pb2_grpc.ClusterStub(ch).MemberList(pb.MemberListRequest(), timeout=10)
    assert {m.name: m.ID for m in members.members} == {n: v[1] for n, v in before.items()}
    assert len({v[0] for v in before.values()}) == 1 and before["n1"][0] != 0
    assert all(v[2] > 0 for v in before.values())
    c.restart("n2")
    c.wait_leader()
    after = wait_for(settled, 20, "one term after the restart")
    assert {n: v[:2] for n, v in after.items()} == {n: v[:2] for n, v in before.items()}
