"""Differential testing against a real etcd 3.4: the same seeded random
operations sent through the same gRPC stubs to a real etcd and to
liferaft-kv, and their answers compared field by field.

What may differ is normalised away here, and only that: the member and
cluster ids and the raft term of every header (different clusters), the
seconds left of a lease (time passes between the two calls), the order of
LeaseLeases and of LeaseTimeToLive's keys (etcd's come from Go maps), and
what docs/etcd.md documents as different (:func:`as_liferaft`, and the
generator stays clear of the rest: see :class:`Gen`).  Everything else, revisions included, must
be equal: both stores start empty at revision 1.

The generator keeps what makes etcd's answers deterministic: fewer than 12
keys (Go's sort is an insertion sort below 12 elements, so ties keep key
order, as liferaft's stable sort does), explicit lease ids (etcd picks
random ones) and TTLs far above both minimums.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.etcd.proto import rpc_pb2_grpc
from liferaft.harness.ports import HOST, free_ports
from tests.conftest import require_tool

KEYS = [b"a", b"b", b"c", b"d", b"e", b"f", b"g"]
VALUES = [b"", b"x", b"y", b"zz"]
LEASE_IDS = [101, 102, 103]
#: Fields of every ResponseHeader that name the cluster, not the data.
HEADER_IDS = ("cluster_id", "member_id", "raft_term")


def find_etcd() -> str:
    """The etcd 3.4 server binary; skips (fails under CI=true) without it."""
    path = shutil.which("etcd") or ("/usr/bin/etcd" if Path("/usr/bin/etcd").exists() else None)
    return path or require_tool("etcd")


class RealEtcd:
    """A single-member etcd on 127.0.0.1 with a temp data dir, stopped by
    its PID on :meth:`close` (a context manager)."""

    def __init__(self, binary: str, root: Path) -> None:
        client, peer = free_ports(2)
        self.addr = f"{HOST}:{client}"
        data = root / "etcd-data"
        self.log = (root / "etcd.log").open("w")
        self.proc = subprocess.Popen(
            [binary, "--name", "d", "--data-dir", str(data),
             "--listen-client-urls", f"http://{self.addr}",
             "--advertise-client-urls", f"http://{self.addr}",
             "--listen-peer-urls", f"http://{HOST}:{peer}",
             "--initial-advertise-peer-urls", f"http://{HOST}:{peer}",
             "--initial-cluster", f"d=http://{HOST}:{peer}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.addr) as ch:
            maint = rpc_pb2_grpc.MaintenanceStub(ch)
            while True:
                try:
                    if maint.Status(pb.StatusRequest(), timeout=1).leader:
                        return
                except grpc.RpcError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"etcd did not start (exit {self.proc.poll()})")
                time.sleep(0.1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()

    def __enter__(self) -> RealEtcd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Stubs:
    """The KV, Lease and Watch stubs on one channel."""

    def __init__(self, addr: str) -> None:
        self.channel = grpc.insecure_channel(addr)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.watch = rpc_pb2_grpc.WatchStub(self.channel)

    def close(self) -> None:
        self.channel.close()


# -- normalising answers ------------------------------------------------------------------


def _scrub(d: Any) -> Any:
    """Drop the ids of every header, at any depth (nested txns carry them)."""
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            if k == "header" and isinstance(v, dict):
                v = {hk: hv for hk, hv in v.items() if hk not in HEADER_IDS}
            out[k] = _scrub(v)
        return out
    if isinstance(d, list):
        return [_scrub(x) for x in d]
    return d


def normal(msg: Message) -> dict[str, Any]:
    """A response as a dict, with what may differ between clusters dropped."""
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    d = _scrub(d)
    if isinstance(msg, pb.LeaseTimeToLiveResponse) and d.get("TTL") not in (None, "-1"):
        d["TTL"] = "alive"  # seconds left: time passed between the calls
    if isinstance(msg, pb.LeaseTimeToLiveResponse) and "keys" in d:
        d["keys"] = sorted(d["keys"])  # etcd's come from a Go map: any order
    if isinstance(msg, pb.LeaseLeasesResponse):
        d["leases"] = sorted(d.get("leases", []), key=lambda x: int(x["ID"]))
    return d


def outcome(fn: Callable[[], Message]) -> tuple[str, Any]:
    """``("ok", normal answer)`` or ``("error", (code name, details))``."""
    try:
        return "ok", normal(fn())
    except grpc.RpcError as e:
        return "error", (e.code().name, e.details())


# -- the generator ------------------------------------------------------------------------


class Gen:
    """Random etcd requests over a small key space (seeded)."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.rev = 1  # the highest revision seen, to aim revisions near it
        self.compact = 0  # the last compaction both took

    def key(self) -> bytes:
        return self.r.choice(KEYS)

    def range_end(self, key: bytes, to_end: bool = True) -> bytes:
        c = self.r.random()
        if c < 0.4:
            return b""
        if c < 0.55 and to_end:
            return b"\0"
        if c < 0.65:
            return key  # empty range
        return self.r.choice(KEYS + [b"z"])

    def revision(self) -> int:
        c = self.r.random()
        if c < 0.5:
            return 0
        return self.r.randint(max(self.rev - 6, -1), self.rev + 1)

    def lease(self) -> int:
        return self.r.choice([0, 0, 0, *LEASE_IDS])

    def put(self) -> pb.PutRequest:
        r = self.r
        iv, il = r.random() < 0.12, r.random() < 0.12
        return pb.PutRequest(
            key=self.key(), value=b"" if iv and r.random() < 0.8 else r.choice(VALUES),
            lease=0 if il and r.random() < 0.8 else self.lease(),
            prev_kv=r.random() < 0.5, ignore_value=iv, ignore_lease=il,
        )  # fmt: skip

    def range(self, in_txn: bool = False) -> pb.RangeRequest:
        """A range with every option; in a txn, no ``limit`` (liferaft's
        ``count`` there is what it read, documented)."""
        r = self.r
        key = self.key()

        def rev_filter() -> int:
            return 0 if r.random() < 0.8 else r.randint(1, self.rev + 1)

        return pb.RangeRequest(
            key=key, range_end=self.range_end(key),
            limit=0 if in_txn else r.choice([0, 0, 1, 2, 3, -1]),
            revision=self.revision(), sort_order=r.choice([0, 0, 1, 2]),
            sort_target=r.choice([0, 0, 1, 2, 3, 4]), serializable=r.random() < 0.3,
            keys_only=r.random() < 0.15, count_only=r.random() < 0.1,
            min_mod_revision=rev_filter(), max_mod_revision=rev_filter(),
            min_create_revision=rev_filter(), max_create_revision=rev_filter(),
        )  # fmt: skip

    def delete(self, in_txn: bool = False) -> pb.DeleteRangeRequest:
        """A delete; in a txn, none to the end (``"\\0"``): etcd 3.4's
        duplicate-key check misses the keys it holds, liferaft's does not
        (documented)."""
        key = self.key()
        return pb.DeleteRangeRequest(
            key=key, range_end=self.range_end(key, to_end=not in_txn),
            prev_kv=self.r.random() < 0.5,
        )  # fmt: skip

    def compare(self) -> pb.Compare:
        r = self.r
        key = self.key()
        c = pb.Compare(
            key=key, result=r.choice([0, 1, 2, 3]), target=r.choice([0, 1, 2, 3, 4]),
            range_end=self.range_end(key) if r.random() < 0.25 else b"",
        )  # fmt: skip
        field = ["version", "create_revision", "mod_revision", "value", "lease"][c.target]
        if field == "value":
            c.value = r.choice(VALUES)
        elif field == "lease":
            c.lease = self.lease()
        else:
            setattr(c, field, r.randint(0, self.rev + 1))
        return c

    def request_op(self, depth: int) -> pb.RequestOp:
        c = self.r.random()
        if c < 0.4:
            return pb.RequestOp(request_put=self.put())
        if c < 0.65:
            return pb.RequestOp(request_range=self.range(in_txn=True))
        if c < 0.85 or depth >= 2:
            return pb.RequestOp(request_delete_range=self.delete(in_txn=True))
        return pb.RequestOp(request_txn=self.txn(depth + 1))

    def txn(self, depth: int = 0) -> pb.TxnRequest:
        r = self.r
        return pb.TxnRequest(
            compare=[self.compare() for _ in range(r.randint(0, 3))],
            success=[self.request_op(depth) for _ in range(r.randint(0, 3))],
            failure=[self.request_op(depth) for _ in range(r.randint(0, 2))],
        )

    def watch_start(self) -> int:
        """A start revision, never the compaction's own: etcd replays from
        it, liferaft's history starts one above (documented)."""
        start = self.r.randint(1, self.rev)
        return start + 1 if start == self.compact else start

    def watch(self) -> pb.WatchCreateRequest:
        r = self.r
        key = self.key()
        return pb.WatchCreateRequest(
            key=key, range_end=self.range_end(key) if r.random() < 0.7 else b"\0",
            start_revision=self.watch_start(), prev_kv=r.random() < 0.5,
            filters=r.sample([0, 1], r.randint(0, 1)),
        )  # fmt: skip


