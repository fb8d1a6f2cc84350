"""etcd's auth against a 3-node liferaft-kv started with ``--token-file``
(docs/etcd.md, "Auth"): ``etcdctl --user root:TOKEN`` on every Maintenance
command, etcd's answers to a missing or wrong password or token, the
gateway's token, and the native /v1 API keeping its own Bearer token."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import aetcd
import grpc
import pytest

from liferaft.etcd import errors
from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.etcd.proto import rpc_pb2_grpc
from liferaft.etcd.version import ETCD_VERSION
from tests.etcd.etcdctl import Etcdctl
from tests.etcd.maint_util import member_id, move_leader, restored_values, settled_status
from tests.kv.procs import ProcCluster, http, kv_path, proc_cluster

TOKEN = "t-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    root: Path = tmp_path_factory.mktemp("etcd-auth")
    with proc_cluster(root, grpc=True, token=TOKEN) as c:
        c.start_cluster(3)
        c.wait_leader()
        yield c


def _ctl(etcdctl: str, c: ProcCluster, user: str | None = f"root:{TOKEN}") -> Etcdctl:
    return Etcdctl(etcdctl, [n.grpc for n in c.nodes.values()], user=user)


def test_etcdctl_with_the_token_runs_every_maintenance_command(
    etcdctl: str, token_cluster: ProcCluster, tmp_path: Path
) -> None:
    c = token_cluster
    ctl = _ctl(etcdctl, c)
    assert ctl.ok("put", "auth/k", "v").strip() == "OK"
    leader, status = settled_status(ctl, c)
    assert {s["header"]["member_id"] for s in status.values()} == {member_id(n) for n in c.nodes}
    r = ctl.run("endpoint", "health")
    assert r.returncode == 0 and r.stderr.count(" is healthy: ") == 3, r.stderr
    one = Etcdctl(etcdctl, [c.nodes[leader].grpc], user=ctl.user)
    path = tmp_path / "auth.db"
    assert one.ok("snapshot", "save", str(path)).strip() == f"Snapshot saved at {path}"
    assert restored_values(path, tmp_path / "r", [b"auth/k"]) == {b"auth/k": b"v"}
    move_leader(ctl, c, next(n for n in c.nodes if n != leader))


@pytest.mark.parametrize(
    ("user", "message"),
    [
        (None, errors.USER_EMPTY.message),
        ("root:wrong", errors.AUTH_FAILED.message),
        ("bob:TOKEN", errors.AUTH_FAILED.message),  # the right password, another user
    ],
)
def test_etcdctl_without_the_token_gets_etcds_errors(
    etcdctl: str, token_cluster: ProcCluster, user: str | None, message: str, tmp_path: Path
) -> None:
    if user is not None:
        user = user.replace("TOKEN", TOKEN)  # ids stay stable across xdist workers
    ctl = _ctl(etcdctl, token_cluster, user)
    one = Etcdctl(etcdctl, ctl.endpoints[:1], user=user)  # snapshot save takes one
    for c, cmd in [(ctl, ["get", "auth/k"]), (ctl, ["endpoint", "status"]),
                   (one, ["snapshot", "save", str(tmp_path / "no.db")])]:  # fmt: skip
        r = c.run(*cmd)
        assert r.returncode != 0 and message in r.stderr, (cmd, r.stderr)
    assert not (tmp_path / "no.db").exists()


def test_grpc_tokens_are_checked_as_etcd(token_cluster: ProcCluster) -> None:
    """A token it never gave is "invalid auth token" (etcd's clients then
    authenticate again); etcd's ``authorization`` key works as ``token``;
    every call but Authenticate needs one."""
    node = next(iter(token_cluster.nodes.values()))

    async def run() -> dict[str, object]:
        out: dict[str, object] = {}
        async with grpc.aio.insecure_channel(node.grpc) as ch:
            auth = rpc_pb2_grpc.AuthStub(ch)
            maint = rpc_pb2_grpc.MaintenanceStub(ch)
            kv = rpc_pb2_grpc.KVStub(ch)
            got = await auth.Authenticate(pb.AuthenticateRequest(name="root", password=TOKEN))
            token = got.token
            assert TOKEN not in token
            for name, md in [("bogus", (("token", "liferaft.0"),)), ("none", ())]:
                for call, req in [(maint.Status, pb.StatusRequest()),
                                  (kv.Range, pb.RangeRequest(key=b"k")),
                                  (maint.HashKV, pb.HashKVRequest())]:  # fmt: skip
                    with pytest.raises(grpc.aio.AioRpcError) as e:
                        await call(req, metadata=md, timeout=10)
                    out[f"{name} {call._method!r}"] = (e.value.code(), e.value.details())
            st = await maint.Status(pb.StatusRequest(), metadata=(("authorization", token),))
            out["authorization"] = st.version
        return out

    got = asyncio.run(run())
    assert got.pop("authorization") == ETCD_VERSION
    bogus = {(grpc.StatusCode.UNAUTHENTICATED, errors.INVALID_AUTH_TOKEN.message)}
    empty = {(grpc.StatusCode.INVALID_ARGUMENT, errors.USER_EMPTY.message)}
    assert {v for k, v in got.items() if k.startswith("bogus")} == bogus
    assert {v for k, v in got.items() if k.startswith("none")} == empty
    assert len(got) == 6


def test_the_gateway_takes_etcds_token_and_v1_keeps_its_own(token_cluster: ProcCluster) -> None:
    node = next(iter(token_cluster.nodes.values()))
    addr = node.client
    code, body = http(addr, "POST", "/v3/auth/authenticate", {"name": "root", "password": "x"})
    assert code == 400 and body["message"] == errors.AUTH_FAILED.message
    code, body = http(addr, "POST", "/v3/auth/authenticate", {"name": "root", "password": TOKEN})
    assert code == 200
    token = body["token"]
    put = {"key": "Z3cvaw==", "value": "dg=="}  # gw/k = v
    code, body = http(addr, "POST", "/v3/kv/put", put)
    assert code == 400 and body["message"] == errors.USER_EMPTY.message
    code, body = http(addr, "POST", "/v3/kv/put", put, headers={"Authorization": "nope"})
    assert code == 401 and body["message"] == errors.INVALID_AUTH_TOKEN.message
    code, _ = http(addr, "POST", "/v3/kv/put", put, headers={"Authorization": token})
    assert code == 200
    code, body = http(addr, "POST", "/v3/maintenance/status", {}, token=TOKEN)  # Bearer
    assert code == 200 and body["version"] == ETCD_VERSION
    # The etcd token opens nothing of the native API; its Bearer token does.
    code, _ = http(addr, "GET", kv_path("gw/k"), headers={"Authorization": token})
    assert code == 401
    code, _ = http(addr, "GET", kv_path("gw/k"), token=token)
    assert code == 401
    code, body = http(addr, "GET", kv_path("gw/k"), token=TOKEN)
    assert code == 200 and body["value"] == "v"
    # /version is open, as etcd's.
    code, body = http(addr, "GET", "/version")
    assert code == 200 and body["etcdserver"] == ETCD_VERSION


def test_aetcd_with_username_and_password(token_cluster: ProcCluster, tmp_path: Path) -> None:
    node = next(iter(token_cluster.nodes.values()))
    host, port = node.grpc.rsplit(":", 1)
    path = tmp_path / "aetcd.snapshot"

    async def run() -> int:
        async with aetcd.Client(
            host=host, port=int(port), username="root", password=TOKEN, timeout=20
        ) as client:
            await client.put(b"auth/aetcd", b"yes")
            st = await client.maintenancestub.Status(
                aetcd.rpc.StatusRequest(), metadata=client.metadata, timeout=10
            )
            with open(path, "wb") as f:
                await client.snapshot(f)
            return int(st.raftTerm)

    assert asyncio.run(run()) >= 1
    assert restored_values(path, tmp_path / "r", [b"auth/aetcd"]) == {b"auth/aetcd": b"yes"}
