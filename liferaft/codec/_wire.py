"""Wire schemas: one msgspec Struct per core type, laid out as msgpack arrays.

The core's messages are frozen dataclasses; msgspec decodes dataclasses only
from maps, which would spell every field name on the wire.  These mirror
Structs are ``array_like`` (fields by position) and the message structs are
tagged with a small integer that comes first in the array, so one
``Decoder`` over their union dispatches on it in C.

Field constraints live here, next to the fields they govern: terms and
indices are unsigned, node ids are non-empty and short.  Constraints that
span fields (contiguous entries, a well-formed configuration) are checked
by the converters in :mod:`liferaft.codec._messages`.

Compatibility rule: the position of a field never changes.  A new field may
only be appended, with a default, so an older decoder that sees it fails
loudly (trailing array element) and a newer decoder that misses it uses the
default.  Anything else needs a new :data:`VERSION`.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

from liferaft.core.messages import Entry

VERSION = 1
"""The first byte of every encoded buffer."""

Uint = Annotated[int, Meta(ge=0)]
"""A term or an index: msgpack caps it at 2**64 - 1."""

MAX_NODE_ID = 1024
WireNodeId = Annotated[str, Meta(min_length=1, max_length=MAX_NODE_ID)]
NodeIds = frozenset[WireNodeId]


class _Wire(Struct, array_like=True, frozen=True, gc=False, forbid_unknown_fields=True):
    """Common options of every wire struct."""


class WConfState(_Wire, frozen=True):
    voters: NodeIds
    learners: NodeIds
    voters_outgoing: NodeIds
    learners_next: NodeIds
    auto_leave: bool


class WSnapshotMeta(_Wire, frozen=True):
    index: Uint
    term: Uint
    conf_state: WConfState


class WSnapshot(_Wire, frozen=True):
    meta: WSnapshotMeta
    data: bytes


class WHardState(_Wire, frozen=True):
    term: Uint
    vote: WireNodeId | None
    commit: Uint


# -- messages: the tag is the first array element ------------------------------------


class WMessage(_Wire, frozen=True, tag_field="t"):
    term: Uint
    frm: WireNodeId
    to: WireNodeId


class WAppendEntries(WMessage, frozen=True, tag=1):
    prev_index: Uint
    prev_term: Uint
    # Decoded straight into the core's NamedTuple (fast, in C); index and
    # term are validated by the contiguity check of the converter.
    entries: tuple[Entry, ...]
    commit: Uint


class WAppendResponse(WMessage, frozen=True, tag=2):
    index: Uint
    reject: bool
    hint_index: Uint
    hint_term: Uint


class WHeartbeat(WMessage, frozen=True, tag=3):
    commit: Uint
    ctx: bytes


class WHeartbeatResponse(WMessage, frozen=True, tag=4):
    ctx: bytes


class WRequestVote(WMessage, frozen=True, tag=5):
    last_index: Uint
    last_term: Uint
    pre_vote: bool
    transfer: bool


class WVoteResponse(WMessage, frozen=True, tag=6):
    granted: bool
    pre_vote: bool


class WInstallSnapshot(WMessage, frozen=True, tag=7):
    snapshot: WSnapshot


class WTimeoutNow(WMessage, frozen=True, tag=8):
    pass


class WReadIndexRequest(WMessage, frozen=True, tag=9):
    ctx: bytes
    lease: bool = False


class WReadIndexResponse(WMessage, frozen=True, tag=10):
    ctx: bytes
    index: Uint


WireMessage = (
    WAppendEntries
    | WAppendResponse
    | WHeartbeat
    | WHeartbeatResponse
    | WRequestVote
    | WVoteResponse
    | WInstallSnapshot
    | WTimeoutNow
    | WReadIndexRequest
    | WReadIndexResponse
)
