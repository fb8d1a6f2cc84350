"""A small interpreter for golden "interaction" scripts of the core.

Theory of operation
-------------------
A script (tests/core/testdata/*.txt) is a sequence of blocks separated by
blank lines.  Each block is one command line, a ``----`` line and the output
the command is expected to print::

    # comments and blank lines between blocks are kept verbatim
    add-nodes 3 voters=(1,2,3) index=10
    ----
    1: follower term=1 ...

:func:`run_script` parses a file, runs every command against one
:class:`Env` and returns the parsed items with the actual output of each
command; :func:`render` turns them back into the file's text.  The test
compares that text with the file, or (``pytest --rewrite``) writes it back.

The environment holds a few :class:`~liferaft.core.RawNode` instances, each
with its own :class:`~liferaft.core.MemoryStorage` (its "disk"), a toy state
machine (the list of applied payloads) and one shared network queue.  Nothing
moves unless a command says so: ``process-ready`` carries out one Ready in
the contract order (persist, send, apply, advance), ``deliver-msgs`` steps
queued messages into their recipients.  Elections time out after exactly
``election-tick`` ticks (the randomized part of the timeout is always 0), so
scripts are deterministic.

Commands
--------
``add-nodes N [voters=(1,2,3)] [learners=(4)] [index=I] [pre-vote=B]
[check-quorum=B] [election-tick=T] [heartbeat-tick=T] [max-size=BYTES]
[max-inflight=K] [read-only=safe|lease]``
    Add N nodes with the next free ids ("1", "2", ...).  With ``voters`` or
    ``learners`` they start from an initial snapshot at ``index`` (default 1,
    term 1) holding that configuration; without, they start empty and must
    be sent a snapshot by a leader (nodes that join later).
``campaign ID``, ``tick-election ID``, ``tick-heartbeat ID``, ``tick ID N``
``propose ID DATA``
``propose-conf-change ID [v4] [l5] [r2] [transition=auto|joint|explicit]``
    ``vN`` adds voter N, ``lN`` adds (or demotes to) learner N, ``rN``
    removes N; no change at all proposes leaving a joint configuration.
``process-ready ID...``
``deliver-msgs [drop=ID|(ID,...)] [type=NAME] [count=N] [duplicate=true] [ID...]``
    Deliver the queued messages addressed to the IDs (all nodes when none is
    named and nothing is dropped), in the order they were sent; messages to
    the ``drop`` nodes are discarded.  ``type`` limits both to one message
    type (e.g. ``type=AppendEntries``), ``count`` to the N oldest messages
    per node, and ``duplicate`` puts a copy of each delivered message back
    at the end of the queue (a network that duplicates and delays).
``hold-msgs [from=ID] [type=NAME] [ID...]``
    Take the queued messages addressed to the IDs (all nodes when none is
    named), optionally only those sent by ``from`` and of one type, out of
    the network and hold them back (a network that delays them for as long
    as the script likes).  Held messages are delivered by nothing until
    ``release-msgs``.
``release-msgs``
    Put every held message back at the end of the queue, in the order it
    was held; one on a link that is cut by then is dropped.
``stabilize [ID...]``
    Repeat process-ready and deliver-msgs for the nodes until nothing moves;
    then flush the pending commit of any of them (the host's bounded delay,
    printed as ``> ID flushing the pending commit``) and go on until nothing
    moves and no commit is pending.
``flush-commit ID...``
    The host flushes the node's pending commit index (RawNode.flush_commit);
    prints whether one was pending.
``raft-log ID``, ``raft-state``, ``status ID``, ``state-machine ID``
``read-index ID CTX``, ``transfer-leadership from=ID to=ID``
``compact ID INDEX``
    Snapshot the state machine at its applied index, then discard the log
    through INDEX (INDEX <= applied).
``report-snapshot ID to=ID [failed=true|false]``, ``report-unreachable ID to=ID``
    What the transport tells the node ID about its messages to ``to``.
``isolate ID``, ``heal``
    Cut every link to and from ID (queued messages on them are dropped, and
    so is every message sent on them later); ``heal`` restores all links.
``crash ID``, ``restart ID``
    Throw the RawNode away (whatever it had not handed out in a Ready is
    lost), then rebuild it from its MemoryStorage; the state machine is
    rebuilt from the storage snapshot and the committed log.
``log-level none|info``
    ``info`` (the default) prints role, term and membership transitions as
    ``INFO`` lines where they happen.

Output conventions
------------------
A log position prints as ``term/index`` everywhere (as in etcd/raft's test
output): an entry ``2/12 EntryNormal "foo"`` is index 12 of term 2, and an
AppendEntries' ``prev=1/11`` is the entry before its first one.  An
AppendResponse rejection shows the follower's conflict ``hint`` the same way.
A message sent across a cut link is listed in its Ready with ``(dropped:
partition)``; one addressed to a crashed node is printed as dropped when it
would be delivered.  A node that applies an entry out of order prints a
``SAFETY:`` line.  A command that prints nothing prints ``ok``.  Errors of
the core (a refused proposal, say) are printed as ``error: ...``; errors in
the script itself (an unknown command, a bad argument) raise
:class:`ScriptError` naming the file and line, and so does a ``stabilize``
that never settles.
"""

