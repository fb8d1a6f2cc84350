"""A simulator run as a file of events: what the replay viewer draws.

``python -m liferaft.sim --seed N --trace run.json`` hands a
:class:`TraceRecorder` to :func:`~liferaft.sim.runner.run_seed`; the cluster
(cluster.py) and the Ready handler (ready.py) call it where things happen:
a message sent, delivered, dropped or duplicated, a crash or restart, a
partition, a log written, cut or compacted, a role, term, vote, commit,
membership or election-timer change.  The format is contract A of issue 17
and docs/simulator.md ("Traces"): one JSON object with a header, the events
in order and the verdict.

Recording never changes the run: the recorder draws no random numbers and
only reads the nodes (their cores and their stores).  Without a trace the
simulator pays one ``if trace is not None`` per hook.

Each event is encoded as it is recorded, so its size is known at once: when
the next event would pass the size limit, recording stops and the trace is
marked ``truncated`` (the run goes on).  The violation or liveness event and
the verdict are always recorded.

:func:`load_trace` reads a trace back and checks its format and version; the
viewer (``liferaft sim view``) calls it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from liferaft.core import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    InstallSnapshot,
    Message,
    NodeId,
    RawNode,
    ReadIndexResponse,
    RequestVote,
    Role,
    VoteResponse,
)

FORMAT = "liferaft-sim-trace"
VERSION = 1
DEFAULT_LIMIT_MB = 50
# One MB of --trace-limit, in bytes.
MB = 1_000_000
# Room kept for the header and the verdict, which are written whatever the limit.
_RESERVE = 4096

_ROLES = {
    Role.FOLLOWER: "follower",
    Role.PRE_CANDIDATE: "precandidate",
    Role.CANDIDATE: "candidate",
    Role.LEADER: "leader",
}
# The "t=NNN)" that ends every checker message (and the runner's report of an
# exception): the sim time the checker fired.
_T_IN_MESSAGE = re.compile(r"\bt=(\d+)\)\s*$")


class TraceError(ValueError):
    """A file is not a simulator trace this version can read; the message says why."""


def message_time(message: str) -> int | None:
    """The sim time at the end of a checker message ("... (t=3964)"), if any."""
    m = _T_IN_MESSAGE.search(message)
    return int(m.group(1)) if m else None


def _message_fields(m: Message) -> dict[str, Any]:
    """The small per-type fields of a "send" event (never entry data)."""
    if isinstance(m, AppendEntries):
        return {"index": m.prev_index, "log_term": m.prev_term, "entries": len(m.entries),
                "commit": m.commit}
    if isinstance(m, AppendResponse):
        f: dict[str, Any] = {"index": m.index, "success": not m.reject}
        if m.reject:
            f["reject_hint"] = m.hint_index
        return f
    if isinstance(m, Heartbeat):
        return {"commit": m.commit}
    if isinstance(m, RequestVote):
        f = {"index": m.last_index, "log_term": m.last_term}
        if m.pre_vote:
            f["pre"] = True
        if m.transfer:
            f["transfer"] = True
        return f
    if isinstance(m, VoteResponse):
        return {"granted": m.granted, "pre": True} if m.pre_vote else {"granted": m.granted}
    if isinstance(m, InstallSnapshot):
        return {"index": m.snapshot.index, "log_term": m.snapshot.term}
    if isinstance(m, ReadIndexResponse):
        return {"index": m.index}
    return {}


class _NodeView:
    """What the trace has said so far of one node, so only changes are recorded."""

    __slots__ = ("commit", "conf", "deadline", "next_tick", "snap", "state", "terms")

    def __init__(self) -> None:
        # terms[i - 1] is the term of log index i as the trace has drawn it
        # (0: inside a snapshot, never drawn entry by entry).
        self.terms: list[int] = []
        self.snap = 0
        self.state: tuple[str, int, NodeId | None, NodeId | None] | None = None
        self.commit = -1
        self.conf: tuple[list[NodeId], list[NodeId], list[NodeId]] | None = None
        self.deadline: int | None = None
        self.next_tick = 0


class TraceRecorder:
    """Records one run's events; :meth:`write` saves them as contract A's JSON.

    ``limit_bytes`` bounds the file (about: each event is counted as its
    encoded length plus a comma).  ``meta`` are header fields (seed, nodes,
    steps, bug, profile, command); the runner adds the timing fields.
    """

    def __init__(self, limit_bytes: int = DEFAULT_LIMIT_MB * MB, **meta: Any) -> None:
        self.limit = limit_bytes
        self.meta: dict[str, Any] = dict(meta)
        self.events: list[str] = []
        self.size = _RESERVE
        self.truncated = False
        self.verdict: dict[str, Any] | None = None
        self.nodes: dict[NodeId, _NodeView] = {}
        self._next_id = 0
        self._tick_interval = 10
        self._enc = json.JSONEncoder(separators=(",", ":")).encode

    def set_timing(self, tick_interval: int, election_tick: int, heartbeat_tick: int) -> None:
        """The cluster's clock, for deadlines and the header's timer fields."""
        self._tick_interval = tick_interval
        # The core draws its randomized timeout from [ET, 2 ET) ticks.
        self.meta["election_timeout"] = [
            election_tick * tick_interval,
            (2 * election_tick - 1) * tick_interval,
        ]
        self.meta["heartbeat_interval"] = heartbeat_tick * tick_interval

    # -- encoding ----------------------------------------------------------------

    def _emit(self, ev: dict[str, Any], always: bool = False) -> int:
        """Append an event; returns its index (-1 when the limit dropped it)."""
        if self.truncated and not always:
            return -1
        s = self._enc(ev)
        if not always and self.size + len(s) + 1 > self.limit:
            self.truncated = True
            return -1
        self.size += len(s) + 1
        self.events.append(s)
        return len(self.events) - 1

    def _view(self, nid: NodeId) -> _NodeView:
        v = self.nodes.get(nid)
        if v is None:
            v = self.nodes[nid] = _NodeView()
        return v

    # -- the network ----------------------------------------------------------------

    def send(self, m: Message, now: int) -> int:
        """A message left ``m.frm``; returns its id (deliver/drop/dup name it)."""
        self._next_id += 1
        mid = self._next_id
        if not self.truncated:
            if m.to not in self.nodes:  # a member the leader knows before it starts
                self._view(m.to)
            ev = {"t": now, "k": "send", "id": mid, "from": m.frm, "to": m.to,
                  "type": type(m).__name__, "term": m.term}
            ev.update(_message_fields(m))
            self._emit(ev)
        return mid

    def dup(self, mid: int, now: int) -> int:
        """The network copied message ``mid``; returns the copy's id."""
        self._next_id += 1
        self._emit({"t": now, "k": "dup", "id": mid, "copy": self._next_id})
        return self._next_id

    def deliver(self, mid: int, now: int) -> None:
        self._emit({"t": now, "k": "deliver", "id": mid})

    def drop(self, mid: int, why: str, now: int) -> None:
        self._emit({"t": now, "k": "drop", "id": mid, "why": why})

    def net_groups(self, groups: Iterable[Iterable[NodeId]], now: int) -> None:
        """Only nodes in the same group can talk (a heal is one group of all)."""
        self._emit({"t": now, "k": "net", "groups": [sorted(g) for g in groups]})

    def net_cut(self, cut: Iterable[tuple[NodeId, NodeId]], now: int) -> None:
        """The directed links that drop everything, after a change."""
        self._emit({"t": now, "k": "net", "cut": sorted([a, b] for a, b in cut)})

    # -- nodes ------------------------------------------------------------------------

    def crash(self, nid: NodeId, now: int) -> None:
        self._view(nid).deadline = None
        self._emit({"t": now, "k": "crash", "node": nid})

    def start(self, nid: NodeId, first_tick: int, restart: bool, store: Any, now: int) -> None:
        """A node (re)started from ``store``: what its disk kept is its log now."""
        v = self._view(nid)
        v.next_tick = first_tick
        v.state = None  # its role, term and vote are drawn afresh
        v.commit = -1
        if restart:
            self._emit({"t": now, "k": "restart", "node": nid})
        self.sync_log(nid, store, now)

    def tick(self, nid: NodeId, next_tick: int) -> None:
        """``nid`` ticked; its next tick is at ``next_tick`` (for timer deadlines)."""
        v = self.nodes.get(nid)
        if v is not None:
            v.next_tick = next_tick

    def sync_log(self, nid: NodeId, store: Any, now: int) -> None:
        """Bring the trace's picture of ``nid``'s log in line with ``store``.

        Cheap in the usual case: it walks back from the end only over the
        entries that changed (the Log Matching property makes the first
        (index, term) both agree on a common prefix).
        """
        if self.truncated:
            return
        v = self._view(nid)
        terms = v.terms
        snap = store.snapshot()
        base = snap.index
        if base > v.snap:
            v.snap = base
            self._emit({"t": now, "k": "snapshot", "node": nid, "index": base, "term": snap.term})
            if len(terms) < base:
                terms.extend([0] * (base - len(terms)))
                terms[base - 1] = snap.term
        last = store.last_index()
        i = min(len(terms), last)
        while i > base and terms[i - 1] != store.term(i):
            i -= 1
        if len(terms) > i:
            del terms[i:]
            self._emit({"t": now, "k": "truncate", "node": nid, "index": i + 1})
        if last > i:
            new = [store.term(j) for j in range(i + 1, last + 1)]
            terms.extend(new)
            self._emit({"t": now, "k": "append", "node": nid, "index": i + 1, "terms": new})

    def observe(self, nid: NodeId, rn: RawNode, now: int) -> None:
        """Record what changed of a live node's role, term, leader, vote,
        membership, commit index and election timer."""
        if self.truncated:
            return
        v = self._view(nid)
        r = rn.raft
        conf = r.tracker.conf
        role = _ROLES[r.role]
        if role == "follower" and nid not in conf.voters and nid in conf.learners:
            role = "learner"
        state = (role, r.term, r.leader, r.vote)
        if state != v.state:
            v.state = state
            self._emit({"t": now, "k": "role", "node": nid, "role": role, "term": r.term,
                        "leader": r.leader, "vote": r.vote})
        c = (sorted(conf.voters), sorted(conf.learners), sorted(conf.voters_outgoing))
        if c != v.conf:
            v.conf = c
            ev = {"t": now, "k": "conf", "node": nid, "voters": c[0], "learners": c[1]}
            if c[2]:
                ev["outgoing"] = c[2]  # joint consensus: the old voters, still counted
            self._emit(ev)
        # A follower's core may count entries committed that it has not yet
        # written (they are in the Ready it is about to save): the commit
        # point is drawn on the log as written, and moves on with it.
        commit = min(r.log.committed, len(v.terms))
        if commit != v.commit:
            v.commit = commit
            self._emit({"t": now, "k": "commit", "node": nid, "index": commit})
        # The election timer: the core fires after randomized_election_timeout
        # ticks without a reset; election_elapsed counts them.  A leader (and
        # a node that cannot campaign) has no election timer to draw.
        if r.role is Role.LEADER or not r.promotable():
            v.deadline = None
            return
        left = max(r.randomized_election_timeout - r.election_elapsed, 1)
        deadline = v.next_tick + (left - 1) * self._tick_interval
        if deadline != v.deadline:
            v.deadline = deadline
            self._emit({"t": now, "k": "timer", "node": nid, "deadline": deadline})

    # -- the verdict --------------------------------------------------------------------

    def finish(self, violation: str | None, liveness_failure: str | None, now: int) -> None:
        """Record the run's failure (past any limit) and its verdict: the
        runner's SeedResult.violation and .liveness_failure."""
        t: int | None = None
        index: int | None = None
        if violation is not None:
            msg = violation
            t = message_time(msg)
            t = now if t is None else t
            rule = "exception" if msg.startswith("exception ") else msg.split(":", 1)[0]
            index = self._emit({"t": max(t, self._last_t()), "k": "violation", "message": msg,
                                "rule": rule}, always=True)
        elif liveness_failure is not None:
            t = now
            index = self._emit({"t": now, "k": "liveness", "message": liveness_failure},
                               always=True)
        self.verdict = {
            "ok": violation is None and liveness_failure is None,
            "violation": violation,
            "liveness_failure": liveness_failure,
            "t": t,
            "event": index,
        }

    def _last_t(self) -> int:
        return int(json.loads(self.events[-1])["t"]) if self.events else 0

    def to_json(self) -> str:
        """The whole trace as one compact JSON text (events in order)."""
        head = {"format": FORMAT, "version": VERSION}
        for key in ("seed", "nodes", "steps", "bug", "profile", "command",
                    "election_timeout", "heartbeat_interval"):
            head[key] = self.meta.get(key)
        head["node_ids"] = list(self.nodes)
        head["truncated"] = self.truncated
        verdict = self.verdict or {"ok": True, "violation": None, "liveness_failure": None,
                                   "t": None, "event": None}
        text = self._enc(head)
        return (text[:-1] + ',"events":[' + ",".join(self.events) + '],"verdict":'
                + self._enc(verdict) + "}")

    def write(self, path: str | Path) -> int:
        """Write the trace to ``path``; returns its size in bytes."""
        data = self.to_json().encode()
        Path(path).write_bytes(data)
        return len(data)


