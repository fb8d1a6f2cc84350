"""A whole cluster of cores in one process: simulated network, clock and disk.

Theory of operation
-------------------
Time is an integer (think milliseconds).  Everything that happens is an
event in one heap ordered by (time, sequence): a node's tick, the delivery
of a message, or a callback of the driver.  :meth:`Cluster.step` pops one
event, lets the node(s) it touched handle their Ready, and runs the
:class:`~liferaft.sim.checker.Checker`.  All randomness comes from one
``random.Random(seed)``, so a seed replays exactly.

The network can drop, duplicate, delay (and so reorder) messages and cut
links; a node can crash, losing every write it had not synced, and restart
from its simulated disk.  Scenario tests drive the same class directly.

The cluster is also the host of the lazy commit broadcast: a leader whose
commit index waits to be sent (RawNode.commit_pending) is flushed at once,
after a random delay up to a tick interval, or never (its next tick sends
it), as ``commit_flush`` says; by default each seed picks one, or mixes
them per pending commit, so every schedule the API allows is generated.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from liferaft.core import (
    AppendEntries,
    ConfChange,
    ConfChangeError,
    Config,
    Heartbeat,
    InstallSnapshot,
    MemoryStorage,
    Message,
    NodeId,
    NotLeaderError,
    ProposalDroppedError,
    RaftError,
    RawNode,
    ReadIndexRequest,
    ReadOnlyOption,
    RequestVote,
    Role,
    Snapshot,
    TimeoutNow,
    VoteResponse,
)

from .checker import Checker, SafetyViolation
from .disk import NodeDisk, SimDisk
from .ready import handle_ready
from .simnode import SimNode, StateMachine
from .trace import TraceRecorder


@dataclass
class NetConfig:
    """Fault knobs of the simulated network (probabilities are per message)."""

    min_latency: int = 1
    max_latency: int = 5
    drop: float = 0.0
    duplicate: float = 0.0
    long_delay: float = 0.0
    long_delay_max: int = 200
    # A copy delivered again very much later (a retransmission from a stale
    # connection): it must find a node that has long moved on harmless.
    replay: float = 0.0
    replay_max: int = 3000


@dataclass
class TimingConfig:
    tick_interval: int = 10
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    read_only: ReadOnlyOption = ReadOnlyOption.SAFE
    max_inflight: int = 64
    max_size_per_msg: int = 64 * 1024


class Cluster:
    """N simulated nodes; ``ids`` are the initial voters."""

    def __init__(
        self,
        ids: Iterable[NodeId],
        seed: int,
        net: NetConfig | None = None,
        timing: TimingConfig | None = None,
        check: bool = True,
        snapshot_every: int = 0,
        snapshot_keep: int = 5,
        disk_factory: Callable[[NodeId, MemoryStorage], NodeDisk] | None = None,
        trace: TraceRecorder | None = None,
    ) -> None:
        self.seed = seed
        # Records the run for the replay viewer (trace.py); fixed for the
        # cluster's life, since traced messages travel with their ids.
        self.trace = trace
        self.rng = random.Random(seed)
        self.net = net or NetConfig()
        self.timing = timing or TimingConfig()
        if trace is not None:
            t = self.timing
            trace.set_timing(t.tick_interval, t.election_tick, t.heartbeat_tick)
        self.checker = Checker() if check else None
        self.snapshot_every = snapshot_every
        # Builds each node's disk; the default keeps everything in memory.
        self.disk_factory = disk_factory or (lambda nid, initial: SimDisk(initial))
        self.snapshot_keep = snapshot_keep
        self.now = 0
        if self.checker is not None:
            # Every checker message then says when it fired ("... (t=NNN)").
            self.checker.clock = lambda: self.now
        self._seq = 0
        self._events: list[tuple[int, int, int, object]] = []
        self.nodes: dict[NodeId, SimNode] = {}
        # Directed links that drop everything: (frm, to).
        self.cut: set[tuple[NodeId, NodeId]] = set()
        self.msg_count = 0
        self.rpc_count = 0
        self.bytes_sent = 0
        self.steps = 0
        self.commits = 0
        self.crash_mid_ready = 0.0
        # Probability of a power loss while a node saves a vote it grants, then
        # an instant reboot and a rival candidate (see _handle_ready).
        self.bounce_after_vote = 0.0
        # Probability of crashing a new leader soon after it wins (Figure 8).
        self.crash_after_election = 0.0
        # Probability of leaving an event's Readies for later, so the next
        # local request (a read, a proposal) lands before them, as it does in
        # the runtime, which ticks, steps and takes requests in one pass.
        self.defer_ready = 0.0
        self._dirty: set[NodeId] = set()
        self.on_apply_hook: Callable[[NodeId, int, bytes], None] | None = None
        # index -> (proposer, term, data) of proposals not yet acknowledged.
        self.proposals: dict[int, tuple[NodeId, int, bytes]] = {}
        self.acked = 0
        # False plants the "forget-vote" bug in every disk (see bugs.py).
        self.disk_persists_vote = True
        # How this host flushes a pending commit: "now", "delay" (up to a
        # tick interval), "tick" (never: the core's next tick does), or
        # "mixed" (one of the three each time).  Its own random stream,
        # so the choice does not shift the rest of the seed's.
        self.flush_rng = random.Random(seed * 1_000_003 + 17)
        self.commit_flush = self.flush_rng.choice(("mixed", "mixed", "now", "delay", "tick"))
        self._flush_due: set[tuple[NodeId, int]] = set()
        self.voters0 = list(ids)
        for nid in self.voters0:
            self.add_node(nid, MemoryStorage.bootstrap(self.voters0))

    # -- event heap ------------------------------------------------------------------

    _TICK, _MSG, _CALL = 0, 1, 2

    def _push(self, at: int, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, payload))

    def call_at(self, at: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` at simulated time ``at`` (a driver hook)."""
        self._push(at, self._CALL, fn)

    # -- membership of the simulation ------------------------------------------------------

    def add_node(self, nid: NodeId, storage: MemoryStorage | None = None) -> SimNode:
        """Create (and start) a node; a joiner starts with empty storage."""
        initial = storage if storage is not None else MemoryStorage()
        node = SimNode(nid, self.disk_factory(nid, initial))
        node.disk.persist_vote = self.disk_persists_vote
        self.nodes[nid] = node
        self.start(nid)
        return node

    def start(self, nid: NodeId) -> None:
        node = self.nodes[nid]
        if node.alive:
            return
        store = node.disk.recover()
        t = self.timing
        cfg = Config(
            id=nid,
            election_tick=t.election_tick,
            heartbeat_tick=t.heartbeat_tick,
            rng=random.Random(self.rng.getrandbits(64)),
            pre_vote=t.pre_vote,
            check_quorum=t.check_quorum,
            read_only=t.read_only,
            max_inflight_msgs=t.max_inflight,
            max_size_per_msg=t.max_size_per_msg,
            # A restart of a node that may have granted a lease keeps it.
            quiet_after_start=t.read_only is ReadOnlyOption.LEASE_BASED and node.lives > 0,
        )
        node.rn = RawNode(cfg, store)
        node.sm = StateMachine()
        node.sm.restore(store.snapshot().data)
        node.sm.index = store.snapshot().index
        node.pending_reads = {}
        node.commit_seen = node.disk.durable_commit()
        if self.checker is not None and node.promised is not None:
            self.checker.on_restart(nid, node.rn.raft.term, node.rn.raft.vote, node.promised)
        node.alive = True
        node.lives += 1
        first_tick = self.now + self.rng.randrange(1, t.tick_interval + 1)
        self._push(first_tick, self._TICK, (nid, node.lives))
        self._dirty.add(nid)
        if self.trace is not None:
            self.trace.start(nid, first_tick, node.lives > 1, store, self.now)

    def crash(self, nid: NodeId) -> None:
        """Kill a node: unsynced writes are lost (a random prefix survives)."""
        node = self.nodes[nid]
        if not node.alive:
            return
        node.alive = False
        node.rn = None
        node.disk.crash(self.rng)
        self._dirty.discard(nid)
        if self.trace is not None:
            self.trace.crash(nid, self.now)
            if isinstance(node.disk, SimDisk):
                # A crash mid-save leaves a torn write on the disk: draw the
                # log the disk now holds (SimDisk's live store is exactly
                # what is durable), not the log of before, while it is down.
                # A real disk is read back only by its restart (reading it
                # now would reopen its files).
                self.trace.sync_log(nid, node.disk.live, self.now)

    def restart(self, nid: NodeId) -> None:
        self.crash(nid)
        self.start(nid)

    # -- network -------------------------------------------------------------------

    def disconnect(self, nid: NodeId) -> None:
        for other in self.nodes:
            if other != nid:
                self.cut.add((nid, other))
                self.cut.add((other, nid))
        if self.trace is not None:
            self.trace.net_cut(self.cut, self.now)

    def connect(self, nid: NodeId) -> None:
        """Restore every link to and from ``nid`` (even to nodes cut off separately)."""
        self.cut = {(a, b) for (a, b) in self.cut if a != nid and b != nid}
        if self.trace is not None:
            self.trace.net_cut(self.cut, self.now)

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Only nodes in the same group can talk."""
        gid = {}
        groups_list = [list(g) for g in groups]
        for i, g in enumerate(groups_list):
            for n in g:
                gid[n] = i
        self.cut = {
            (a, b)
            for a in self.nodes
            for b in self.nodes
            if a != b and (a not in gid or b not in gid or gid[a] != gid[b])
        }
        if self.trace is not None:
            # A node named in no group talks to nobody: a group of its own.
            alone = [[n] for n in self.nodes if n not in gid]
            self.trace.net_groups([*groups_list, *alone], self.now)

    def heal(self) -> None:
        self.cut.clear()
        if self.trace is not None:
            self.trace.net_groups([list(self.nodes)], self.now)

    def send(self, m: Message) -> None:
        self.msg_count += 1
        if isinstance(m, VoteResponse) and m.granted and not m.pre_vote:
            self.nodes[m.frm].promised = (m.term, m.to)
        elif isinstance(m, AppendEntries) and m.entries and self.checker is not None:
            # Entries that went out exist for their receivers, on disk or not.
            self.checker.on_persist(m.frm, m.prev_term, list(m.entries))
        if isinstance(m, _REQUESTS):
            self.rpc_count += 1
        if isinstance(m, AppendEntries):
            self.bytes_sent += sum(len(e.data) for e in m.entries)
        elif isinstance(m, InstallSnapshot):
            self.bytes_sent += len(m.snapshot.data)
        net = self.net
        rng = self.rng
        tr = self.trace
        # A traced message travels as (message, id); the id names its copies.
        mid = 0 if tr is None else tr.send(m, self.now)
        if (m.frm, m.to) in self.cut or (net.drop and rng.random() < net.drop):
            if tr is not None:
                tr.drop(mid, "cut" if (m.frm, m.to) in self.cut else "loss", self.now)
            if isinstance(m, InstallSnapshot):
                self._report_snapshot(m, failed=True)
            return
        copies = 2 if net.duplicate and rng.random() < net.duplicate else 1
        for i in range(copies):
            delay = rng.randint(net.min_latency, net.max_latency)
            if net.long_delay and rng.random() < net.long_delay:
                delay += rng.randint(0, net.long_delay_max)
            if tr is None:
                self._push(self.now + delay, self._MSG, m)
            else:
                self._push(self.now + delay, self._MSG, (m, tr.dup(mid, self.now) if i else mid))
        # A snapshot streams for a long time and is retried, so a late copy of
        # one is the common case, not the exception.
        replay = min(0.5, net.replay * 50) if isinstance(m, InstallSnapshot) else net.replay
        if replay and rng.random() < replay:
            at = self.now + rng.randint(net.long_delay_max, net.replay_max)
            self._push(at, self._MSG, m if tr is None else (m, tr.dup(mid, self.now)))

    # -- stepping ------------------------------------------------------------------

    def step(self) -> bool:
        """Process one event.  Returns False when nothing is scheduled."""
        if not self._events:
            return False
        at, _, kind, payload = heapq.heappop(self._events)
        self.now = at
        self.steps += 1
        if kind == self._TICK:
            nid, life = cast(tuple[NodeId, int], payload)
            node = self.nodes.get(nid)
            if node is not None and node.alive and node.lives == life:
                assert node.rn is not None
                node.rn.tick()
                self._dirty.add(nid)
                self._push(at + self.timing.tick_interval, self._TICK, (nid, life))
                if self.trace is not None:
                    # Seen at once, not when the (maybe deferred) Ready is
                    # handled: a campaign starts exactly at its deadline.
                    self.trace.tick(nid, at + self.timing.tick_interval)
                    self.trace.observe(nid, node.rn, at)
        elif kind == self._MSG:
            tr = self.trace
            if tr is None:
                m: Message = payload  # type: ignore[assignment]
            else:
                m, mid = cast(tuple[Message, int], payload)
            node = self.nodes.get(m.to)
            delivered = node is not None and node.alive and (m.frm, m.to) not in self.cut
            if tr is not None:
                if delivered:
                    tr.deliver(mid, at)
                else:
                    why = "cut" if node is not None and node.alive else "crashed"
                    tr.drop(mid, why, at)
            if delivered:
                assert node is not None and node.rn is not None
                node.rn.step(m)
                self._dirty.add(m.to)
                if tr is not None:
                    tr.observe(m.to, node.rn, at)
            if isinstance(m, InstallSnapshot):
                self._report_snapshot(m, failed=not delivered)
        else:
            payload()  # type: ignore[operator]
        if self.defer_ready and self.rng.random() < self.defer_ready:
            return True
        self.process_ready()
        return True

    def wake(self, nid: NodeId) -> None:
        """A driver touched ``nid``'s core directly: handle its Ready next."""
        self._dirty.add(nid)

    def rival(self, voter: NodeId, candidate: NodeId | None, term: int) -> None:
        """Another node that has not yet reached ``term`` campaigns at once: it
        will ask ``voter`` for its vote in that term."""
        rivals = [
            n
            for n, sn in sorted(self.nodes.items())
            if n not in (voter, candidate) and sn.alive and sn.rn is not None
            and sn.rn.term < term
        ]
        if rivals:
            nid = self.rng.choice(rivals)
            rn = self.nodes[nid].rn
            assert rn is not None
            rn.campaign()
            self._dirty.add(nid)

    def crash_later(self, nid: NodeId, delay: int) -> None:
        life = self.nodes[nid].lives

        def crash() -> None:
            if self.nodes[nid].lives == life and self.crash_after_election:
                self.crash(nid)

        self.call_at(self.now + delay, crash)

    def _report_snapshot(self, m: InstallSnapshot, failed: bool) -> None:
        """Play the transport's part of the snapshot contract: tell the sender
        whether the snapshot got through (RawNode.report_snapshot)."""
        sender = self.nodes.get(m.frm)
        if sender is not None and sender.alive and sender.rn is not None:
            sender.rn.report_snapshot(m.to, failed)
            self._dirty.add(m.frm)

    def run_for(self, duration: int) -> None:
        end = self.now + duration
        while self._events and self._events[0][0] <= end:
            self.step()
        self.now = max(self.now, end)

    def run_until(
        self, cond: Callable[[], bool], timeout: int, max_steps: int = 1_000_000
    ) -> bool:
        """Step until ``cond()`` holds; False once ``timeout`` time units (or
        ``max_steps`` events, which catches message storms) have passed."""
        end = self.now + timeout
        budget = max_steps
        while not cond():
            if not self._events or self._events[0][0] > end or budget <= 0:
                self.now = max(self.now, end)
                return cond()
            self.step()
            budget -= 1
        return True

    def process_ready(self) -> None:
        while self._dirty:
            nid = min(self._dirty)
            self._dirty.discard(nid)
            node = self.nodes[nid]
            if not node.alive:
                continue
            rn = node.rn
            assert rn is not None
            rounds = 0
            while node.alive and rn.has_ready():
                self._handle_ready(node, rn)
                rounds += 1
                if rounds > 10_000:
                    raise SafetyViolation(
                        f"livelock: {nid} produced {rounds} Readies in a row (t={self.now})"
                    )
            if node.alive and node.rn is not None and node.rn.commit_pending:
                self._flush_later(node)
            if self.trace is not None and node.alive and node.rn is not None:
                # node.rn, not rn: a bounce in the Ready may have restarted it.
                self.trace.observe(nid, node.rn, self.now)

    def _flush_later(self, node: SimNode) -> None:
        """Flush ``node``'s pending commit as this host's policy says."""
        key = (node.id, node.lives)
        if key in self._flush_due:
            return
        mode = self.commit_flush
        if mode == "mixed":
            mode = self.flush_rng.choice(("now", "delay", "tick"))
        if mode == "tick":
            return  # the next tick sends it
        if mode == "now":
            assert node.rn is not None
            node.rn.flush_commit()
            self._dirty.add(node.id)
            return
        self._flush_due.add(key)

        def flush() -> None:
            self._flush_due.discard(key)
            if node.alive and node.lives == key[1] and node.rn is not None:
                node.rn.flush_commit()
                self._dirty.add(node.id)

        self.call_at(self.now + self.flush_rng.randint(1, self.timing.tick_interval), flush)

    def _handle_ready(self, node: SimNode, rn: RawNode) -> None:
        handle_ready(self, node, rn)

    def live_cores(self) -> dict[NodeId, RawNode]:
        return {n: node.rn for n, node in self.nodes.items() if node.alive and node.rn}

    # -- client operations -------------------------------------------------------------

    def leaders(self) -> list[NodeId]:
        return [
            n.id
            for n in self.nodes.values()
            if n.alive and n.rn is not None and n.rn.role is Role.LEADER
        ]

    def leader(self) -> NodeId | None:
        """The live leader with the highest term, if any."""
        best: tuple[int, NodeId] | None = None
        for nid in self.leaders():
            rn = self.nodes[nid].rn
            assert rn is not None
            if best is None or rn.term > best[0]:
                best = (rn.term, nid)
        return best[1] if best else None

    def propose(self, nid: NodeId, data: bytes) -> int | None:
        """Propose at ``nid``; returns the index or None if it was refused."""
        node = self.nodes[nid]
        if not node.alive or node.rn is None:
            return None
        try:
            idx = node.rn.propose(data)
        except (NotLeaderError, ProposalDroppedError):
            return None
        self.proposals[idx] = (nid, node.rn.term, data)
        self._dirty.add(nid)
        self.process_ready()
        return idx

    def propose_conf_change(self, nid: NodeId, cc: ConfChange) -> int | None:
        node = self.nodes[nid]
        if not node.alive or node.rn is None:
            return None
        try:
            idx = node.rn.propose_conf_change(cc)
        except (NotLeaderError, ProposalDroppedError, ConfChangeError):
            return None
        self._dirty.add(nid)
        self.process_ready()
        return idx

    def read(self, nid: NodeId) -> bool:
        """Start a ReadIndex at ``nid``; its answer is checked when it arrives."""
        node = self.nodes[nid]
        if not node.alive or node.rn is None:
            return False
        free = [c for c in READ_CONTEXTS if c not in node.pending_reads]
        if not free:
            return False
        ctx = free[0]
        try:
            node.rn.read_index(ctx)
        except RaftError:
            return False
        chk = self.checker
        node.pending_reads[ctx] = max(chk.max_acked, chk.max_read) if chk else 0
        self._dirty.add(nid)
        self.process_ready()
        return True

    def transfer(self, nid: NodeId, to: NodeId) -> bool:
        node = self.nodes[nid]
        if not node.alive or node.rn is None:
            return False
        try:
            node.rn.transfer_leader(to)
        except RaftError:
            return False
        self._dirty.add(nid)
        self.process_ready()
        return True

    def take_snapshot(self, nid: NodeId) -> Snapshot | None:
        """Snapshot ``nid``'s state machine at its applied index and compact."""
        node = self.nodes[nid]
        if not node.alive or node.rn is None:
            return None
        idx = node.sm.index
        store = node.disk.live
        if idx <= store.snapshot().index:
            return None
        snap = node.disk.create_snapshot(idx, node.rn.conf_state(), node.sm.snapshot())
        node.disk.compact(max(store.first_index(), idx - self.snapshot_keep))
        if self.trace is not None:
            self.trace.sync_log(nid, node.disk.live, self.now)
        return snap

    # -- observation -------------------------------------------------------------------

    def applied_value(self, nid: NodeId, index: int) -> bytes | None:
        return self.nodes[nid].sm.values.get(index)

    def rn(self, nid: NodeId) -> RawNode:
        rn = self.nodes[nid].rn
        if rn is None:
            raise RuntimeError(f"{nid} is down")
        return rn



# The read contexts every node uses, each again as soon as its last read is
# answered: the same names on every node and in every life of a node, as a
# runtime whose counter restarts with the process would.  The core must bind
# answers to requests, never to these names.
READ_CONTEXTS = (b"r0", b"r1", b"r2")

# Messages that start an exchange (what the MIT lab counts as an RPC).
_REQUESTS = (AppendEntries, Heartbeat, RequestVote, InstallSnapshot, TimeoutNow, ReadIndexRequest)