def step(g: Gen) -> tuple[str, str, Message] | None:
    """One random call: (stub, method, request); None for a step the
    caller runs itself (a watch)."""
    r, rnd = g.r.random(), g.r
    if r < 0.25:
        return "kv", "Put", g.put()
    if r < 0.5:
        return "kv", "Range", g.range()
    if r < 0.6:
        return "kv", "DeleteRange", g.delete()
    if r < 0.8:
        return "kv", "Txn", g.txn()
    if r < 0.84:
        rev = rnd.randint(max(g.rev - 8, 0), g.rev + 1)
        return "kv", "Compact", pb.CompactionRequest(revision=rev)
    lease = rnd.choice(LEASE_IDS)
    if r < 0.89:
        return "lease", "LeaseGrant", pb.LeaseGrantRequest(ID=lease, TTL=rnd.randint(300, 600))
    if r < 0.92:
        return "lease", "LeaseRevoke", pb.LeaseRevokeRequest(ID=rnd.choice([lease, 999]))
    if r < 0.95:
        ttl = pb.LeaseTimeToLiveRequest(ID=lease, keys=rnd.random() < 0.7)
        return "lease", "LeaseTimeToLive", ttl
    if r < 0.97:
        return "lease", "LeaseLeases", pb.LeaseLeasesRequest()
    return None


