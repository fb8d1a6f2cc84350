"""Encoding and decoding of core messages and records.

Theory of operation
-------------------
A buffer is one version byte followed by one msgpack value::

    +---------+------------------------------------------------+
    | VERSION | msgpack array: [tag, term, frm, to, fields...] |
    +---------+------------------------------------------------+

Encoding maps a core dataclass to its mirror Struct (:mod:`._wire`) and lets
msgspec write it.  Decoding is the reverse, in three steps, each of which can
only fail with :class:`DecodeError`:

1. the version byte is checked;
2. msgspec parses and type-checks the whole buffer against the union of the
   wire structs (wrong types, unknown tags, negative numbers, missing or extra
   fields, truncation and trailing bytes are all refused here, in C);
3. the converter checks what spans fields (an AppendEntries' entries follow
   ``prev_index`` without gaps and their terms never decrease; a ConfState
   satisfies the core's membership invariants) and builds the core object.

Decoding therefore hands the core only messages that a correct peer could
have sent.  It does not judge whether a message makes sense *now*; that is
the core's job.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any, TypeVar, cast

import msgspec

from liferaft.core.confchange import check_invariants
from liferaft.core.errors import ConfChangeError
from liferaft.core.messages import (
    AppendEntries,
    AppendResponse,
    ConfState,
    Entry,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    VoteResponse,
)

from ._wire import (
    VERSION,
    WAppendEntries,
    WAppendResponse,
    WConfState,
    WHardState,
    WHeartbeat,
    WHeartbeatResponse,
    WInstallSnapshot,
    WireMessage,
    WReadIndexRequest,
    WReadIndexResponse,
    WRequestVote,
    WSnapshot,
    WSnapshotMeta,
    WTimeoutNow,
    WVoteResponse,
)
from .errors import DecodeError, EncodeError

_VERSION_BYTE = bytes([VERSION])
_encoder = msgspec.msgpack.Encoder()
_message_decoder = msgspec.msgpack.Decoder(WireMessage)

_index_of = itemgetter(0)
_term_of = itemgetter(1)

# -- core -> wire ------------------------------------------------------------------


def _w_conf(cs: ConfState) -> WConfState:
    # Sorted sets make the encoding deterministic across processes.
    return WConfState(
        sorted(cs.voters),  # type: ignore[arg-type]
        sorted(cs.learners),  # type: ignore[arg-type]
        sorted(cs.voters_outgoing),  # type: ignore[arg-type]
        sorted(cs.learners_next),  # type: ignore[arg-type]
        cs.auto_leave,
    )


def _w_meta(meta: SnapshotMeta) -> WSnapshotMeta:
    return WSnapshotMeta(meta.index, meta.term, _w_conf(meta.conf_state))


def _w_snapshot(s: Snapshot) -> WSnapshot:
    return WSnapshot(_w_meta(s.meta), s.data)


def _w_append(m: AppendEntries) -> WAppendEntries:
    return WAppendEntries(m.term, m.frm, m.to, m.prev_index, m.prev_term, m.entries, m.commit)


def _w_append_resp(m: AppendResponse) -> WAppendResponse:
    return WAppendResponse(m.term, m.frm, m.to, m.index, m.reject, m.hint_index, m.hint_term)


def _w_heartbeat(m: Heartbeat) -> WHeartbeat:
    return WHeartbeat(m.term, m.frm, m.to, m.commit, m.ctx)


def _w_heartbeat_resp(m: HeartbeatResponse) -> WHeartbeatResponse:
    return WHeartbeatResponse(m.term, m.frm, m.to, m.ctx)


def _w_vote(m: RequestVote) -> WRequestVote:
    return WRequestVote(m.term, m.frm, m.to, m.last_index, m.last_term, m.pre_vote, m.transfer)


def _w_vote_resp(m: VoteResponse) -> WVoteResponse:
    return WVoteResponse(m.term, m.frm, m.to, m.granted, m.pre_vote)


def _w_install(m: InstallSnapshot) -> WInstallSnapshot:
    return WInstallSnapshot(m.term, m.frm, m.to, _w_snapshot(m.snapshot))


def _w_timeout_now(m: TimeoutNow) -> WTimeoutNow:
    return WTimeoutNow(m.term, m.frm, m.to)


def _w_read_req(m: ReadIndexRequest) -> WReadIndexRequest:
    return WReadIndexRequest(m.term, m.frm, m.to, m.ctx, m.lease)


def _w_read_resp(m: ReadIndexResponse) -> WReadIndexResponse:
    return WReadIndexResponse(m.term, m.frm, m.to, m.ctx, m.index)


_TO_WIRE: dict[type, Callable[[Any], msgspec.Struct]] = {
    AppendEntries: _w_append,
    AppendResponse: _w_append_resp,
    Heartbeat: _w_heartbeat,
    HeartbeatResponse: _w_heartbeat_resp,
    RequestVote: _w_vote,
    VoteResponse: _w_vote_resp,
    InstallSnapshot: _w_install,
    TimeoutNow: _w_timeout_now,
    ReadIndexRequest: _w_read_req,
    ReadIndexResponse: _w_read_resp,
}

# -- wire -> core ------------------------------------------------------------------


def _conf(w: WConfState) -> ConfState:
    cs = ConfState(w.voters, w.learners, w.voters_outgoing, w.learners_next, w.auto_leave)
    try:
        check_invariants(cs)
    except ConfChangeError as e:
        raise DecodeError(f"invalid conf state: {e}") from None
    return cs


def _meta(w: WSnapshotMeta) -> SnapshotMeta:
    return SnapshotMeta(w.index, w.term, _conf(w.conf_state))


def _snapshot(w: WSnapshot) -> Snapshot:
    return Snapshot(_meta(w.meta), w.data)


def _check_entries(w: WAppendEntries) -> None:
    """Entries must be the log right after ``prev_index``.

    The leader sends a contiguous slice of its log (§5.3) and terms in a log
    never decrease, nor exceed the leader's current term (§5.1), so anything
    else is corruption or a hostile peer.  These checks also bound every
    entry's index and term below and above.
    """
    ents = w.entries
    n = len(ents)
    if not n:
        return
    lo = w.prev_index + 1
    if list(map(_index_of, ents)) != list(range(lo, lo + n)):
        raise DecodeError(f"entries are not contiguous after prev_index {w.prev_index}")
    terms = list(map(_term_of, ents))
    if terms[0] < w.prev_term or terms[-1] > w.term or terms != sorted(terms):
        raise DecodeError(
            f"entry terms must not decrease and lie in [prev_term {w.prev_term}, term {w.term}]"
        )


def _append(w: WAppendEntries) -> AppendEntries:
    _check_entries(w)
    return AppendEntries(w.term, w.frm, w.to, w.prev_index, w.prev_term, w.entries, w.commit)


def _append_resp(w: WAppendResponse) -> AppendResponse:
    return AppendResponse(w.term, w.frm, w.to, w.index, w.reject, w.hint_index, w.hint_term)


def _heartbeat(w: WHeartbeat) -> Heartbeat:
    return Heartbeat(w.term, w.frm, w.to, w.commit, w.ctx)


def _heartbeat_resp(w: WHeartbeatResponse) -> HeartbeatResponse:
    return HeartbeatResponse(w.term, w.frm, w.to, w.ctx)


def _vote(w: WRequestVote) -> RequestVote:
    return RequestVote(w.term, w.frm, w.to, w.last_index, w.last_term, w.pre_vote, w.transfer)


def _vote_resp(w: WVoteResponse) -> VoteResponse:
    return VoteResponse(w.term, w.frm, w.to, w.granted, w.pre_vote)


def _install(w: WInstallSnapshot) -> InstallSnapshot:
    return InstallSnapshot(w.term, w.frm, w.to, _snapshot(w.snapshot))


def _timeout_now(w: WTimeoutNow) -> TimeoutNow:
    return TimeoutNow(w.term, w.frm, w.to)


def _read_req(w: WReadIndexRequest) -> ReadIndexRequest:
    return ReadIndexRequest(w.term, w.frm, w.to, w.ctx, w.lease)


def _read_resp(w: WReadIndexResponse) -> ReadIndexResponse:
    return ReadIndexResponse(w.term, w.frm, w.to, w.ctx, w.index)


_FROM_WIRE: dict[type, Callable[[Any], Message]] = {
    WAppendEntries: _append,
    WAppendResponse: _append_resp,
    WHeartbeat: _heartbeat,
    WHeartbeatResponse: _heartbeat_resp,
    WRequestVote: _vote,
    WVoteResponse: _vote_resp,
    WInstallSnapshot: _install,
    WTimeoutNow: _timeout_now,
    WReadIndexRequest: _read_req,
    WReadIndexResponse: _read_resp,
}

# -- public ------------------------------------------------------------------------


def _encode(w: object) -> bytes:
    try:
        return _VERSION_BYTE + _encoder.encode(w)
    except (TypeError, OverflowError, ValueError) as e:
        raise EncodeError(f"cannot encode: {e}") from None


def encode_message(msg: Message) -> bytes:
    """Encode one core message as ``VERSION | msgpack``.

    Raises :class:`EncodeError` if ``msg`` is not a core message type or a
    field has a type msgpack cannot carry.  Field *values* are not checked
    here; a message the decoder would refuse (a negative term, say) encodes
    but does not decode.
    """
    to_wire = _TO_WIRE.get(type(msg))
    if to_wire is None:
        raise EncodeError(f"not a core message: {type(msg).__name__}")
    try:
        w = to_wire(msg)
    except (AttributeError, TypeError) as e:
        raise EncodeError(f"cannot encode {type(msg).__name__}: {e}") from None
    return _encode(w)


def _payload(buf: bytes | bytearray | memoryview) -> memoryview:
    try:
        view = memoryview(buf)
    except TypeError:
        raise DecodeError(f"expected a bytes-like object, got {type(buf).__name__}") from None
    if not view.c_contiguous:
        view = memoryview(view.tobytes())
    if view.ndim != 1 or view.format != "B":
        try:
            view = view.cast("B")
        except (TypeError, ValueError) as e:
            raise DecodeError(f"unusable buffer: {e}") from None
    if not view:
        raise DecodeError("empty buffer")
    if view[0] != VERSION:
        raise DecodeError(f"unsupported codec version {view[0]} (this side speaks {VERSION})")
    return view[1:]


def decode_message(buf: bytes | bytearray | memoryview) -> Message:
    """Decode a buffer made by :func:`encode_message`.

    Every field is validated.  Raises :class:`DecodeError` (and nothing else)
    on any malformed input: a wrong version, truncation, trailing bytes, an
    unknown message tag, a wrong type, a negative term or index, an empty
    node id, non-contiguous entries, an ill-formed configuration.
    """
    body = _payload(buf)
    try:
        w = _message_decoder.decode(body)
        return _FROM_WIRE[type(w)](w)
    except msgspec.DecodeError as e:  # ValidationError is a subclass
        raise DecodeError(str(e)) from None
    except (ValueError, TypeError) as e:  # e.g. an out-of-range EntryType value
        if isinstance(e, DecodeError):
            raise
        raise DecodeError(f"invalid message: {e}") from None


# -- records that travel outside messages ------------------------------------------

T = TypeVar("T")

_RECORD_DECODERS: dict[type, msgspec.msgpack.Decoder[Any]] = {
    ConfState: msgspec.msgpack.Decoder(WConfState),
    SnapshotMeta: msgspec.msgpack.Decoder(WSnapshotMeta),
    Snapshot: msgspec.msgpack.Decoder(WSnapshot),
    HardState: msgspec.msgpack.Decoder(WHardState),
    Entry: msgspec.msgpack.Decoder(Entry),
}


def _entry_from_wire(e: Entry) -> Entry:
    if e.index < 0 or e.term < 0:
        raise DecodeError(f"negative index or term in entry ({e.index}, {e.term})")
    return e


_RECORD_FROM_WIRE: dict[type, Callable[[Any], object]] = {
    ConfState: _conf,
    SnapshotMeta: _meta,
    Snapshot: _snapshot,
    HardState: lambda w: HardState(w.term, w.vote, w.commit),
    Entry: _entry_from_wire,
}


def encode_record(obj: Entry | ConfState | SnapshotMeta | Snapshot | HardState) -> bytes:
    """Encode one of the core's records (not a message) as ``VERSION | msgpack``."""
    w: object
    if isinstance(obj, Entry):
        w = obj
    elif isinstance(obj, ConfState):
        w = _w_conf(obj)
    elif isinstance(obj, SnapshotMeta):
        w = _w_meta(obj)
    elif isinstance(obj, Snapshot):
        w = _w_snapshot(obj)
    elif isinstance(obj, HardState):
        w = WHardState(obj.term, obj.vote, obj.commit)
    else:
        raise EncodeError(f"not a core record: {type(obj).__name__}")
    return _encode(w)


def decode_record(buf: bytes | bytearray | memoryview, cls: type[T]) -> T:
    """Decode a buffer made by :func:`encode_record` as an instance of ``cls``.

    ``cls`` is one of Entry, ConfState, SnapshotMeta, Snapshot, HardState.
    Raises :class:`DecodeError` on any malformed input.
    """
    dec = _RECORD_DECODERS.get(cls)
    if dec is None:
        raise TypeError(f"not a core record type: {cls!r}")
    body = _payload(buf)
    try:
        return cast(T, _RECORD_FROM_WIRE[cls](dec.decode(body)))
    except msgspec.DecodeError as e:
        raise DecodeError(str(e)) from None
    except (ValueError, TypeError) as e:
        if isinstance(e, DecodeError):
            raise
        raise DecodeError(f"invalid {cls.__name__}: {e}") from None