from __future__ import annotations

import json
import random
import re
import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from liferaft.core import (
    AppendEntries,
    AppendResponse,
    ConfChange,
    ConfChangeError,
    ConfChangeSingle,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    MemoryStorage,
    Message,
    RaftError,
    RawNode,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadOnlyOption,
    Ready,
    RequestVote,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
    Transition,
    VoteResponse,
    add_learner,
    add_voter,
    remove_node,
)

SEPARATOR = "----"
# A bound on stabilize: a core that never stops producing work is a bug.
STABILIZE_ROUNDS = 500


class ScriptError(Exception):
    """The script cannot run: unknown command, bad argument, bad layout, or
    nodes that never settle."""


# -- parsing and rendering ---------------------------------------------------------------


@dataclass
class Directive:
    """One command of a script with the output recorded for it."""

    line: int
    text: str
    expected: list[str]


Item = str | Directive


def parse(path: Path, text: str) -> list[Item]:
    """Split a script into verbatim lines (comments, blanks) and directives."""
    lines = text.splitlines()
    items: list[Item] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            items.append(line)
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1].strip() != SEPARATOR:
            raise ScriptError(f"{path}:{i + 1}: expected a {SEPARATOR!r} line after {line!r}")
        d = Directive(i + 1, line.strip(), [])
        i += 2
        while i < len(lines) and lines[i].strip():
            d.expected.append(lines[i])
            i += 1
        items.append(d)
    return items


def render(items: list[Item], outputs: dict[int, list[str]]) -> str:
    """The script text with each directive's output replaced by ``outputs``."""
    out: list[str] = []
    for it in items:
        if isinstance(it, Directive):
            out.append(it.text)
            out.append(SEPARATOR)
            out.extend(outputs.get(it.line, it.expected))
        else:
            out.append(it)
    return "\n".join(out) + "\n"


def run_script(path: Path) -> tuple[str, str]:
    """Run a script; returns (the file's text, the text with actual outputs)."""
    text = path.read_text()
    items = parse(path, text)
    env = Env(str(path))
    outputs = {it.line: env.run(it.line, it.text) for it in items if isinstance(it, Directive)}
    return text, render(items, outputs)


# -- formatting ----------------------------------------------------------------------------


def _id_key(nid: str) -> tuple[int, str]:
    return (int(nid), nid) if nid.isdigit() else (1 << 62, nid)


def fmt_ids(ids: Iterable[str]) -> str:
    return "(" + ",".join(sorted(ids, key=_id_key)) + ")"


def fmt_data(data: bytes) -> str:
    return '"' + data.decode("utf-8", "backslashreplace").replace('"', '\\"') + '"'


def fmt_conf_change(cc: ConfChange) -> str:
    if cc.leave_joint:
        return "leave-joint"
    letter = {0: "v", 1: "l", 2: "r"}
    parts = [f"{letter[int(c.type)]}{c.node_id}" for c in cc.changes]
    if cc.transition is Transition.JOINT:
        parts.append("transition=joint")
    elif cc.transition is Transition.JOINT_EXPLICIT:
        parts.append("transition=explicit")
    return " ".join(parts)


def fmt_entry(e: Entry) -> str:
    if e.type is EntryType.CONF_CHANGE:
        try:
            body = fmt_conf_change(ConfChange.decode(e.data))
        except ConfChangeError:
            body = "(malformed) " + fmt_data(e.data)
        return f"{e.term}/{e.index} EntryConfChange {body}"
    return f"{e.term}/{e.index} EntryNormal {fmt_data(e.data)}"


def fmt_conf(cs: ConfState) -> str:
    s = "voters=" + fmt_ids(cs.voters)
    if cs.voters_outgoing:
        s += "&&" + fmt_ids(cs.voters_outgoing)
    if cs.learners:
        s += " learners=" + fmt_ids(cs.learners)
    if cs.learners_next:
        s += " learners_next=" + fmt_ids(cs.learners_next)
    if cs.auto_leave:
        s += " autoleave"
    return s


