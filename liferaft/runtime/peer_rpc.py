"""The calls nodes make to each other beside Raft's own messages.

A follower forwards a proposal, a membership change, an update of its own
address book entry, a leadership transfer or an application's leader call
(``app``: liferaft/runtime/leader_calls.py) to the leader, and a new node
asks a member to add it (``join``).  Each call is one request and
one reply, carried by :meth:`Transport.call` as bytes.  This module owns
their wire format: a versioned envelope around a tagged msgspec union, so a
request is a type, never a list whose meaning hangs on its first string,
and a refusal carries a code from a closed set, never a class name.

Wire: a msgpack array ``[version, body]``; ``body`` is an array whose first
item is the tag (``"propose"``, ``"conf"``, ``"join"``, ``"info"``,
``"transfer"``, ``"app"``, ``"status"``; ``"accepted"``, ``"joined"``,
``"refused"``, ``"transferred"``, ``"answer"``, ``"state"``), then the
fields in the order below.  A peer that speaks another version is refused
with a message naming both.  A field may be appended (with a default)
without a new version: an older build reads the fields it knows and ignores
the rest.

A new kind needs no new version either: a build that does not know a tag
cannot decode the request, so it runs nothing and answers with an error
("malformed peer call: ... Invalid value 'app'"), which the caller reports
as a refusal.  So ``app`` (and its ``answer``, and the refusal codes
``unknown_call`` and ``call_failed``, which only an ``app`` call gets) were
added in version 1: an older leader refuses an app call cleanly.  So was
``status`` (and its ``state``): an older member answers it with an error,
which the asker shows as that member's error.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import msgspec

from .errors import (
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
)

#: The version of this module's wire format.  Bump it for any change a peer
#: of the old version would misread; fields are never reordered.
RPC_VERSION = 1


class _Msg(msgspec.Struct, array_like=True, tag_field="kind"):
    pass


# -- requests ----------------------------------------------------------------


class Propose(_Msg, tag="propose"):
    """Append ``data`` (the leader stamps its clock into ``data[0:8]`` when
    ``stamp``); answered with :class:`Accepted`."""

    data: bytes
    stamp: bool


class ChangeConf(_Msg, tag="conf"):
    """Propose an encoded :class:`~liferaft.core.ConfChange` (from a member,
    which checked it); answered with :class:`Accepted`."""

    change: bytes


class Join(_Msg, tag="join"):
    """Add ``node_id`` at ``addr`` as a learner (promoted once caught up when
    ``voter``); answered with :class:`Joined`."""

    node_id: str
    addr: str
    voter: bool


class SetMemberInfo(_Msg, tag="info"):
    """Record ``info`` (a JSON object, encoded) in the address book entry of
    ``node_id``, the caller itself: the leader proposes the change that
    re-adds it in its current role (liferaft/runtime/address_book.py);
    answered with :class:`Accepted`."""

    node_id: str
    info: bytes


class TransferLeader(_Msg, tag="transfer"):
    """Hand leadership to ``to`` (None: the most caught-up voter), waiting up
    to ``timeout`` seconds; answered with :class:`Transferred`."""

    to: str | None
    timeout: float


class AppCall(_Msg, tag="app"):
    """Run the leader's handler registered as ``name`` with ``payload``,
    within ``timeout`` seconds (only while it leads); answered with
    :class:`Answer`."""

    name: str
    payload: bytes
    timeout: float


class StatusQuery(_Msg, tag="status"):
    """Report the answering node's own state (never the leader's): its role,
    term, indices and storage health, plus what its application adds
    (liferaft/runtime/peer_status.py); answered with :class:`NodeState`."""


Request = Propose | ChangeConf | Join | SetMemberInfo | TransferLeader | AppCall | StatusQuery


# -- replies -----------------------------------------------------------------


class Accepted(_Msg, tag="accepted"):
    """The leader appended the entry at ``index`` in ``term``."""

    index: int
    term: int


class Joined(_Msg, tag="joined"):
    """The join is committed; ``members`` is the address book."""

    members: dict[str, dict[str, Any]]


class Transferred(_Msg, tag="transferred"):
    """Leadership moved to ``leader``."""

    leader: str


class Answer(_Msg, tag="answer"):
    """What the handler of an :class:`AppCall` returned."""

    payload: bytes


class Refusal(enum.Enum):
    """Why a call was refused.  Every one but ``TIMED_OUT`` means nothing
    was proposed (or, for a transfer, started)."""

    NOT_LEADER = "not_leader"  # ask the leader (``leader_hint``) instead
    NO_LEADER = "no_leader"  # none known yet: retry later
    STORAGE_FAILED = "storage_failed"  # the leader's disk refuses writes
    MEMBERSHIP = "membership"  # the change is refused (one in flight, ...)
    BAD_MEMBER = "bad_member"  # the id or address cannot be used
    BAD_REQUEST = "bad_request"  # invalid (a transfer to a non-voter)
    TIMED_OUT = "timed_out"  # a transfer or app call did not finish in time: outcome unknown
    UNKNOWN_CALL = "unknown_call"  # no handler of that name on the leader: nothing ran
    CALL_FAILED = "call_failed"  # the app call's handler raised (its type and text)


class Refused(_Msg, tag="refused"):
    code: Refusal
    message: str
    leader_hint: str | None = None


class NodeState(_Msg, tag="state"):
    """A node's answer to :class:`StatusQuery`; ``extra`` is its
    application's own counters (a small map, bounded by the sender)."""

    role: str
    term: int
    leader: str | None
    commit_index: int
    applied_index: int
    last_log_index: int
    snapshot_index: int
    storage_ok: bool
    extra: dict[str, Any] = {}


