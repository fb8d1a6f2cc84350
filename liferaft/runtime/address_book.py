"""The address book: where each member can be reached, replicated with the
membership itself (docs/architecture.md, "Who owns what").

Every membership change carries, in its context, the entries of the members
it adds or updates.  Applying the change merges them into ``Node.members``
(id -> entry), which snapshots and ``Joined`` replies carry whole, so every
node, and every node that catches up later, holds the same book.  An entry
is a JSON object; the fields this code knows are :data:`PEER_ADDR` (where
peers dial it), :data:`CLIENT_ADDR` (its client API, so any node can point
a client at the leader), :data:`GRPC_ADDR` (etcd's gRPC API) and
:data:`NAME`, each a field of the same record.

There is one book.  liferaft-kv used to keep a second copy of client
addresses in its own state (``SetAddr`` entries); those entries are still
decoded, since they are in existing logs, but nothing reads them any more.

The context record, version 2 (:data:`CONTEXT_VERSION`)::

    {"v": 2, "members": {"n4": {"addr": "10.0.0.4:7000", "client_addr": "..."}}}

Version 1, written by earlier builds, had no version field: the object *was*
the members map (``{"n4": {"addr": ...}}``).  It is still read (migrated on
the fly: both decode to the same entries), since it is in existing logs.
Any other version is refused with one line naming both versions (by
:func:`decode_context`): a proposal before anything enters the log, and a
committed entry by leaving the book as it was (logged), never by raising
out of apply (docs/architecture.md, "Trust model").  A field may be added to
an entry without a new version: a reader keeps what it does not know.

An entry nests at most :data:`MAX_DEPTH` levels (the entry itself is one):
every reader of the book (status, snapshots and their restore, a join
reply) walks it recursively, from deeper stacks than apply, so a context
apply could just read would fail in each of them.  A deeper one is refused
like any unreadable context, whatever the stack it is read from.

A member updates its own entry (its client address, at every start until
the book holds it) with a change that re-adds it in the role it has: the
core applies that as a no-op to the configuration, so only the book changes.
:func:`info_change` builds it on the leader, from the configuration in
force, so a member is never demoted by a stale view of its own role.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liferaft.core import ChangeType, ConfChange, ConfChangeSingle, ConfState
from liferaft.transport.base import check_tcp_address

from .errors import BadMemberError, MembershipError

#: The version of the conf-change context record this build writes.
CONTEXT_VERSION = 2
#: Entry field: the member's peer address.
PEER_ADDR = "addr"
#: Entry field: the member's client API address ("host:port").
CLIENT_ADDR = "client_addr"
#: Its etcd gRPC API (liferaft-kv with --grpc-addr; docs/etcd.md).
GRPC_ADDR = "grpc_addr"
#: The name its node was started with (``--id``) when that is not its id: a
#: member added by etcd's MemberAdd gets an id before its node exists
#: (liferaft/etcd/cluster.py).
NAME = "name"
#: How many levels an entry may nest (the entry object is one).
MAX_DEPTH = 16

Entry = dict[str, Any]


class ContextError(ValueError):
    """A conf-change context this build cannot read (malformed, or another
    version): a one-line reason."""


#: The unversioned context of earlier builds, ``{id: {...}}``: still written
#: in a cluster of entry format 1 (liferaft/runtime/entry_format.py), where
#: members of an earlier build may still run and read it.
LEGACY_CONTEXT = 1


def encode_context(
    entries: Mapping[str, Mapping[str, Any]], version: int = CONTEXT_VERSION
) -> bytes:
    """The context that sets ``entries``: version :data:`CONTEXT_VERSION`,
    or the unversioned form (``version=LEGACY_CONTEXT``)."""
    members = {k: dict(v) for k, v in entries.items()}
    doc: dict[str, Any] = (
        members if version == LEGACY_CONTEXT else {"v": CONTEXT_VERSION, "members": members}
    )
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_context(raw: bytes, *, strict: bool = False) -> dict[str, Entry]:
    """The entries a conf change's context sets, by member id.

    Reads version :data:`CONTEXT_VERSION` and the unversioned form of earlier
    builds; raises :class:`ContextError` for anything else.  An entry that is
    not a JSON object, or nests deeper than :data:`MAX_DEPTH`, is dropped, or
    with ``strict`` (checking a proposal) refused."""
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise ContextError(_too_deep("the change's context")) from None
    except ValueError as exc:
        raise ContextError(f"the change's context is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ContextError("the change's context must be a JSON object")
    version = doc.get("v")
    # Version 1 maps ids to objects, so an int "v" can only be a version
    # (a member named "v" has an object there).
    if isinstance(version, int) and not isinstance(version, bool):
        if version != CONTEXT_VERSION:
            raise ContextError(
                f"member context version {version} is not readable by this node, which "
                f"reads version {CONTEXT_VERSION} (and the unversioned form before it)"
            )
        doc = doc.get("members")
        if not isinstance(doc, dict):
            raise ContextError(f"a version {CONTEXT_VERSION} member context needs a members object")
    out: dict[str, Entry] = {}
    for nid, entry in doc.items():
        if not isinstance(entry, dict):
            if strict:
                raise ContextError(f"the context of {nid} must be an object")
        elif _depth(entry) > MAX_DEPTH:
            if strict:
                raise ContextError(_too_deep(f"the context of {nid}"))
        else:
            out[nid] = entry
    return out


def _too_deep(what: str) -> str:
    return f"{what} is nested too deep (an entry takes at most {MAX_DEPTH} levels)"


def _depth(value: Any) -> int:
    """How many levels of objects and arrays ``value`` nests, counted without
    recursion, and no further than one past :data:`MAX_DEPTH`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            kids: Any = v.values()
        elif isinstance(v, list | tuple):
            kids = v
        else:
            continue
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            break
        stack.extend((k, d + 1) for k in kids)
    return deepest


