"""The KV service without HTTP (liferaft/kv/service.py): typed results, and
typed errors that carry what a client may do (``retry_safe``,
``outcome_unknown``) as data, so every front end answers alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from liferaft.kv.errors import (
    KVBadRequestError,
    KVConflictError,
    KVError,
    KVNotFoundError,
    KVOutcomeUnknownError,
    KVPreconditionFailedError,
    KVTooLargeError,
    KVUnavailableError,
)
from liferaft.kv.machine import KVMachine
from liferaft.kv.mvcc.ops import LeaseExistsError, LeaseNotFoundError
from liferaft.kv.requests import Item, KeySpan
from liferaft.kv.server import http_status
from liferaft.kv.service import (
    DeleteRequest,
    KVService,
    PutRequest,
    RangeRequest,
    node_error,
    session_ref,
)
from liferaft.runtime import (
    BadConfigError,
    BadMemberError,
    DroppedError,
    MembershipError,
    NodeError,
    NodeTimeoutError,
    NotLeaderError,
    StoppedError,
    StorageFailedError,
)
from tests.runtime.cluster import TcpCluster


@pytest.mark.parametrize(
    "exc,cls,code,status",
    [
        (NotLeaderError("x"), KVUnavailableError, "no_leader", 503),
        (StoppedError("x"), KVUnavailableError, "no_leader", 503),
        (DroppedError("x"), KVUnavailableError, "no_leader", 503),
        (StorageFailedError("x"), KVUnavailableError, "storage_failed", 503),
        (NodeTimeoutError("x"), KVOutcomeUnknownError, "timeout", 504),
        (MembershipError("x"), KVConflictError, "conflict", 409),
        (BadMemberError("x"), KVBadRequestError, "bad_request", 400),
        (BadConfigError("x"), KVBadRequestError, "bad_request", 400),
    ],
)
def test_runtime_errors_map_to_typed_service_errors(
    exc: NodeError, cls: type[KVError], code: str, status: int
) -> None:
    err = node_error(exc)
    assert type(err) is cls and err.code == code and http_status(err) == status
    assert err.retry_safe == (status == 503) and err.outcome_unknown == (status == 504)


def test_every_error_class_has_its_status() -> None:
    cases = [
        (KVBadRequestError("x"), 400, "bad_request"),
        (KVNotFoundError("x"), 404, "not_found"),
        (KVConflictError("seq_reused", "x"), 409, "seq_reused"),
        (KVPreconditionFailedError(Item("k", "v", 3, 2, 1)), 412, "precondition_failed"),
        (KVTooLargeError("x"), 413, "too_large"),
        (KVOutcomeUnknownError("session_expired", "x"), 504, "session_expired"),
        (LeaseNotFoundError(5), 404, "lease_not_found"),  # as the forwarded one is
        (LeaseExistsError(5), 409, "lease_exists"),
    ]
    for err, status, code in cases:
        assert (http_status(err), err.code) == (status, code)
    current = Item("k", "v", 3, 2, 1)
    assert KVPreconditionFailedError(current).extra == {"current": {"value": "v", "revision": 3}}
    assert KVPreconditionFailedError(None).extra == {"current": None}


@pytest.mark.parametrize(
    "fields", [(1, None, None), (None, 1, 1), (0, 1, 1), (1, 1, 2), (1, 0, 0), (1, 2**63, 1)]
)
def test_session_fields_come_together_and_in_range(fields: tuple[int | None, ...]) -> None:
    with pytest.raises(KVBadRequestError):
        session_ref(*fields)
    assert session_ref(None, None, None) is None
    assert session_ref(7, 3, 2) is not None


@pytest.fixture
async def svc(tmp_path: Path) -> AsyncIterator[KVService]:
    c = TcpCluster(tmp_path, 1, sm_at=KVMachine)
    await c.start()
    s = KVService(c.nodes["n1"], c.sms["n1"], client_addr="127.0.0.1:1", max_value=10)
    try:
        await c.leader()
        yield s
    finally:
        await s.close()
        await c.stop()


async def test_keys_through_the_service(svc: KVService) -> None:
    w = await svc.put(PutRequest(key="a", value="1"))
    assert w.prev is None
    w2 = await svc.put(PutRequest(key="a", value="2", if_revision=w.revision))
    assert w2.prev is not None and (w2.prev.value, w2.prev.revision) == ("1", w.revision)
    item = await svc.get("a")
    assert (item.key, item.value, item.revision) == ("a", "2", w2.revision)
    await svc.put(PutRequest(key="b", value="3"))
    page = await svc.range(RangeRequest(span=KeySpan(prefix=""), limit=1))
    assert [i.key for i in page.items] == ["a"] and page.next == "b"
    with pytest.raises(KVPreconditionFailedError) as e:
        await svc.put(PutRequest(key="a", value="x", if_value="nope"))
    assert e.value.extra["current"] == {"value": "2", "revision": w2.revision}
    await svc.delete(DeleteRequest(key="a"))
    with pytest.raises(KVNotFoundError):
        await svc.get("a", "stale")
    with pytest.raises(KVNotFoundError):
        await svc.delete(DeleteRequest(key="a"))
    sid = await svc.open_session()
    ref = session_ref(sid, 1, 1)
    first = await svc.put(PutRequest(key="s", value="v", session=ref))
    assert await svc.put(PutRequest(key="s", value="v", session=ref)) == first  # a retry
    with pytest.raises(KVConflictError) as c:
        await svc.put(PutRequest(key="s", value="other", session=ref))
    assert c.value.code == "seq_reused"


async def test_bad_input_is_refused_before_anything_is_proposed(svc: KVService) -> None:
    before = svc.node.status().last_log_index
    for call in (
        lambda: svc.put(PutRequest(key="", value="v")),
        lambda: svc.put(PutRequest(key="k" * 5000, value="v")),
        lambda: svc.put(PutRequest(key="k", value="v", if_revision=-1)),
        lambda: svc.delete(DeleteRequest(key="k", if_revision=2**64)),
        lambda: svc.get("k", "eventual"),
        lambda: svc.range(RangeRequest(span=KeySpan(prefix=""), limit=-1)),
        lambda: svc.range(RangeRequest(span=KeySpan(key="a", prefix="b"))),
        lambda: svc.range(RangeRequest(span=KeySpan(start="b", end="a"))),
        lambda: svc.get("k", revision=-1),
    ):
        with pytest.raises(KVBadRequestError):
            await call()
    with pytest.raises(KVTooLargeError):
        await svc.put(PutRequest(key="k", value="x" * 11))
    assert svc.node.status().last_log_index == before


async def test_status_and_members_read_the_one_address_book(svc: KVService) -> None:
    await svc.start()
    node = svc.node
    for _ in range(200):
        if node.members["n1"].get("client_addr"):
            break
        await node.clock.sleep(0.02)
    st = svc.status()
    assert st.leader == "n1" and st.leader_client_addr == "127.0.0.1:1"
    assert [(m.id, m.client_addr, m.voter) for m in svc.members()] == [("n1", "127.0.0.1:1", True)]
    assert svc.readiness() is None
    with pytest.raises(KVNotFoundError):
        await svc.remove_member("n9")