def fmt_snapshot(s: Snapshot) -> str:
    return f"{s.term}/{s.index} {fmt_conf(s.meta.conf_state)}"


def fmt_msg(m: Message) -> str:
    head = f"{m.frm}->{m.to} "
    t = f"term={m.term}"
    if isinstance(m, AppendEntries):
        s = f"AppendEntries {t} prev={m.prev_term}/{m.prev_index} commit={m.commit}"
        if m.entries:
            s += " entries=[" + ", ".join(fmt_entry(e) for e in m.entries) + "]"
        return head + s
    if isinstance(m, AppendResponse):
        if m.reject:
            return head + (
                f"AppendResponse {t} index={m.index} rejected "
                f"hint={m.hint_term}/{m.hint_index}"
            )
        return head + f"AppendResponse {t} index={m.index}"
    if isinstance(m, Heartbeat):
        return head + f"Heartbeat {t} commit={m.commit}" + (
            f" ctx={fmt_data(m.ctx)}" if m.ctx else ""
        )
    if isinstance(m, HeartbeatResponse):
        return head + f"HeartbeatResponse {t}" + (f" ctx={fmt_data(m.ctx)}" if m.ctx else "")
    if isinstance(m, RequestVote):
        kind = "PreVote" if m.pre_vote else "RequestVote"
        return head + f"{kind} {t} last={m.last_term}/{m.last_index}" + (
            " transfer" if m.transfer else ""
        )
    if isinstance(m, VoteResponse):
        kind = "PreVoteResponse" if m.pre_vote else "VoteResponse"
        return head + f"{kind} {t} " + ("granted" if m.granted else "rejected")
    if isinstance(m, InstallSnapshot):
        return head + f"InstallSnapshot {t} snapshot={fmt_snapshot(m.snapshot)}"
    if isinstance(m, TimeoutNow):
        return head + f"TimeoutNow {t}"
    if isinstance(m, ReadIndexRequest):
        lease = " lease=true" if m.lease else ""
        return head + f"ReadIndexRequest {t} ctx={fmt_data(m.ctx)}{lease}"
    if isinstance(m, ReadIndexResponse):
        return head + f"ReadIndexResponse {t} index={m.index} ctx={fmt_data(m.ctx)}"
    return head + f"{type(m).__name__} {t}"  # pragma: no cover - every type is listed


MESSAGE_TYPES = {
    "AppendEntries": AppendEntries,
    "AppendResponse": AppendResponse,
    "Heartbeat": Heartbeat,
    "HeartbeatResponse": HeartbeatResponse,
    "RequestVote": RequestVote,
    "VoteResponse": VoteResponse,
    "InstallSnapshot": InstallSnapshot,
    "TimeoutNow": TimeoutNow,
    "ReadIndexRequest": ReadIndexRequest,
    "ReadIndexResponse": ReadIndexResponse,
}


