"""The peer RPC's wire format (liferaft/runtime/peer_rpc.py): typed requests
and replies in a versioned envelope, refusals as codes from a closed set."""

from __future__ import annotations

import msgspec
import pytest

from liferaft.runtime import (
    BadConfigError,
    BadMemberError,
    CallFailedError,
    MembershipError,
    NodeError,
    NodeTimeoutError,
    NotLeaderError,
    StoppedError,
    StorageFailedError,
    UnknownCallError,
    peer_rpc,
)
from liferaft.runtime.peer_rpc import (
    Accepted,
    ChangeConf,
    Join,
    Joined,
    Propose,
    Refusal,
    Refused,
    RpcError,
)
from liferaft.transport.base import CallError
from tests.runtime.cluster import MemCluster

REQUESTS = [
    Propose(b"\x00data", True),
    ChangeConf(b"cc"),
    Join("n4", "127.0.0.1:7004", False),
    peer_rpc.AppCall("lease.keepalive", b"\x07", 2.5),
]
REPLIES = [
    Accepted(7, 3),
    Joined({"n1": {"addr": "127.0.0.1:7001"}}),
    Refused(Refusal.NOT_LEADER, "moved", "n2"),
    Refused(Refusal.STORAGE_FAILED, "disk full"),
    peer_rpc.Answer(b"ttl=10"),
    Refused(Refusal.UNKNOWN_CALL, "no leader call 'x'"),
]


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_requests_round_trip_and_are_not_replies(req: peer_rpc.Request) -> None:
    buf = peer_rpc.encode(req)
    assert peer_rpc.decode_request(buf) == req
    with pytest.raises(RpcError):
        peer_rpc.decode_reply(buf)


@pytest.mark.parametrize("rep", REPLIES, ids=lambda r: type(r).__name__)
def test_replies_round_trip_and_are_not_requests(rep: peer_rpc.Reply) -> None:
    buf = peer_rpc.encode(rep)
    assert peer_rpc.decode_reply(buf) == rep
    with pytest.raises(RpcError):
        peer_rpc.decode_request(buf)


def test_the_wire_is_a_versioned_array_with_a_tag_first() -> None:
    raw = msgspec.msgpack.decode(peer_rpc.encode(Join("n4", "h:1", True)))
    assert raw == [peer_rpc.RPC_VERSION, ["join", "n4", "h:1", True]]


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\xc1",
        msgspec.msgpack.encode(["propose", b"x", False]),  # the old, unversioned list
        msgspec.msgpack.encode([1, ["propose", b"x"]]),  # a field missing
        msgspec.msgpack.encode([1, ["propose", b"x", "yes"]]),  # a wrong type
        msgspec.msgpack.encode([1, ["nope"]]),  # an unknown tag
    ],
)
def test_anything_else_is_an_rpc_error(junk: bytes) -> None:
    with pytest.raises(RpcError, match="malformed|version"):
        peer_rpc.decode_request(junk)


def test_a_build_without_leader_calls_refuses_one_cleanly() -> None:
    """``app`` was added without a version bump: a build that lacks it
    cannot decode it (an unknown tag, like ``nope`` above), so it runs
    nothing and answers an error, which the caller reports as a refusal."""
    buf = msgspec.msgpack.encode([1, ["app", "lease.keepalive", b"", 1.0]])
    assert isinstance(peer_rpc.decode_request(buf), peer_rpc.AppCall)  # this build
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'app'"):
        msgspec.msgpack.decode(  # an older build's union: the same without AppCall
            msgspec.msgpack.encode(["app", "lease.keepalive", b"", 1.0]),
            type=Propose | ChangeConf | Join | peer_rpc.SetMemberInfo | peer_rpc.TransferLeader,
        )


def test_a_field_appended_by_a_later_build_is_ignored() -> None:
    """Fields are never reordered; a new one is appended (with a default), so
    an older build reads what it knows and ignores the rest."""
    buf = msgspec.msgpack.encode([1, ["join", "n4", "h:1", True, "later"]])
    assert peer_rpc.decode_request(buf) == Join("n4", "h:1", True)


