"""A new node taking the member id that etcd's MemberAdd made up for it.

etcd's MemberAdd carries a peer URL only (liferaft/etcd/cluster.py): the
cluster records the member before its node exists, so before it knows the
name the node will be started with.  The member gets a Raft id of its own,
``etcd-`` and 16 random hex digits (:func:`new_id`, never reused), and the
node started for it, ``liferaft serve --id NAME --join URL`` on an empty
data dir, finds that entry by its peer address and runs under that id
(:func:`pick`).  NAME is kept beside the id: in the data dir's identity
file, so a restart with ``--id NAME`` finds the id again
(liferaft/kv/identity.py), and in the address book entry, where MemberList
shows it.

Only an entry no node ever started may be adopted: one whose id has the
prefix and whose client address is still empty (a node records its client
address as soon as it serves).  Adopting a member that once ran, with an
empty data dir, would bring back its id without its vote or its log: two
votes in one term (docs/architecture.md, "Safety rules").
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

#: The Raft ids MemberAdd makes up.
PREFIX = "etcd-"


def new_id() -> str:
    """A fresh Raft id for a member added by peer URL."""
    return PREFIX + secrets.token_hex(8)


def adoptable(member: Mapping[str, Any]) -> bool:
    """True if ``member`` (a ``/v1/members`` entry) was added by MemberAdd and
    no node has run under it yet."""
    mid = member.get("id")
    return isinstance(mid, str) and mid.startswith(PREFIX) and not member.get("client_addr")


def pick(
    members: Iterable[Mapping[str, Any]],
    peer_addr: str,
    same: Callable[[str, str], bool],
) -> str | None:
    """The id this node (advertising ``peer_addr``) adopts among ``members``,
    or None to join under its own.  ``same`` compares two addresses."""
    for m in members:
        addr = m.get("peer_addr")
        if isinstance(addr, str) and adoptable(m) and same(addr, peer_addr):
            return str(m["id"])
    return None