def check_info(node_id: str, info: Mapping[str, Any]) -> None:
    """Refuse (:class:`BadMemberError`) entry fields the cluster could not use: a
    peer address here (it is given, and checked, on its own), a client
    address that is not "host:port", or anything that is not JSON."""
    if PEER_ADDR in info:
        raise BadMemberError("give the peer address once, not again in the member info")
    for name, what in ((CLIENT_ADDR, "client"), (GRPC_ADDR, "gRPC")):
        addr = info.get(name)
        if addr:
            try:
                check_tcp_address(addr)
            except ValueError as exc:
                raise BadMemberError(f"{what} address of {node_id}: {exc}") from None
    if _depth(dict(info)) > MAX_DEPTH:
        raise BadMemberError(_too_deep(f"member info of {node_id}"))
    try:
        back = json.loads(json.dumps(dict(info), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadMemberError(f"member info of {node_id} is not JSON: {exc}") from None
    if back != dict(info):
        # The book would never hold it as given (a tuple comes back a list,
        # a key 1 as "1"): keep_member_info would propose it forever.
        raise BadMemberError(
            f"member info of {node_id} does not come back from JSON as given: {back!r}"
        )


def encode_info(info: Mapping[str, Any]) -> bytes:
    """``info`` (entry fields) as it travels in peer_rpc.SetMemberInfo."""
    return json.dumps(dict(info), separators=(",", ":"), sort_keys=True).encode()


def decode_info(node_id: str, raw: bytes) -> Entry:
    """The entry fields in ``raw``, checked (:func:`check_info`), or
    :class:`BadMemberError`: they come from another node, before proposing."""
    try:
        info = json.loads(raw)
    except RecursionError:
        raise BadMemberError(_too_deep(f"member info of {node_id}")) from None
    except ValueError:
        info = None
    if not isinstance(info, dict):
        raise BadMemberError(f"member info of {node_id} is not a JSON object")
    check_info(node_id, info)
    return info


def holds(entry: Mapping[str, Any] | None, info: Mapping[str, Any]) -> bool:
    """True if ``entry`` already has every field of ``info``."""
    return entry is not None and all(entry.get(k) == v for k, v in info.items())


def info_change(
    conf: ConfState, node_id: str, info: Mapping[str, Any], version: int = CONTEXT_VERSION
) -> ConfChange:
    """The change that records ``info`` in ``node_id``'s entry and changes
    nothing else: it re-adds the member in the role ``conf`` gives it (the
    core applies that as a no-op).  Build it from the configuration in force
    on the leader, with no change in flight; :class:`MembershipError` if
    ``node_id`` is not a member or a joint configuration is in force."""
    if conf.voters_outgoing:
        raise MembershipError("a joint configuration is in force; retry once it is left")
    if node_id in conf.voters:
        kind = ChangeType.ADD_VOTER
    elif node_id in conf.learners:
        kind = ChangeType.ADD_LEARNER
    else:
        raise MembershipError(f"{node_id} is not a member")
    ctx = encode_context({node_id: info}, version)
    return ConfChange((ConfChangeSingle(kind, node_id),), context=ctx)


def _text(value: Any) -> str:
    """A committed entry field as a string: a raw change can commit any JSON
    value there, and readers (the CLI, ``serve --join``) must not fail on it."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class MemberAddresses:
    """One member's addresses as text ("" where the book has none)."""

    peer_addr: str
    client_addr: str


def addresses(entry: Mapping[str, Any] | None) -> MemberAddresses:
    """The typed view of a book entry (whatever JSON was committed in it)."""
    entry = entry or {}
    return MemberAddresses(_text(entry.get(PEER_ADDR)), _text(entry.get(CLIENT_ADDR)))


__all__ = [
    "CLIENT_ADDR",
    "GRPC_ADDR",
    "CONTEXT_VERSION",
    "LEGACY_CONTEXT",
    "MAX_DEPTH",
    "NAME",
    "PEER_ADDR",
    "ContextError",
    "MemberAddresses",
    "addresses",
    "check_info",
    "decode_context",
    "decode_info",
    "encode_context",
    "encode_info",
    "holds",
    "info_change",
]