# Fields every event kind carries besides "t" and "k" (contract A).
REQUIRED: dict[str, tuple[str, ...]] = {
    "send": ("id", "from", "to", "type", "term"),
    "deliver": ("id",),
    "drop": ("id", "why"),
    "dup": ("id", "copy"),
    "crash": ("node",),
    "restart": ("node",),
    "net": (),
    "role": ("node", "role", "term", "leader", "vote"),
    "timer": ("node", "deadline"),
    "append": ("node", "index", "terms"),
    "truncate": ("node", "index"),
    "commit": ("node", "index"),
    "snapshot": ("node", "index", "term"),
    "conf": ("node", "voters", "learners"),
    "violation": ("message", "rule"),
    "liveness": ("message",),
}


def load_trace(path: str | Path) -> dict[str, Any]:
    """Read a trace written by ``--trace``; raises :class:`TraceError` (with
    the reason) for a file that is missing, not JSON, or not a trace of a
    format version this code reads."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise TraceError(f"cannot read {p}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TraceError(f"{p} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TraceError(f"{p} is not a liferaft simulator trace (no \"format\": \"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise TraceError(
            f"{p} is a trace of format version {doc.get('version')!r}; this liferaft reads "
            f"version {VERSION}"
        )
    events = doc.get("events")
    verdict = doc.get("verdict")
    if not isinstance(events, list) or not isinstance(verdict, dict):
        raise TraceError(f"{p} has no \"events\" list or no \"verdict\"")
    for i, ev in enumerate(events):
        if not isinstance(ev, dict) or not isinstance(ev.get("t"), int):
            raise TraceError(f"{p}: event {i} has no integer \"t\"")
        need = REQUIRED.get(ev.get("k"))  # type: ignore[arg-type]
        if need is None:
            raise TraceError(f"{p}: event {i} has an unknown kind {ev.get('k')!r}")
        missing = [f for f in need if f not in ev]
        if missing:
            raise TraceError(f"{p}: event {i} ({ev['k']}) lacks {', '.join(missing)}")
    at = verdict.get("event")
    if at is not None and not (isinstance(at, int) and 0 <= at < len(events)):
        raise TraceError(f"{p}: the verdict points at event {at!r}, outside the events")
    return doc


__all__ = ["TraceError", "TraceRecorder", "load_trace", "message_time", "DEFAULT_LIMIT_MB", "MB"]