def test_another_version_is_refused_naming_both() -> None:
    buf = msgspec.msgpack.encode([peer_rpc.RPC_VERSION + 1, ["conf", b"cc"]])
    with pytest.raises(RpcError) as e:
        peer_rpc.decode_request(buf)
    assert f"version {peer_rpc.RPC_VERSION + 1}" in str(e.value)
    assert f"speaks version {peer_rpc.RPC_VERSION}" in str(e.value)


@pytest.mark.parametrize(
    ("exc", "code", "back"),
    [
        (NotLeaderError("not me", "n3"), Refusal.NOT_LEADER, NotLeaderError),
        (StorageFailedError("full"), Refusal.STORAGE_FAILED, StorageFailedError),
        (MembershipError("one in flight"), Refusal.MEMBERSHIP, MembershipError),
        (BadMemberError("bad id"), Refusal.BAD_MEMBER, BadMemberError),
        (UnknownCallError("no leader call 'x'"), Refusal.UNKNOWN_CALL, UnknownCallError),
        (CallFailedError("ValueError: boom"), Refusal.CALL_FAILED, CallFailedError),
    ],
)
def test_a_refusal_travels_as_a_code_and_comes_back_as_the_same_error(
    exc: NodeError, code: Refusal, back: type[NodeError]
) -> None:
    rep = peer_rpc.decode_reply(peer_rpc.encode(peer_rpc.refusal(exc)))
    assert isinstance(rep, Refused) and rep.code is code
    err = peer_rpc.error_of(rep, "n1")
    assert type(err) is back and str(exc) in str(err) and "n1" in str(err)
    if isinstance(exc, NotLeaderError):
        assert isinstance(err, NotLeaderError) and err.leader_hint == "n3"


async def test_a_node_refuses_a_call_of_another_version_naming_both() -> None:
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        f = next(n for n in c.nodes.values() if n is not ld)
        buf = msgspec.msgpack.encode([peer_rpc.RPC_VERSION + 1, ["propose", b"x", False]])
        with pytest.raises(CallError, match=f"this node speaks version {peer_rpc.RPC_VERSION}"):
            await c.drive(f.transport.call(ld.id, buf, 5.0))
    finally:
        await c.stop()


@pytest.mark.parametrize(
    ("exc", "code", "back"),
    [
        (NodeTimeoutError("did not move"), Refusal.TIMED_OUT, NodeTimeoutError),
        (BadConfigError("not a voter"), Refusal.BAD_REQUEST, BadConfigError),
        # StoppedError before anything was proposed or started: ask whoever leads next.
        (StoppedError("stopping"), Refusal.NO_LEADER, NotLeaderError),
    ],
)
def test_the_admin_refusals_come_back_as_the_words_clients_retry_on(
    exc: NodeError, code: Refusal, back: type[NodeError]
) -> None:
    rep = peer_rpc.refusal(exc)
    assert rep.code is code and type(peer_rpc.error_of(rep, "n1")) is back


async def test_a_stopping_leader_answers_a_member_that_nothing_was_proposed() -> None:
    """A call that reaches a leader on its way down proposed nothing: the
    member is told "no leader" (it retries with the next one; a transfer is
    a 503), not "membership conflict" (409) and not an error frame (which
    the member can only take for an unknown outcome, a 504)."""
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        await c.drive(ld.stop())
        for req in (
            peer_rpc.Propose(b"\x00" * 9, False),
            peer_rpc.TransferLeader(None, 1.0),
            peer_rpc.SetMemberInfo("n2", b'{"client_addr":"127.0.0.1:8002"}'),
        ):
            rep = peer_rpc.decode_reply(await ld.handle_call("n2", peer_rpc.encode(req), True))
            assert isinstance(rep, Refused) and rep.code is Refusal.NO_LEADER, (req, rep)
    finally:
        await c.stop()
