"""Status calls (liferaft/runtime/peer_status.py): a member asks another for
its own state over the peer RPC; strangers are refused, an older build's
refusal and a bad application hook come back as errors, not crashes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from liferaft.runtime import NodeTimeoutError, PeerUnreachableError, UnknownCallError, peer_rpc
from liferaft.runtime.peer_status import MAX_EXTRA
from liferaft.transport.base import CallError
from tests.runtime.cluster import MemCluster


@pytest.fixture
async def cluster() -> AsyncIterator[MemCluster]:
    c = MemCluster(3)
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


async def test_each_member_answers_with_its_own_state(cluster: MemCluster) -> None:
    c = cluster
    ld = await c.leader()
    f = next(n for n in c.nodes.values() if n is not ld)
    f.on_status(lambda: {"reads": 7})
    got = await c.drive(ld.peer_status(f.id, 1.0))
    st = f.status()
    assert got["role"] == "follower" and got["leader"] == ld.id and got["term"] == st.term
    assert got["commit_index"] == st.commit_index and got["storage_ok"] is True
    assert got["extra"] == {"reads": 7}
    # A follower asks the leader: answered by the leader itself (not routed).
    back = await c.drive(f.peer_status(ld.id, 1.0))
    assert back["role"] == "leader" and back["extra"] == {}
    # Its own state needs no call.
    assert (await ld.peer_status(ld.id))["role"] == "leader"


async def test_a_bad_hook_is_an_error_in_the_answer_not_a_down_member(
    cluster: MemCluster,
) -> None:
    c = cluster
    ld = await c.leader()
    f = next(n for n in c.nodes.values() if n is not ld)

    def boom() -> dict[str, Any]:
        raise KeyError("x")

    f.on_status(boom)
    got = await c.drive(ld.peer_status(f.id, 1.0))
    assert got["role"] == "follower" and "KeyError" in got["extra"]["extra_error"]
    f.on_status(lambda: {"big": "x" * (MAX_EXTRA + 1)})
    got = await c.drive(ld.peer_status(f.id, 1.0))
    assert "at most" in got["extra"]["extra_error"] and "big" not in got["extra"]


async def test_a_stranger_is_refused(cluster: MemCluster) -> None:
    c = cluster
    ld = await c.leader()
    stranger = c.make("x9", initial=False)
    await stranger.start()
    req = peer_rpc.encode(peer_rpc.StatusQuery())
    with pytest.raises(CallError, match="PermissionError: x9 is not a member"):
        await c.drive(stranger.transport.call_address(ld.id, req, 5.0))
    with pytest.raises(PermissionError):
        await c.drive(ld.handle_call("x9", req, False))


async def test_an_older_build_refuses_cleanly_and_a_down_member_times_out(
    cluster: MemCluster,
) -> None:
    c = cluster
    ld = await c.leader()
    f = next(n for n in c.nodes.values() if n is not ld)
    # An older build's union lacks StatusQuery: it cannot decode the query.
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'status'"):
        msgspec.msgpack.decode(
            msgspec.msgpack.encode(["status"]),
            type=peer_rpc.Propose | peer_rpc.ChangeConf | peer_rpc.AppCall,
        )

    async def old(frm: str, payload: bytes, known_peer: bool) -> bytes:
        raise ValueError("malformed peer call: Invalid value 'status'")

    f.handle_call = old  # type: ignore[method-assign]
    with pytest.raises(UnknownCallError, match="refused the status query"):
        await c.drive(ld.peer_status(f.id, 1.0))
    c.net.isolate(f.id)
    with pytest.raises((NodeTimeoutError, PeerUnreachableError)):
        await c.drive(ld.peer_status(f.id, 0.5))


def test_the_query_and_state_round_trip() -> None:
    q = peer_rpc.StatusQuery()
    assert peer_rpc.decode_request(peer_rpc.encode(q)) == q
    s = peer_rpc.NodeState("leader", 3, "n1", 9, 9, 10, 0, True, {"reads": 1})
    assert peer_rpc.decode_reply(peer_rpc.encode(s)) == s
