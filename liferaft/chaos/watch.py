"""The stranger's referee: what no stranger may ever change, and what was seen.

A :class:`Watch` reads every node's ``/v1/status`` and ``/v1/members`` after
each hostile action and at the end (docs/chaos.md, "Hostile faults").  The
address book is part of the membership (it travels in the conf-change
context, liferaft/runtime/address_book.py), so a member's client address
other than the one the harness gave it, above all the stranger's own
:data:`STRANGER_CLIENT_ADDR`, is a membership change just as a member the
harness did not make or a changed peer address is: each counts in
``membership_changed_by_stranger``.  So does a member-info call a node
served to a stranger (:meth:`Watch.served`), without waiting for the change
to show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .cluster import ChaosCluster

__all__ = [
    "FORGED_TERM_STEP",
    "OPERATOR_IDS",
    "STRANGER_CLIENT_ADDR",
    "STRANGER_IDS",
    "STRANGER_KEYS",
    "STRANGER_PEER_ADDR",
    "Watch",
]

# Forged AppendEntries go this far above the target's term; a term this high
# anywhere means forged traffic was believed.
FORGED_TERM_STEP = 1_000_000
# Where the stranger points a member's addresses (TEST-NET-3: nobody).
STRANGER_CLIENT_ADDR = "203.0.113.66:6666"
STRANGER_PEER_ADDR = "203.0.113.66:7000"
STRANGER_KEYS = "stranger/"
STRANGER_IDS = "stranger-"
OPERATOR_IDS = "oops-"


@dataclass
class Watch:
    """What strangers must never change, and what the harness saw.

    ``changes`` counts each kind of change once per distinct thing changed
    (``membership``: a member, a peer or client address; ``key``; ``term``;
    ``leader``: a transfer served to a stranger; ``http_5xx``); ``details``
    says what, for the report."""

    c: ChaosCluster
    changes: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set)

    def _found(self, kind: str, what: str, key: str | None = None) -> None:
        key = key or what
        if key not in self._seen:
            self._seen.add(key)
            self.changes[kind] += 1
            self.details.append(f"{kind}: {what}")

    def served(self, kind: str, what: str) -> None:
        """A node served a stranger's call that changes ``kind`` (the reply
        says it did): a change, whether or not a status shows it yet."""
        self._found(kind, f"served to a stranger: {what}")

    def check_status(self, nid: str, st: dict[str, Any]) -> None:
        """One node's /v1/status against what only the harness may change."""
        if int(st.get("term", 0)) >= FORGED_TERM_STEP:
            self._found(
                "term", f"{nid} at term {st['term']} (forged AppendEntries believed)", f"term {nid}"
            )
        leader = st.get("leader")
        known = self.c.members.get(str(leader)) if leader else None
        client = st.get("leader_client_addr") or ""
        if known is not None and client not in ("", known.client):
            self._found(
                "membership",
                f"{nid} sends clients to leader {leader} at {client!r}",
                f"{leader} client {client}",  # the key check_members uses: one change
            )
        self.check_members(nid, st.get("members", []))

    def check_members(self, nid: str, members: Iterable[dict[str, Any]]) -> None:
        """One node's member list (of /v1/status or /v1/members)."""
        for m in members:
            mid = str(m.get("id", ""))
            known = self.c.members.get(mid)
            # Keyed by what changed, not by who saw it: one forged member
            # seen by five nodes is one change.
            if known is None:
                if not mid.startswith(OPERATOR_IDS):
                    self._found("membership", f"{nid} lists member {mid!r}", f"member {mid}")
                continue
            peer, client = m.get("peer_addr"), m.get("client_addr")
            if peer not in ("", known.peer):
                self._found(
                    "membership", f"{nid} lists {mid} at peer address {peer!r}", f"{mid} {peer}"
                )
            # "" is a member whose address is not in the book yet (it is
            # announced at start), not a change.
            if client not in ("", known.client):
                self._found(
                    "membership",
                    f"{nid} lists {mid} at client address {client!r}",
                    f"{mid} client {client}",
                )

    async def sweep(self) -> None:
        """Every reachable node's status and member list, checked."""
        for nid in list(self.c.members):
            st = await self.c.status(nid)
            if st is not None:
                self.check_status(nid, st)
            code, body = await self.c.call(nid, "GET", "/v1/members", timeout=1.0)
            if code == 200 and isinstance(body, dict):
                self.check_members(nid, body.get("members", []))

    async def final(self) -> None:
        """After healing: status everywhere, and no ``stranger/`` key anywhere."""
        await self.sweep()
        for nid in list(self.c.members):
            path = f"/v1/kv?prefix={STRANGER_KEYS}&limit=100&consistency=stale"
            code, body = await self.c.call(nid, "GET", path, timeout=5)
            if code == 200 and isinstance(body, dict):
                for item in body.get("items", []):
                    key = item.get("key")
                    self._found("key", f"{nid} holds {key!r}", f"key {key}")