def call(s: Stubs, stub: str, method: str, req: Message) -> tuple[str, Any]:
    """``req`` sent to ``s``: :func:`outcome` of it."""
    return outcome(lambda: getattr(getattr(s, stub), method)(req, timeout=10))


def watch_sentinel(create: pb.WatchCreateRequest) -> list[pb.RequestOp]:
    """Writes that end a watch's replay, sent to both systems alike: a put of
    the watched key, and a delete of it too when the watch drops puts."""
    ops = [pb.RequestOp(request_put=pb.PutRequest(key=create.key, value=b"w"))]
    if pb.WatchCreateRequest.NOPUT in create.filters:
        ops.append(pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=create.key)))
    return ops


def watch_outcome(s: Stubs, create: pb.WatchCreateRequest) -> dict[str, Any]:
    """What a watch from ``create.start_revision`` reports: its control
    answers (created, canceled, compact_revision, reason) and every event it
    delivers up to the sentinel writes (:func:`watch_sentinel`, made here
    once the watch exists).  How events are grouped into responses, and
    those responses' header revisions, depend on timing (etcd syncs a
    replaying watcher every 100 ms) and are left out."""
    done = False
    control: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    end = 0

    def requests() -> Iterator[pb.WatchRequest]:
        yield pb.WatchRequest(create_request=create)
        while not done:
            time.sleep(0.02)

    stream = s.watch.Watch(requests(), timeout=10)
    try:
        for resp in stream:
            if resp.events:
                events += normal(resp)["events"]
                if resp.events[-1].kv.mod_revision >= end:
                    break
                continue
            control.append(normal(resp))
            if resp.canceled:
                break
            if resp.created:
                for op in watch_sentinel(create):
                    if op.HasField("request_put"):
                        end = s.kv.Put(op.request_put, timeout=10).header.revision
                    else:
                        end = s.kv.DeleteRange(op.request_delete_range, timeout=10).header.revision
    finally:
        done = True
        stream.cancel()
    return {"control": control, "events": events}


def as_liferaft(etcd: Any) -> Any:
    """etcd's answer as liferaft-kv gives it where docs/etcd.md says they
    differ: a watch canceled for compaction names the first revision it may
    start at (etcd: the compaction's, one below)."""
    if isinstance(etcd, dict) and "control" in etcd:
        control = []
        for c in etcd["control"]:
            if "compact_revision" in c:
                c = {**c, "compact_revision": str(int(c["compact_revision"]) + 1)}
            control.append(c)
        return {**etcd, "control": control}
    return etcd


def run(
    seed: int, steps: int, etcd: Stubs, lr: Stubs, gen: Gen | None = None
) -> Iterator[tuple[int, Message, Any, Any]]:
    """The seeded sequence on both; yields ``(step, request, etcd's answer,
    liferaft's)`` for every step (a watch: :func:`watch_outcome`), with
    etcd's answer already in liferaft's documented form (:func:`as_liferaft`)."""
    g = gen or Gen(seed)
    a: Any
    b: Any
    for i in range(steps):
        if g.r.random() < 0.06:
            req: Message = g.watch()
            a, b = as_liferaft(watch_outcome(etcd, req)), watch_outcome(lr, req)
        else:
            st = step(g)
            if st is None:
                continue
            req = st[2]
            a, b = call(etcd, *st), call(lr, *st)
            if a[0] == "ok":
                g.rev = max(g.rev, int(a[1].get("header", {}).get("revision", 0)))
                if isinstance(req, pb.CompactionRequest):
                    g.compact = req.revision
        yield i, req, a, b
