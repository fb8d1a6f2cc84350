"""The operator's mistake: a member whose address no transport can use.

Not a stranger: the harness holds the cluster's peer secret and makes the
leader commit, through the peer ``conf`` call, the bytes a member's library
call ``Node.change_membership`` sends its leader (what a buggy member, or an
older version, would send).  The HTTP and CLI paths validate addresses; this
path is where an unvalidated entry can still reach the log, so it is the one
that tests "applying a committed entry must never kill a node"
(docs/architecture.md, "Trust model"; docs/chaos.md).  If the leader refuses
it at the door, that is noted (``refused``) and is fine too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from liferaft.core import ChangeType, ConfChange, ConfChangeSingle
from liferaft.runtime import address_book, peer_rpc
from liferaft.transport import TcpTransport

from .cluster import ChaosCluster
from .watch import OPERATOR_IDS

__all__ = ["BAD_ADDRESSES", "CallsOnly", "OperatorFault", "sleep_unless"]

BAD_ADDRESSES = ("127.0.0.1", "junk", "127.0.0.1:notaport", "", "[::1", "10.0.0.1:99999")
KIND = "operator-bad-addr"


@dataclass
class OperatorFault:
    """Adds ``oops-N`` learners at :data:`BAD_ADDRESSES` and removes them
    again over HTTP; ``outcome(kind, what)`` and ``note(what)`` report to the
    stranger's log."""

    c: ChaosCluster
    rng: random.Random
    secret: bytes | None
    outcome: Callable[[str, str], None]
    note: Callable[[str], None]
    pending: set[str] = field(default_factory=set)  # operator members not removed yet

    async def bad_addr(self, stop: asyncio.Event, n: int) -> None:
        """One mistake: commit ``oops-<n>`` at a bad address, then remove it."""
        try:
            leader = await self.c.leader(timeout=5)
        except Exception:
            self.outcome(KIND, "no leader; skipped")
            return
        nid = f"{OPERATOR_IDS}{n}"
        addr = self.rng.choice(BAD_ADDRESSES)
        ctx = address_book.encode_context({nid: {address_book.PEER_ADDR: addr}})
        cc = ConfChange((ConfChangeSingle(ChangeType.ADD_LEARNER, nid),), context=ctx)
        others = [m for m in self.c.members if m != leader] or [leader]
        t = await self._member_transport(self.rng.choice(others))
        answer = "no answer"
        for _ in range(5):  # another change (churn) may be in flight
            try:
                req = peer_rpc.encode(peer_rpc.ChangeConf(cc.encode()))
                raw = await t.call_address(self.c.members[leader].peer, req, 5.0)
                rep = peer_rpc.decode_reply(raw)
                answer = "ok" if isinstance(rep, peer_rpc.Accepted) else repr(rep)[:120]
                if isinstance(rep, peer_rpc.Refused):
                    answer = f"refused ({rep.message})"[:120]
                    if "in flight" in answer or "not yet applied" in answer:
                        await sleep_unless(stop, 1.0)
                        continue
                break
            except Exception as exc:  # CallError, TimeoutError, a bad reply
                answer = f"{type(exc).__name__}: {exc}"[:120]
                await sleep_unless(stop, 1.0)
        await t.close()
        self.outcome(KIND, f"add {nid} at {addr!r} via {leader}: {answer}")
        if answer == "ok":
            self.pending.add(nid)
            # The cluster must keep serving with it committed; the operator
            # notices the mistake a little later and removes the member.
            await sleep_unless(stop, self.rng.uniform(2.0, 5.0))
            await self.remove(nid)

    async def heal(self) -> None:
        """Remove the operator's members still there."""
        for nid in sorted(self.pending):
            await self.remove(nid)

    async def remove(self, nid: str) -> None:
        for _ in range(20):
            via = self.rng.choice(list(self.c.members))
            code, _ = await self.c.call(via, "DELETE", f"/v1/members/{nid}", timeout=5)
            if code in (200, 404):
                self.pending.discard(nid)
                self.note(f"operator removed {nid} ({code})")
                return
            await asyncio.sleep(0.5)
        self.note(f"operator could not remove {nid}")

    async def _member_transport(self, as_member: str) -> TcpTransport:
        """A started transport that proves membership with the cluster's peer
        secret, as the member ``as_member``; it only makes calls (it listens
        on an ephemeral port, which no node dials, and serves nothing)."""
        kw: dict[str, Any] = {}
        if self.secret is not None:
            kw["peer_secret"] = self.secret
        for listen in ("127.0.0.1:0", "0.0.0.0:0"):  # lo may be down in a namespace
            t = TcpTransport(as_member, self.c.cluster_id, listen, **kw)
            try:
                await t.start(CallsOnly())
                return t
            except OSError:
                await t.close()
        raise OSError("the operator's transport could not listen anywhere")


class CallsOnly:
    """A transport handler for a harness that only makes calls: it takes no
    messages, snapshots or calls (a subclass may serve calls)."""

    def deliver(self, msg: Any) -> None:
        pass

    def unreachable(self, peer: str) -> None:
        pass

    def snapshot_source(self, msg: Any) -> Any:
        raise RuntimeError("this harness sends no snapshots")

    def snapshot_sink(self, msg: Any) -> Any:
        raise RuntimeError("this harness takes no snapshots")

    def snapshot_status(self, peer: str, ok: bool) -> None:
        pass

    async def handle_call(self, frm: str, payload: bytes, known_peer: bool) -> bytes:
        raise PermissionError("this harness serves no calls")


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