Reply = Accepted | Joined | Refused | Transferred | Answer | NodeState

_ERRORS: dict[Refusal, type[NodeError]] = {
    Refusal.NOT_LEADER: NotLeaderError,
    Refusal.NO_LEADER: NotLeaderError,
    Refusal.STORAGE_FAILED: StorageFailedError,
    Refusal.MEMBERSHIP: MembershipError,
    Refusal.BAD_MEMBER: BadMemberError,
    Refusal.BAD_REQUEST: BadConfigError,
    Refusal.TIMED_OUT: NodeTimeoutError,
    Refusal.UNKNOWN_CALL: UnknownCallError,
    Refusal.CALL_FAILED: CallFailedError,
}
_CODES: list[tuple[type[NodeError], Refusal]] = [
    (BadMemberError, Refusal.BAD_MEMBER),  # before its base classes
    (NotLeaderError, Refusal.NOT_LEADER),
    (StorageFailedError, Refusal.STORAGE_FAILED),
    (MembershipError, Refusal.MEMBERSHIP),
    (BadConfigError, Refusal.BAD_REQUEST),
    (NodeTimeoutError, Refusal.TIMED_OUT),
    (UnknownCallError, Refusal.UNKNOWN_CALL),
    (CallFailedError, Refusal.CALL_FAILED),
    # A node on its way down proposed (or started) nothing: the caller asks
    # whoever leads next, as after any "no leader".
    (StoppedError, Refusal.NO_LEADER),
]


class RpcError(ValueError):
    """A call that cannot be read: malformed, or another version."""


class _Envelope(msgspec.Struct, array_like=True):
    version: int
    body: msgspec.Raw


_ENC = msgspec.msgpack.Encoder()
_ENVELOPE = msgspec.msgpack.Decoder(_Envelope)
_REQUEST = msgspec.msgpack.Decoder(Request)
_REPLY = msgspec.msgpack.Decoder(Reply)


def encode(msg: Request | Reply) -> bytes:
    """The bytes of ``msg`` in its envelope."""
    return _ENC.encode(_Envelope(RPC_VERSION, msgspec.Raw(_ENC.encode(msg))))


def _open(buf: bytes) -> msgspec.Raw:
    try:
        env = _ENVELOPE.decode(buf)
    except msgspec.DecodeError as exc:
        raise RpcError(f"malformed peer call: {exc}") from None
    if env.version != RPC_VERSION:
        raise RpcError(
            f"peer call version {env.version}; this node speaks version {RPC_VERSION}"
        )
    return env.body


def decode_request(buf: bytes) -> Request:
    """The request in ``buf``; :class:`RpcError` if it cannot be read."""
    req: Request = _decode(buf, _REQUEST, "call")
    return req


def decode_reply(buf: bytes) -> Reply:
    """The reply in ``buf``; :class:`RpcError` if it cannot be read."""
    rep: Reply = _decode(buf, _REPLY, "reply")
    return rep


def _decode(buf: bytes, decoder: msgspec.msgpack.Decoder[Any], what: str) -> Any:
    body = _open(buf)
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise RpcError(f"malformed peer {what}: {exc}") from None


R = TypeVar("R", Accepted, Joined, Transferred, Answer, NodeState)


def reply_of(raw: bytes, leader: str, kind: type[R]) -> R | Refused:
    """The reply ``leader`` sent to a call that expects ``kind``: that, or a
    refusal.  Anything else (unreadable, another kind) came after the call
    may have acted: :class:`NodeTimeoutError`, outcome unknown."""
    try:
        rep = decode_reply(raw)
    except RpcError as exc:
        raise NodeTimeoutError(f"{leader}: {exc}; outcome unknown") from None
    if isinstance(rep, kind | Refused):
        return rep
    raise NodeTimeoutError(f"{leader} answered {rep!r}; outcome unknown")


def refusal(exc: NodeError) -> Refused:
    """The reply that tells a caller ``exc`` refused its request."""
    code = next((c for cls, c in _CODES if isinstance(exc, cls)), Refusal.MEMBERSHIP)
    hint = exc.leader_hint if isinstance(exc, NotLeaderError) else None
    return Refused(code, str(exc), hint)


def error_of(rep: Refused, where: str) -> NodeError:
    """The runtime error a caller raises for ``rep`` (from node ``where``)."""
    cls = _ERRORS[rep.code]
    msg = f"{where}: {rep.message}"
    if cls is NotLeaderError:
        return NotLeaderError(msg, rep.leader_hint)
    return cls(msg)
