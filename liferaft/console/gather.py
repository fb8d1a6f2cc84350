"""The console's view of the whole cluster, gathered through the peer RPC.

Theory of operation
-------------------
Once a second, while at least one console stream is open on this node (one
gatherer per node, shared by every stream), the gatherer asks every other
member for its own state with the peer status call
(liferaft/runtime/peer_status.py), all at once, each within
:data:`CALL_TIMEOUT`: a dead or stopped member costs one timeout, never a
late line.  This node's own row comes from its local status.  Never an
HTTP fan-out: the peer port already proves who is a member, and the client
port of another node may hold another token.

Each round yields a *view* (the stream line's fields but ``history`` and
``timeline``: docs/console.md), a rates sample (liferaft/console/rates.py),
and timeline entries for what changed on the other members since the last
round: down, up, a snapshot, storage failing or recovering.  The node's
own changes reach the timeline through its events
(liferaft/console/timeline.py), not here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from liferaft.runtime import Node
from liferaft.runtime import address_book as book

from .rates import Rates
from .timeline import Timeline

log = logging.getLogger("liferaft.console")

#: A member's state as it answered, or None and why not.
_Answer = tuple[dict[str, Any] | None, str | None]

#: Seconds between rounds.
INTERVAL = 1.0
#: Seconds each member has to answer a round's status call.
CALL_TIMEOUT = 0.8


class Gatherer:
    """Rounds of status calls while :meth:`acquire`\\ d; :attr:`view` is the latest."""

    def __init__(
        self,
        node: Node,
        extra: Callable[[], dict[str, Any]],
        timeline: Timeline,
        rates: Rates,
        interval: float = INTERVAL,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        self.node = node
        self.extra = extra  # this node's own counters (what it answers others)
        self.timeline = timeline
        self.rates = rates
        self.interval = interval
        self.timeout = timeout
        self.view: dict[str, Any] | None = None
        self.generation = 0
        self._at = 0.0  # monotonic time of the latest view
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._closed = False
        # id -> (reachable, snapshot_index, storage_ok) at the last round.
        self._seen: dict[str, tuple[bool, int | None, bool | None]] = {}

    # -- who needs rounds -----------------------------------------------------------------

    def acquire(self) -> None:
        """A stream opened: run rounds (the first at once) until released."""
        self._users += 1
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="liferaft-console-gather")

    def release(self) -> None:
        """A stream closed; the last one stops the rounds."""
        self._users -= 1
        if self._users <= 0 and self._task is not None:
            self._users = 0
            self._task.cancel()
            self._task = None

    async def close(self) -> None:
        """The node is stopping: end the rounds and wake every waiting stream."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._changed.set()

    # -- what streams wait on ---------------------------------------------------------------

    async def fresh(self) -> tuple[dict[str, Any], int] | None:
        """The latest view if less than a round old, else the next one; None
        once closed."""
        if self.view is not None and time.monotonic() - self._at < self.interval * 1.5:
            return self.view, self.generation
        return await self.after(self.generation)

    async def after(self, generation: int) -> tuple[dict[str, Any], int] | None:
        """The first view newer than ``generation``; None once closed."""
        while self.generation <= generation or self.view is None:
            if self._closed:
                return None
            await self._changed.wait()
        return self.view, self.generation

    # -- rounds ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                view = await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a stopping node, a bug: the next round tries again
                log.warning("console: gathering the cluster's state failed: %r", exc)
            else:
                self.view, self._at = view, time.monotonic()
                self.generation += 1
                woken, self._changed = self._changed, asyncio.Event()
                woken.set()
            await asyncio.sleep(max(0.05, self.interval - (time.monotonic() - started)))

    async def round(self) -> dict[str, Any]:
        """One round: every member's row, the rates sample; the view."""
        node, me = self.node, self.node.id
        st = node.status()
        ids = sorted(set(st.voters) | set(st.learners))
        others = [i for i in ids if i != me]
        answers = await asyncio.gather(*(self._ask(i) for i in others))
        states: dict[str, _Answer] = dict(zip(others, answers, strict=True))
        own = {
            "role": st.role, "term": st.term, "leader": st.leader,
            "commit_index": st.commit_index, "applied_index": st.applied_index,
            "last_log_index": st.last_log_index, "snapshot_index": st.snapshot_index,
            "storage_ok": st.storage_ok, "extra": self._own_extra(),
        }  # fmt: skip
        states[me] = (own, None)
        learners = set(st.learners)
        leader_state = states.get(st.leader or "", (None, None))[0]
        leader_last = leader_state["last_log_index"] if leader_state else None
        rows = []
        for nid in ids:
            got, err = states[nid]
            addrs = book.addresses(st.members.get(nid))
            # A leader knows how far behind a member is even when it does
            # not answer (its match index): the figure that matters then.
            known = st.peers.get(nid) if st.leader == me else None
            row = _row(nid, nid not in learners, addrs, got, err, leader_last)
            if row["lag"] is None and known is not None:
                row["lag"] = known.lag
            rows.append(row)
            if nid != me:
                self._observe(nid, got, err)
        now = time.time()
        return {
            "at": round(now, 3),
            "via": me,
            "leader": st.leader,
            "term": st.term,
            "members": rows,
            "rates": self._sample(now, {n: s for n, (s, _) in states.items() if s is not None}),
        }

    def _own_extra(self) -> dict[str, Any]:
        try:
            return self.extra()
        except Exception as exc:  # counters are a nicety: the row stays
            return {"extra_error": repr(exc)[:200]}

    async def _ask(self, nid: str) -> _Answer:
        try:
            # The outer bound is a backstop: the call has its own timeout.
            async with asyncio.timeout(self.timeout + 0.2):
                return await self.node.peer_status(nid, self.timeout), None
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            return None, f"no answer within {self.timeout:g} s"
        except Exception as exc:
            return None, " ".join(f"{type(exc).__name__}: {exc}".split())[:300]

    def _observe(self, nid: str, got: dict[str, Any] | None, err: str | None) -> None:
        """Timeline entries for what changed on ``nid`` since the last round."""
        add = self.timeline.add
        up = got is not None
        snap = got["snapshot_index"] if got else None
        ok = got["storage_ok"] if got else None
        was = self._seen.get(nid)
        term = got["term"] if got else None
        if was is None or was[0] != up:
            if not up:
                add("down", nid, None, f"{nid} does not answer {self.node.id}: {err}")
            elif was is not None:
                add("up", nid, term, f"{nid} answers {self.node.id} again")
        if up and was is not None and was[0]:
            if snap is not None and was[1] is not None and snap > was[1]:
                add("snapshot", nid, term, f"{nid} has a snapshot at index {snap}")
            if ok is False and was[2] is not False:
                add("storage_failed", nid, term, f"{nid}'s storage failed")
            elif ok and was[2] is False:
                add("storage_recovered", nid, term, f"{nid}'s storage recovered")
        if up:
            self._seen[nid] = (True, snap, ok)
        else:
            self._seen[nid] = (False, was[1] if was else None, was[2] if was else None)

    def _sample(self, now: float, states: dict[str, dict[str, Any]]) -> dict[str, Any]:
        extras = {n: s.get("extra") or {} for n, s in states.items()}
        revs = [e["revision"] for e in extras.values() if isinstance(e.get("revision"), int)]
        reads = {n: e["reads"] for n, e in extras.items() if isinstance(e.get("reads"), int)}
        lat = [x for e in extras.values() for x in e.get("write_ms") or ()
               if isinstance(x, int | float)]  # fmt: skip
        top = max((s["commit_index"] for s in states.values()), default=0)
        lag = max((max(0, top - s["applied_index"]) for s in states.values()), default=0)
        return self.rates.sample(now, max(revs) if revs else None, reads, lat, lag)


def _row(
    nid: str,
    voter: bool,
    addrs: book.MemberAddresses,
    got: dict[str, Any] | None,
    err: str | None,
    leader_last: int | None,
) -> dict[str, Any]:
    """One member's line in the view (docs/console.md)."""
    row: dict[str, Any] = {
        "id": nid, "voter": voter, "peer_addr": addrs.peer_addr,
        "client_addr": addrs.client_addr, "reachable": got is not None,
    }  # fmt: skip
    if got is None:
        row.update(dict.fromkeys(_FIELDS), lag=None, error=err or "no answer")
        return row
    role = "candidate" if got["role"] == "pre-candidate" else got["role"]
    if not voter and role == "follower":
        role = "learner"
    row.update({f: got[f] for f in _FIELDS if f != "role"}, role=role, error=None)
    last = got["last_log_index"]
    row["lag"] = max(0, leader_last - last) if leader_last is not None else None
    return row


_FIELDS = ("role", "term", "leader", "commit_index", "applied_index", "last_log_index",
           "snapshot_index", "storage_ok")  # fmt: skip
