"""etcd 3.4's wire format (liferaft/etcd/proto/, docs/etcd.md).

The compatibility is in the bytes: a wrong field number or type still
round-trips through our own modules, so the spot checks compare with bytes
built by hand from etcd 3.4's field numbers, independently of protobuf.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from liferaft.etcd.proto import kv_pb2, rpc_pb2, rpc_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "liferaft" / "etcd" / "proto"
GENERATED = ("kv_pb2.py", "kv_pb2.pyi", "rpc_pb2.py", "rpc_pb2.pyi", "rpc_pb2_grpc.py")


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64s go out as ten-byte two's complement
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _int(field: int, n: int) -> bytes:
    """A varint field (int64, uint64, uint32, bool, enum): wire type 0."""
    return _varint(field << 3) + _varint(n)


def _len(field: int, data: bytes) -> bytes:
    """A length-delimited field (bytes, string, message): wire type 2."""
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def test_put_request_bytes() -> None:
    got = rpc_pb2.PutRequest(
        key=b"k", value=b"v", lease=7, prev_kv=True, ignore_value=True, ignore_lease=True
    ).SerializeToString()
    assert got == _len(1, b"k") + _len(2, b"v") + _int(3, 7) + _int(4, 1) + _int(5, 1) + _int(6, 1)


def test_range_request_bytes_and_sort_enums() -> None:
    req = rpc_pb2.RangeRequest(
        key=b"a",
        range_end=b"b",
        limit=3,
        revision=9,
        sort_order=rpc_pb2.RangeRequest.DESCEND,
        sort_target=rpc_pb2.RangeRequest.MOD,
        serializable=True,
        keys_only=True,
        count_only=True,
        min_mod_revision=10,
        max_mod_revision=11,
        min_create_revision=12,
        max_create_revision=13,
    )
    want = (
        _len(1, b"a")
        + _len(2, b"b")
        + _int(3, 3)
        + _int(4, 9)
        + _int(5, 2)
        + _int(6, 3)
        + _int(7, 1)
        + _int(8, 1)
        + _int(9, 1)
        + _int(10, 10)
        + _int(11, 11)
        + _int(12, 12)
        + _int(13, 13)
    )
    assert req.SerializeToString() == want
    order, target = rpc_pb2.RangeRequest.SortOrder, rpc_pb2.RangeRequest.SortTarget
    assert [order.Value(n) for n in ("NONE", "ASCEND", "DESCEND")] == [0, 1, 2]
    targets = ("KEY", "VERSION", "CREATE", "MOD", "VALUE")
    assert [target.Value(n) for n in targets] == [0, 1, 2, 3, 4]


def test_response_header_fields_and_uint64_ids() -> None:
    top = (1 << 64) - 1  # cluster and member ids use the whole uint64 range
    header = rpc_pb2.ResponseHeader(cluster_id=top, member_id=2, revision=-1, raft_term=4)
    want = _int(1, top) + _int(2, 2) + _int(3, -1) + _int(4, 4)
    assert header.SerializeToString() == want
    body = rpc_pb2.PutResponse(header=header).SerializeToString()
    assert body == _len(1, want)


def test_key_value_and_event_bytes() -> None:
    kv = kv_pb2.KeyValue(
        key=b"k", create_revision=2, mod_revision=3, version=4, value=b"v", lease=6
    )
    kv_bytes = _len(1, b"k") + _int(2, 2) + _int(3, 3) + _int(4, 4) + _len(5, b"v") + _int(6, 6)
    assert kv.SerializeToString() == kv_bytes
    event = kv_pb2.Event(type=kv_pb2.Event.DELETE, kv=kv, prev_kv=kv)
    assert event.SerializeToString() == _int(1, 1) + _len(2, kv_bytes) + _len(3, kv_bytes)
    # events is field 11 of WatchResponse, after a gap
    resp = rpc_pb2.WatchResponse(
        watch_id=5,
        created=True,
        canceled=True,
        compact_revision=8,
        cancel_reason="x",
        fragment=True,
        events=[event],
    )
    assert resp.SerializeToString() == (
        _int(2, 5)
        + _int(3, 1)
        + _int(4, 1)
        + _int(5, 8)
        + _len(6, b"x")
        + _int(7, 1)
        + _len(11, event.SerializeToString())
    )


def test_watch_request_oneof_numbers() -> None:
    create = rpc_pb2.WatchCreateRequest(
        key=b"k",
        range_end=b"l",
        start_revision=3,
        progress_notify=True,
        filters=[rpc_pb2.WatchCreateRequest.NODELETE],
        prev_kv=True,
        watch_id=7,
        fragment=True,
    )
    # filters is a packed repeated enum (proto3's default, as in etcd)
    inner = (
        _len(1, b"k")
        + _len(2, b"l")
        + _int(3, 3)
        + _int(4, 1)
        + _len(5, _varint(1))
        + _int(6, 1)
        + _int(7, 7)
        + _int(8, 1)
    )
    assert rpc_pb2.WatchRequest(create_request=create).SerializeToString() == _len(1, inner)
    cancel = rpc_pb2.WatchRequest(cancel_request=rpc_pb2.WatchCancelRequest(watch_id=4))
    assert cancel.SerializeToString() == _len(2, _int(1, 4))
    progress = rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest())
    assert progress.SerializeToString() == _len(3, b"")


def test_txn_compare_and_nested_ops() -> None:
    cmp = rpc_pb2.Compare(
        result=rpc_pb2.Compare.NOT_EQUAL,
        target=rpc_pb2.Compare.LEASE,
        key=b"k",
        lease=5,
        range_end=b"z",
    )
    cmp_bytes = _int(1, 3) + _int(2, 4) + _len(3, b"k") + _int(8, 5) + _len(64, b"z")
    assert cmp.SerializeToString() == cmp_bytes
    for field, kw, value in ((4, "version", 1), (5, "create_revision", 2), (6, "mod_revision", 3)):
        assert rpc_pb2.Compare(**{kw: value}).SerializeToString() == _int(field, value)
    assert rpc_pb2.Compare(value=b"v").SerializeToString() == _len(7, b"v")
    put = rpc_pb2.PutRequest(key=b"p")
    inner = rpc_pb2.TxnRequest(
        failure=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"d"))]
    )
    txn = rpc_pb2.TxnRequest(
        compare=[cmp],
        success=[
            rpc_pb2.RequestOp(request_put=put),
            rpc_pb2.RequestOp(request_txn=inner),
            rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"r")),
        ],
    )
    inner_bytes = _len(3, _len(3, _len(1, b"d")))
    assert txn.SerializeToString() == (
        _len(1, cmp_bytes)
        + _len(2, _len(2, _len(1, b"p")))
        + _len(2, _len(4, inner_bytes))
        + _len(2, _len(1, _len(1, b"r")))
    )


def test_lease_cluster_and_maintenance_bytes() -> None:
    assert rpc_pb2.LeaseGrantRequest(TTL=5, ID=9).SerializeToString() == _int(1, 5) + _int(2, 9)
    ttl = rpc_pb2.LeaseTimeToLiveResponse(ID=1, TTL=2, grantedTTL=3, keys=[b"a"])
    assert ttl.SerializeToString() == _int(2, 1) + _int(3, 2) + _int(4, 3) + _len(5, b"a")
    member = rpc_pb2.Member(ID=1, name="n1", peerURLs=["p"], clientURLs=["c"], isLearner=True)
    member_bytes = _int(1, 1) + _len(2, b"n1") + _len(3, b"p") + _len(4, b"c") + _int(5, 1)
    assert member.SerializeToString() == member_bytes
    add = rpc_pb2.MemberAddResponse(member=member, members=[member])
    assert add.SerializeToString() == _len(2, member_bytes) + _len(3, member_bytes)
    status = rpc_pb2.StatusResponse(
        version="3.4.0",
        dbSize=3,
        leader=4,
        raftIndex=5,
        raftTerm=6,
        raftAppliedIndex=7,
        errors=["e"],
        dbSizeInUse=9,
        isLearner=True,
    )
    assert status.SerializeToString() == (
        _len(2, b"3.4.0")
        + _int(3, 3)
        + _int(4, 4)
        + _int(5, 5)
        + _int(6, 6)
        + _int(7, 7)
        + _len(8, b"e")
        + _int(9, 9)
        + _int(10, 1)
    )
    assert rpc_pb2.SnapshotResponse(remaining_bytes=2, blob=b"x").SerializeToString() == (
        _int(2, 2) + _len(3, b"x")
    )
    assert rpc_pb2.HashKVResponse(hash=(1 << 32) - 1, compact_revision=3).SerializeToString() == (
        _int(2, (1 << 32) - 1) + _int(3, 3)
    )
    assert rpc_pb2.AlarmRequest(
        action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=2, alarm=rpc_pb2.CORRUPT
    ).SerializeToString() == (_int(1, 2) + _int(2, 2) + _int(3, 2))
    assert rpc_pb2.MoveLeaderRequest(targetID=8).SerializeToString() == _int(1, 8)
    auth = rpc_pb2.AuthenticateRequest(name="root", password="t")
    assert auth.SerializeToString() == _len(1, b"root") + _len(2, b"t")


def _messages() -> list[type]:
    out: list[type] = []
    for module in (kv_pb2, rpc_pb2):
        for name in module.DESCRIPTOR.message_types_by_name:
            out.append(getattr(module, name))
    return out


def test_every_message_round_trips() -> None:
    """Each message, with every scalar field set, comes back equal from its
    bytes (a field that cannot hold its value would not)."""
    messages = _messages()
    assert len(messages) >= 50  # the subset in docs/etcd.md, not an empty file
    for cls in messages:
        msg = cls()
        for field in cls.DESCRIPTOR.fields:
            if field.containing_oneof is not None or field.message_type is not None:
                continue
            value: object
            if field.enum_type is not None:
                value = field.enum_type.values[-1].number
            elif field.type in (field.TYPE_BYTES,):
                value = b"\x00\xff"
            elif field.type == field.TYPE_STRING:
                value = "é"
            elif field.type == field.TYPE_BOOL:
                value = True
            else:
                value = 2**31 - 1
            if field.is_repeated:
                getattr(msg, field.name).append(value)
            else:
                setattr(msg, field.name, value)
        assert cls.FromString(msg.SerializeToString()) == msg, cls.__name__


# Every call of issue 16's table, as its gRPC path and (request, response)
# streaming: the path is what a client sends, so a typo in a service or
# package name would make every client get UNIMPLEMENTED.
CALLS = {
    "KV": {"Range": "uu", "Put": "uu", "DeleteRange": "uu", "Txn": "uu", "Compact": "uu"},
    "Watch": {"Watch": "ss"},
    "Lease": {
        "LeaseGrant": "uu",
        "LeaseRevoke": "uu",
        "LeaseKeepAlive": "ss",
        "LeaseTimeToLive": "uu",
        "LeaseLeases": "uu",
    },
    "Cluster": {"MemberList": "uu", "MemberAdd": "uu", "MemberRemove": "uu", "MemberPromote": "uu"},
    "Maintenance": {
        "Status": "uu",
        "Alarm": "uu",
        "Snapshot": "us",
        "MoveLeader": "uu",
        "HashKV": "uu",
    },
    "Auth": {"Authenticate": "uu"},
}


def test_service_method_paths() -> None:
    services = rpc_pb2.DESCRIPTOR.services_by_name
    assert set(services) == set(CALLS)
    for service, calls in CALLS.items():
        desc = services[service]
        assert desc.full_name == f"etcdserverpb.{service}"
        assert {
            m.name: ("s" if m.client_streaming else "u") + ("s" if m.server_streaming else "u")
            for m in desc.methods
        } == calls
        assert hasattr(rpc_pb2_grpc, f"{service}Stub")
        assert hasattr(rpc_pb2_grpc, f"add_{service}Servicer_to_server")
    source = (PROTO / "rpc_pb2_grpc.py").read_text()
    for service, calls in CALLS.items():
        for call in calls:
            assert f"'/etcdserverpb.{service}/{call}'" in source


def test_a_clashing_etcdserverpb_in_the_default_pool_does_no_harm() -> None:
    """An etcd client library in the same process registers its own
    etcdserverpb and mvccpb in protobuf's default pool; ours must still
    import and work (scripts/gen-proto.sh moves ours to a private pool)."""
    code = """
from google.protobuf import descriptor_pb2, descriptor_pool
f = descriptor_pb2.FileDescriptorProto(name="etcd/rpc.proto", package="etcdserverpb",
                                       syntax="proto3")
m = f.message_type.add(name="PutRequest")
m.field.add(name="key", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
descriptor_pool.Default().Add(f)
from liferaft.etcd.proto import rpc_pb2
assert rpc_pb2.PutRequest(key=b"k").SerializeToString() == b"\\n\\x01k"
print("ok")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_committed_modules_are_what_gen_proto_makes(tmp_path: Path) -> None:
    pinned = "1.85.4"  # scripts/gen-proto.sh's TOOLS and pyproject's dev extra
    try:
        have = importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("grpcio-tools is not installed (the dev extra pins it)")
    if have != pinned:
        pytest.skip(f"grpcio-tools {have} installed; the committed files come from {pinned}")
    script = (ROOT / "scripts" / "gen-proto.sh").read_text()
    assert f"TOOLS={pinned}\n" in script
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-proto.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(GENERATED)
    stale = [
        name for name in GENERATED if (tmp_path / name).read_bytes() != (PROTO / name).read_bytes()
    ]
    assert not stale, f"run scripts/gen-proto.sh (make proto) and commit: {stale} differ"
