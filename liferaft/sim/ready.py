"""One simulated node's handling of a Ready, in the core's contract order.

This is the simulator's model of the runtime's Ready loop
(liferaft/runtime/node.py) and of DiskStorage's persist: send what may go
early, persist (perhaps losing power part-way, exactly as the real storage
would lose it), send, apply and check, advance.  Every step reports to the
:class:`~liferaft.sim.checker.Checker`, which is how a broken rule is caught
the moment it happens.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from liferaft.core import (
    EntryType,
    MemoryStorage,
    Message,
    NodeId,
    RaftError,
    RawNode,
    Role,
    Snapshot,
)

from .checker import Checker, SafetyViolation
from .disk import DiskCrashed
from .simnode import SimNode
from .trace import TraceRecorder


class ReadyHost(Protocol):
    """What handling a Ready needs of the simulated cluster (sim.cluster.Cluster)."""

    rng: random.Random
    now: int
    checker: Checker | None
    trace: TraceRecorder | None
    # Fault knobs (probabilities).
    bounce_after_vote: float
    crash_mid_ready: float
    crash_after_election: float
    snapshot_every: int
    # Bookkeeping of client proposals and applies.
    proposals: dict[int, tuple[NodeId, int, bytes]]
    commits: int
    acked: int
    on_apply_hook: Callable[[NodeId, int, bytes], None] | None

    def send(self, m: Message) -> None: ...
    def crash(self, nid: NodeId) -> None: ...
    def start(self, nid: NodeId) -> None: ...
    def rival(self, voter: NodeId, candidate: NodeId | None, term: int) -> None: ...
    def crash_later(self, nid: NodeId, delay: int) -> None: ...
    def live_cores(self) -> dict[NodeId, RawNode]: ...
    def take_snapshot(self, nid: NodeId) -> Snapshot | None: ...


def handle_ready(c: ReadyHost, node: SimNode, rn: RawNode) -> None:
    """Take ``rn``'s Ready and handle it as the runtime would, under ``c``'s faults."""
    chk = c.checker
    old_commit = node.commit_seen
    rd = rn.ready()
    disk = node.disk
    # 0. Messages that need nothing durable go out first, as early as the
    # contract allows: a leader's appends while it persists its own
    # entries (send_first, thesis §10.2.1), and anything of a Ready that
    # need not be synced.  A crash below then finds them sent.
    early = rd.send_first or not rd.must_sync
    if early:
        for m in rd.messages:
            c.send(m)
    # 1. Persist, exactly as DiskStorage.save does (disk.py), perhaps
    # losing power part-way.
    if chk is not None and rd.snapshot is not None:
        chk.on_install(node.id, rd.snapshot.index, old_commit)
    prev_term = 0
    if rd.entries:
        first = rd.entries[0].index
        if rd.snapshot is not None:
            prev_term = rd.snapshot.term if first == rd.snapshot.index + 1 else 0
        else:
            prev_term = _term_or_zero(disk.live, first - 1)
    hs = rd.hard_state
    # Power loss just as a vote is granted, the moment a lost vote does
    # the most harm; the node reboots at once and a rival candidate may
    # ask it for the same term.
    bounce = (
        c.bounce_after_vote > 0
        and hs is not None
        and hs.vote not in (None, node.id)
        and (hs.term, hs.vote) != node.voted
        and c.rng.random() < c.bounce_after_vote
    )
    if bounce or (
        c.crash_mid_ready
        and (rd.must_sync or hs is not None)
        and c.rng.random() < c.crash_mid_ready
    ):
        disk.arm_crash(c.rng)
    try:
        disk.save(hs, rd.entries, rd.snapshot, rd.sync_commit)
    except DiskCrashed:
        c.crash(node.id)
        if chk is not None and rd.entries:
            # Judged by what reached the disk: entries that never did, and
            # were never sent, never existed for anyone else.
            store = disk.recover()
            kept = [
                e for e in rd.entries
                if store.first_index() <= e.index <= store.last_index()
                and store.term(e.index) == e.term
            ]
            if kept:
                chk.on_persist(node.id, prev_term, kept)
        if bounce:
            assert hs is not None
            c.start(node.id)
            c.rival(node.id, hs.vote, hs.term)
        return
    if c.trace is not None:
        c.trace.sync_log(node.id, disk.live, c.now)
    if hs is not None:
        node.voted = (hs.term, hs.vote)
    if chk is not None and rd.entries:
        chk.on_persist(node.id, prev_term, rd.entries)
    # The commit index this node now knows (durable or not): what it
    # knows is what it acts on, so the checkers hold it to that.
    new_commit = max(rn.raft.log.committed, rd.snapshot.index if rd.snapshot else 0)
    if chk is not None:
        if new_commit > old_commit:
            chk.on_commit(node.id, rn, old_commit, new_commit)
        if rd.soft_state is not None and rd.soft_state.role is Role.LEADER:
            chk.on_leader(rn, c.now, node.lives)
    if (
        c.crash_after_election
        and rd.soft_state is not None
        and rd.soft_state.role is Role.LEADER
        and c.rng.random() < c.crash_after_election
    ):
        c.crash_later(node.id, c.rng.randint(0, 20))
    node.commit_seen = max(old_commit, new_commit)
    # 2. Send.
    if not early:
        for m in rd.messages:
            c.send(m)
    # 3. Apply.
    sm = node.sm
    if rd.snapshot is not None:
        sm.restore(rd.snapshot.data)
        sm.index = rd.snapshot.index
    for e in rd.committed_entries:
        if e.index != sm.index + 1:
            msg = (
                f"state machine safety: {node.id} applies index {e.index} after {sm.index} "
                f"(t={c.now})"
            )
            if chk is not None:
                chk.fail(msg)
            raise SafetyViolation(msg)
        data = e.data if e.type is EntryType.NORMAL else b""
        sm.apply(e.index, data)
        c.commits += 1
        if chk is not None:
            chk.on_apply(node.id, e)
        if c.on_apply_hook is not None and data:
            c.on_apply_hook(node.id, e.index, data)
        # An entry applied by the node that proposed it, in the term it
        # proposed it, is acknowledged to the client.
        prop = c.proposals.get(e.index)
        if prop is not None and prop[0] == node.id and prop[1] == e.term and prop[2] == e.data:
            del c.proposals[e.index]
            if chk is not None:
                chk.on_ack(e.index, e.term, e.data)
            c.acked += 1
    for rs in rd.read_states:
        floor = node.pending_reads.pop(rs.ctx, None)
        if floor is None:
            msg = (
                f"read safety: {node.id} got an answer to a read it never asked ({rs.ctx!r}) "
                f"(t={c.now})"
            )
            if chk is not None:
                chk.fail(msg)
            raise SafetyViolation(msg)
        if chk is not None:
            # Served now from what is applied, or once rs.index is.
            chk.on_read(node.id, rs.index, floor, max(rs.index, sm.index))
    # 4. Advance.
    rn.advance()
    if chk is not None and rn.role is Role.LEADER:
        chk.on_leader_progress(rn, c.live_cores())
    log = rn.raft.log
    if not log.applied <= log.committed <= log.last_index():
        msg = (
            f"log invariant: {node.id} has applied={log.applied} committed={log.committed} "
            f"last_index={log.last_index()} (t={c.now})"
        )
        if chk is not None:
            chk.fail(msg)
        raise SafetyViolation(msg)
    if c.snapshot_every and sm.index - disk.live.snapshot().index >= c.snapshot_every:
        c.take_snapshot(node.id)

def _term_or_zero(store: MemoryStorage, i: int) -> int:
    try:
        return store.term(i)
    except RaftError:
        return 0