def fmt_ready(rd: Ready, cut: Callable[[Message], bool] = lambda m: False) -> list[str]:
    """The contents of a Ready, one item per line."""
    first = " send-first=true" if rd.send_first and rd.messages else ""
    commit = " sync-commit=true" if rd.sync_commit else ""
    out = [f"Ready must-sync={str(rd.must_sync).lower()}{commit}{first}:"]
    if rd.soft_state is not None:
        ss = rd.soft_state
        out.append(f"SoftState role={ss.role.value} leader={ss.leader or 'none'}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        out.append(f"HardState term={hs.term} vote={hs.vote or 'none'} commit={hs.commit}")
    # In the order the caller handles them: persist, send, apply.
    if rd.snapshot is not None:
        out.append("Snapshot " + fmt_snapshot(rd.snapshot))
    if rd.entries:
        out.append("Entries:")
        out.extend(fmt_entry(e) for e in rd.entries)
    if rd.messages:
        out.append("Messages:")
        out.extend(fmt_msg(m) + (" (dropped: partition)" if cut(m) else "") for m in rd.messages)
    if rd.committed_entries:
        out.append("CommittedEntries:")
        out.extend(fmt_entry(e) for e in rd.committed_entries)
    if rd.read_states:
        out.append("ReadStates:")
        out.extend(f"index={rs.index} ctx={fmt_data(rs.ctx)}" for rs in rd.read_states)
    return out


# -- arguments -----------------------------------------------------------------------------


@dataclass
class Args:
    """Positional and key=value arguments of one command."""

    pos: list[str]
    kw: dict[str, str]
    fail: Callable[[str], ScriptError]
    used: set[str] = field(default_factory=set)

    def take(self, key: str, default: str | None = None) -> str | None:
        self.used.add(key)
        return self.kw.get(key, default)

    def take_int(self, key: str, default: int) -> int:
        v = self.take(key)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise self.fail(f"{key}={v!r} is not an integer") from None

    def take_bool(self, key: str, default: bool) -> bool:
        v = self.take(key)
        if v is None:
            return default
        if v not in ("true", "false"):
            raise self.fail(f"{key}={v!r} must be true or false")
        return v == "true"

    def take_ids(self, key: str) -> list[str] | None:
        v = self.take(key)
        if v is None:
            return None
        return parse_ids(v)

    def done(self) -> None:
        extra = sorted(set(self.kw) - self.used)
        if extra:
            raise self.fail(f"unknown argument(s) {', '.join(extra)}")


def parse_ids(v: str) -> list[str]:
    v = v.strip()
    if v.startswith("(") and v.endswith(")"):
        v = v[1:-1]
    return [p.strip() for p in v.split(",") if p.strip()]


_KV = re.compile(r"^([a-z][a-z0-9-]*)=(.*)$")
# Commands whose arguments are all positional: a payload may contain "=".
_RAW_COMMANDS = frozenset({"propose", "read-index"})


# -- the environment -------------------------------------------------------------------------


class _NoJitter(random.Random):
    """Randomness that always draws 0: election timeouts are exactly election-tick."""

    def randrange(self, *args: object, **kwargs: object) -> int:  # type: ignore[override]
        return 0


@dataclass
class _Node:
    id: str
    options: dict[str, object]
    storage: MemoryStorage
    rn: RawNode | None = None
    # The toy state machine: (index, payload) of every applied normal entry.
    applied: list[tuple[int, str]] = field(default_factory=list)
    applied_index: int = 0


def _encode_sm(applied: list[tuple[int, str]]) -> bytes:
    return json.dumps(applied, separators=(",", ":")).encode()


def _decode_sm(data: bytes) -> list[tuple[int, str]]:
    if not data:
        return []
    return [(int(i), str(d)) for i, d in json.loads(data)]


class Env:
    """The nodes, their disks and the network of one script."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: dict[str, _Node] = {}
        self.queue: list[Message] = []
        # Messages taken out of the network by hold-msgs, until release-msgs.
        self.held: list[Message] = []
        self.isolated: set[str] = set()
        self.log_level = "info"
        self.out: list[str] = []
        self.indent = 0
        self._line = 0
        self._cmd = ""

    # -- plumbing ----------------------------------------------------------------

    def fail(self, msg: str) -> ScriptError:
        return ScriptError(f"{self.name}:{self._line}: {self._cmd}: {msg}")

    def emit(self, line: str) -> None:
        self.out.append("  " * self.indent + line)

    def info(self, line: str) -> None:
        if self.log_level == "info":
            self.emit("INFO " + line)

    def run(self, line: int, text: str) -> list[str]:
        """Run one command line; returns what it printed."""
        self._line = line
        try:
            tokens = shlex.split(text)
        except ValueError as exc:
            raise ScriptError(f"{self.name}:{line}: cannot parse {text!r}: {exc}") from None
        self._cmd = tokens[0]
        handler = getattr(self, "cmd_" + tokens[0].replace("-", "_"), None)
        if handler is None:
            raise self.fail("unknown command")
        pos: list[str] = []
        kw: dict[str, str] = {}
        for tok in tokens[1:]:
            m = None if self._cmd in _RAW_COMMANDS else _KV.match(tok)
            if m:
                kw[m.group(1)] = m.group(2)
            else:
                pos.append(tok)
        self.out = []
        self.indent = 0
        args = Args(pos, kw, self.fail)
        handler(args)
        args.done()
        out = self.out or ["ok"]
        for o in out:
            if not o.strip():  # pragma: no cover - a blank line would end the block
                raise self.fail("internal: blank output line")
        return out

    def node(self, nid: str) -> _Node:
        n = self.nodes.get(nid)
        if n is None:
            raise self.fail(f"no node {nid!r}")
        return n

    def live(self, nid: str) -> RawNode:
        n = self.node(nid)
        if n.rn is None:
            raise self.fail(f"node {nid} is down (crashed); restart it first")
        return n.rn

    def one_id(self, args: Args) -> str:
        if len(args.pos) != 1:
            raise self.fail(f"expected one node id, got {args.pos}")
        return args.pos[0]

    def sorted_ids(self, ids: Iterable[str] | None = None) -> list[str]:
        return sorted(self.nodes if ids is None else ids, key=_id_key)

    def watch(self, nid: str, fn: Callable[[], object]) -> None:
        """Run ``fn`` on node ``nid`` and report role, term and membership changes."""
        rn = self.live(nid)
        before = (rn.role, rn.term, rn.conf_state())
        try:
            fn()
        except RaftError as exc:
            self.emit(f"error: {type(exc).__name__}: {exc}")
        rn = self.nodes[nid].rn
        if rn is None:
            return
        role, term, conf = rn.role, rn.term, rn.conf_state()
        if (role, term) != before[:2]:
            self.info(f"{nid} became {role.value} at term {term}")
        if conf != before[2]:
            self.info(f"{nid} switched to configuration {fmt_conf(conf)}")

    def make_rawnode(self, n: _Node) -> RawNode:
        o = n.options
        cfg = Config(
            id=n.id,
            election_tick=int(o["election-tick"]),  # type: ignore[call-overload]
            heartbeat_tick=int(o["heartbeat-tick"]),  # type: ignore[call-overload]
            rng=_NoJitter(0),
            pre_vote=bool(o["pre-vote"]),
            check_quorum=bool(o["check-quorum"]),
            read_only=ReadOnlyOption(o["read-only"]),
            max_size_per_msg=int(o["max-size"]),  # type: ignore[call-overload]
            max_inflight_msgs=int(o["max-inflight"]),  # type: ignore[call-overload]
        )
        try:
            return RawNode(cfg, n.storage)
        except RaftError as exc:
            raise self.fail(f"cannot start node {n.id}: {exc}") from None

    def node_line(self, nid: str) -> str:
        n = self.nodes[nid]
        if n.rn is None:
            return f"{nid}: down"
        st = n.rn.status()
        cs = st.conf_state
        if nid in cs.voters or nid in cs.voters_outgoing:
            member = "voter"
        elif nid in cs.learners or nid in cs.learners_next:
            member = "learner"
        else:
            member = "non-member"
        if st.last_index >= st.first_index:
            log = f"log={st.first_index}..{st.last_index}"
        else:
            log = f"log=empty(first={st.first_index})"
        return (
            f"{nid}: {st.role.value} term={st.term} vote={st.vote or 'none'} "
            f"lead={st.leader or 'none'} commit={st.commit} applied={st.applied} "
            f"{log} ({member})"
        )

    # -- the network -----------------------------------------------------------------

    def cut(self, m: Message) -> bool:
        return m.frm in self.isolated or m.to in self.isolated

    def send(self, msgs: list[Message]) -> None:
        for m in msgs:
            if not self.cut(m):
                self.queue.append(m)

    def deliver(
        self,
        nid: str,
        mtype: type | None = None,
        count: int | None = None,
        duplicate: bool = False,
    ) -> bool:
        """Step the queued messages for ``nid`` into it, oldest first (at most
        ``count``); with ``duplicate`` a copy of each goes back to the end of
        the queue.  True if any message was taken."""
        picked = [
            i
            for i, m in enumerate(self.queue)
            if m.to == nid and (mtype is None or isinstance(m, mtype))
        ][:count]
        if not picked:
            return False
        mine = [self.queue[i] for i in picked]
        chosen = set(picked)
        self.queue = [m for i, m in enumerate(self.queue) if i not in chosen]
        if duplicate:
            self.queue.extend(mine)
        n = self.node(nid)
        if n.rn is None:
            for m in mine:
                self.emit(f"dropped ({nid} is down): {fmt_msg(m)}")
            return True
        self.emit(f"> {nid} receiving messages")
        self.indent += 1
        for m in mine:
            self.emit(fmt_msg(m))
            rn = n.rn
            self.watch(nid, lambda rn=rn, m=m: rn.step(m))  # type: ignore[misc]
        self.indent -= 1
        return True

    def drop(self, nid: str, mtype: type | None = None) -> None:
        keep: list[Message] = []
        for m in self.queue:
            if m.to == nid and (mtype is None or isinstance(m, mtype)):
                self.emit(f"dropped: {fmt_msg(m)}")
            else:
                keep.append(m)
        self.queue = keep

    # -- Ready handling -----------------------------------------------------------------

    def process_ready(self, nid: str) -> bool:
        n = self.node(nid)
        rn = n.rn
        if rn is None or not rn.has_ready():
            return False
        rd = rn.ready()
        self.emit(f"> {nid} handling Ready")
        self.indent += 1
        for line in fmt_ready(rd, self.cut):
            self.emit(line)
        # 1. Persist: snapshot, entries, hard state.
        if rd.snapshot is not None:
            n.storage.apply_snapshot(rd.snapshot)
        if rd.entries:
            n.storage.append(rd.entries)
        if rd.hard_state is not None:
            n.storage.set_hard_state(rd.hard_state)
        # 2. Send.
        self.send(rd.messages)
        # 3. Apply.
        if rd.snapshot is not None:
            n.applied = _decode_sm(rd.snapshot.data)
            n.applied_index = rd.snapshot.index
        for e in rd.committed_entries:
            if e.index != n.applied_index + 1:
                self.emit(f"SAFETY: {nid} applies index {e.index} after {n.applied_index}")
            n.applied_index = e.index
            if e.type is EntryType.NORMAL and e.data:
                n.applied.append((e.index, e.data.decode("utf-8", "backslashreplace")))
        # 4. Advance (membership changes take effect here).
        self.watch(nid, rn.advance)
        self.indent -= 1
        return True

    # -- commands ----------------------------------------------------------------------

    def cmd_log_level(self, args: Args) -> None:
        if len(args.pos) != 1 or args.pos[0] not in ("none", "info"):
            raise self.fail(f"usage: log-level none|info, got {args.pos}")
        self.log_level = args.pos[0]

    def cmd_add_nodes(self, args: Args) -> None:
        if len(args.pos) != 1 or not args.pos[0].isdigit() or int(args.pos[0]) < 1:
            raise self.fail("usage: add-nodes N [voters=(..)] [learners=(..)] [index=I] ...")
        count = int(args.pos[0])
        voters = args.take_ids("voters")
        learners = args.take_ids("learners")
        index = args.take_int("index", 1)
        options: dict[str, object] = {
            "pre-vote": args.take_bool("pre-vote", True),
            "check-quorum": args.take_bool("check-quorum", True),
            "election-tick": args.take_int("election-tick", 10),
            "heartbeat-tick": args.take_int("heartbeat-tick", 1),
            "max-size": args.take_int("max-size", 1 << 20),
            "max-inflight": args.take_int("max-inflight", 256),
            "read-only": args.take("read-only", "safe"),
        }
        if options["read-only"] not in ("safe", "lease"):
            raise self.fail("read-only must be safe or lease")
        if index < 1:
            raise self.fail("index must be >= 1")
        first = len(self.nodes) + 1
        for k in range(count):
            nid = str(first + k)
            storage = MemoryStorage()
            if voters is not None or learners is not None:
                cs = ConfState(voters=frozenset(voters or ()), learners=frozenset(learners or ()))
                meta = SnapshotMeta(index, 1, cs)
                storage.apply_snapshot(Snapshot(meta, _encode_sm([])))
                storage.set_hard_state(HardState(term=1, vote=None, commit=index))
            n = _Node(nid, dict(options), storage)
            self.nodes[nid] = n
            n.rn = self.make_rawnode(n)
            n.applied_index = n.rn.status().applied
            self.emit(self.node_line(nid) + " " + fmt_conf(n.rn.conf_state()))

    def cmd_campaign(self, args: Args) -> None:
        nid = self.one_id(args)
        self.watch(nid, self.live(nid).campaign)

    def _tick(self, nid: str, times: int) -> None:
        rn = self.live(nid)

        def go() -> None:
            for _ in range(times):
                rn.tick()

        self.watch(nid, go)

    def cmd_tick_election(self, args: Args) -> None:
        nid = self.one_id(args)
        self._tick(nid, int(self.node(nid).options["election-tick"]))  # type: ignore[call-overload]

    def cmd_tick_heartbeat(self, args: Args) -> None:
        nid = self.one_id(args)
        self._tick(nid, int(self.node(nid).options["heartbeat-tick"]))  # type: ignore[call-overload]

    def cmd_tick(self, args: Args) -> None:
        if len(args.pos) != 2 or not args.pos[1].isdigit():
            raise self.fail("usage: tick ID N")
        self._tick(args.pos[0], int(args.pos[1]))

    def cmd_propose(self, args: Args) -> None:
        if len(args.pos) != 2:
            raise self.fail("usage: propose ID DATA")
        nid, data = args.pos
        rn = self.live(nid)
        self.watch(nid, lambda: rn.propose(data.encode()))

    def cmd_propose_conf_change(self, args: Args) -> None:
        if not args.pos:
            raise self.fail("usage: propose-conf-change ID [vN] [lN] [rN] [transition=...]")
        nid, specs = args.pos[0], args.pos[1:]
        changes: list[ConfChangeSingle] = []
        makers = {"v": add_voter, "l": add_learner, "r": remove_node}
        for s in specs:
            if len(s) < 2 or s[0] not in makers:
                raise self.fail(f"bad change {s!r}: use vN (voter), lN (learner) or rN (remove)")
            changes.append(makers[s[0]](s[1:]))
        tr = args.take("transition", "auto")
        transitions = {
            "auto": Transition.AUTO,
            "joint": Transition.JOINT,
            "explicit": Transition.JOINT_EXPLICIT,
        }
        if tr not in transitions:
            raise self.fail(f"transition={tr!r} must be auto, joint or explicit")
        cc = ConfChange(tuple(changes), transitions[tr])
        rn = self.live(nid)
        self.watch(nid, lambda: rn.propose_conf_change(cc))

    def cmd_process_ready(self, args: Args) -> None:
        if not args.pos:
            raise self.fail("usage: process-ready ID...")
        for nid in args.pos:
            self.live(nid)
            self.process_ready(nid)

    def cmd_deliver_msgs(self, args: Args) -> None:
        drop = args.take_ids("drop") or []
        tname = args.take("type")
        mtype: type | None = None
        if tname is not None:
            if tname not in MESSAGE_TYPES:
                raise self.fail(f"unknown message type {tname!r}: one of {sorted(MESSAGE_TYPES)}")
            mtype = MESSAGE_TYPES[tname]
        count = args.take_int("count", 0) or None
        duplicate = args.take_bool("duplicate", False)
        for nid in drop + args.pos:
            self.node(nid)
        for nid in drop:
            self.drop(nid, mtype)
        targets = args.pos if (args.pos or drop) else self.sorted_ids()
        for nid in targets:
            self.deliver(nid, mtype, count, duplicate)

    def cmd_hold_msgs(self, args: Args) -> None:
        frm = args.take("from")
        tname = args.take("type")
        mtype: type | None = None
        if tname is not None:
            if tname not in MESSAGE_TYPES:
                raise self.fail(f"unknown message type {tname!r}: one of {sorted(MESSAGE_TYPES)}")
            mtype = MESSAGE_TYPES[tname]
        for nid in args.pos + ([frm] if frm is not None else []):
            self.node(nid)
        targets = set(args.pos) if args.pos else set(self.nodes)
        keep: list[Message] = []
        for m in self.queue:
            if (
                m.to in targets
                and (frm is None or m.frm == frm)
                and (mtype is None or isinstance(m, mtype))
            ):
                self.emit(f"held: {fmt_msg(m)}")
                self.held.append(m)
            else:
                keep.append(m)
        self.queue = keep

    def cmd_release_msgs(self, args: Args) -> None:
        if args.pos:
            raise self.fail("release-msgs takes no arguments")
        held, self.held = self.held, []
        for m in held:
            if self.cut(m):
                self.emit(f"dropped: {fmt_msg(m)}")
            else:
                self.emit(f"released: {fmt_msg(m)}")
                self.queue.append(m)

    def cmd_stabilize(self, args: Args) -> None:
        ids = self.sorted_ids(args.pos) if args.pos else self.sorted_ids()
        for nid in ids:
            self.node(nid)
        for _ in range(STABILIZE_ROUNDS):
            moved = False
            for nid in ids:
                moved |= self.process_ready(nid)
            for nid in ids:
                moved |= self.deliver(nid)
            if not moved:
                pending = [nid for nid in ids if self.live_or_none(nid, "commit_pending")]
                if not pending:
                    return
                for nid in pending:
                    self.emit(f"> {nid} flushing the pending commit")
                    self.watch(nid, self.live(nid).flush_commit)
        raise self.fail(f"the nodes did not settle within {STABILIZE_ROUNDS} rounds")

    def live_or_none(self, nid: str, attr: str) -> object:
        rn = self.node(nid).rn
        return None if rn is None else getattr(rn, attr)

    def cmd_flush_commit(self, args: Args) -> None:
        if not args.pos:
            raise self.fail("usage: flush-commit ID...")
        for nid in args.pos:
            rn = self.live(nid)
            self.emit(f"{nid}: commit pending={str(rn.commit_pending).lower()}")
            self.watch(nid, rn.flush_commit)

    def cmd_raft_log(self, args: Args) -> None:
        nid = self.one_id(args)
        st = self.node(nid).storage
        snap = st.snapshot()
        if snap.index:
            self.emit(f"snapshot {fmt_snapshot(snap)}")
        first, last = st.first_index(), st.last_index()
        if last < first:
            self.emit(f"log is empty: first index={first}, last index={last}")
            return
        for e in st.entries(first, last + 1):
            self.emit(fmt_entry(e))

    def cmd_raft_state(self, args: Args) -> None:
        if args.pos:
            raise self.fail("raft-state takes no arguments")
        for nid in self.sorted_ids():
            self.emit(self.node_line(nid))

    def cmd_status(self, args: Args) -> None:
        nid = self.one_id(args)
        self.emit(self.node_line(nid))
        rn = self.nodes[nid].rn
        if rn is None:
            return
        st = rn.status()
        self.emit(f"conf: {fmt_conf(st.conf_state)}")
        if st.lead_transferee is not None:
            self.emit(f"transferring leadership to {st.lead_transferee}")
        if st.progress:
            self.emit("progress:")
            for pid in self.sorted_ids(st.progress):
                p = st.progress[pid]
                flags = (" learner" if p.learner else "") + (
                    "" if p.recent_active or pid == nid else " inactive"
                )
                self.emit(f"  {pid}: {p.state.value} match={p.match} next={p.next}{flags}")

    def cmd_state_machine(self, args: Args) -> None:
        nid = self.one_id(args)
        n = self.node(nid)
        body = " ".join(f"{i}:{fmt_data(d.encode())}" for i, d in n.applied)
        self.emit(f"{nid}: applied={n.applied_index} [{body}]")

    def cmd_read_index(self, args: Args) -> None:
        if len(args.pos) != 2:
            raise self.fail("usage: read-index ID CTX")
        nid, ctx = args.pos
        rn = self.live(nid)
        self.watch(nid, lambda: rn.read_index(ctx.encode()))

    def cmd_transfer_leadership(self, args: Args) -> None:
        frm, to = args.take("from"), args.take("to")
        if frm is None or to is None or args.pos:
            raise self.fail("usage: transfer-leadership from=ID to=ID")
        rn = self.live(frm)
        self.watch(frm, lambda: rn.transfer_leader(to))

    def cmd_report_snapshot(self, args: Args) -> None:
        to = args.take("to")
        failed = args.take_bool("failed", False)
        if to is None or len(args.pos) != 1:
            raise self.fail("usage: report-snapshot ID to=ID [failed=true|false]")
        nid = args.pos[0]
        rn = self.live(nid)
        self.watch(nid, lambda: rn.report_snapshot(to, failed))

    def cmd_report_unreachable(self, args: Args) -> None:
        to = args.take("to")
        if to is None or len(args.pos) != 1:
            raise self.fail("usage: report-unreachable ID to=ID")
        nid = args.pos[0]
        rn = self.live(nid)
        self.watch(nid, lambda: rn.report_unreachable(to))

    def cmd_compact(self, args: Args) -> None:
        if len(args.pos) != 2 or not args.pos[1].isdigit():
            raise self.fail("usage: compact ID INDEX")
        nid, index = args.pos[0], int(args.pos[1])
        n = self.node(nid)
        rn = self.live(nid)
        if index > n.applied_index:
            raise self.fail(f"cannot compact through {index}: applied index is {n.applied_index}")
        st = n.storage
        if n.applied_index > st.snapshot().index:
            st.create_snapshot(n.applied_index, rn.conf_state(), _encode_sm(n.applied))
        st.compact(index)
        self.cmd_raft_log(Args([nid], {}, self.fail))

    def cmd_isolate(self, args: Args) -> None:
        nid = self.one_id(args)
        self.node(nid)
        self.isolated.add(nid)
        keep: list[Message] = []
        for m in self.queue:
            if self.cut(m):
                self.emit(f"dropped: {fmt_msg(m)}")
            else:
                keep.append(m)
        self.queue = keep

    def cmd_heal(self, args: Args) -> None:
        if args.pos:
            raise self.fail("heal takes no arguments")
        self.isolated.clear()

    def cmd_crash(self, args: Args) -> None:
        nid = self.one_id(args)
        self.live(nid)
        self.nodes[nid].rn = None

    def cmd_restart(self, args: Args) -> None:
        nid = self.one_id(args)
        n = self.node(nid)
        if n.rn is not None:
            raise self.fail(f"node {nid} is running; crash it first")
        n.rn = self.make_rawnode(n)
        # The state machine restarts from the snapshot; the committed log is
        # applied again from there.
        n.applied = _decode_sm(n.storage.snapshot().data)
        n.applied_index = n.storage.snapshot().index
        hs = n.storage.hard_state
        self.emit(
            f"{nid} restarted from storage: term={hs.term} vote={hs.vote or 'none'} "
            f"commit={hs.commit} snapshot={n.storage.snapshot().index} "
            f"last={n.storage.last_index()}"
        )
        self.emit(self.node_line(nid))
