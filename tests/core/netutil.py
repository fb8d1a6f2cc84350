"""A tiny deterministic network of RawNodes for the core's unit tests.

Every node keeps its own :class:`MemoryStorage`.  Handling a node's Ready
follows the RawNode contract literally: persist the snapshot, the entries and
the hard state to that node's storage, queue the messages, record the
committed entries as "applied", then ``advance()``.  Messages sit in one FIFO
queue until :meth:`Network.deliver` hands them over, so a test decides exactly
what arrives, what is dropped and in which order.  Nothing here reads a clock
or global randomness: each node's ``rng`` is seeded from the network seed and
its id.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

from liferaft.core import (
    AppendEntries,
    AppendResponse,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    RawNode,
    ReadState,
    Ready,
    RequestVote,
    Role,
    Snapshot,
    SnapshotMeta,
    VoteResponse,
)

MessageFilter = Callable[[Message], bool]


def make_config(nid: str, seed: int = 0, **kw: Any) -> Config:
    """A Config with a per-node deterministic rng (str seeds hash stably)."""
    kw.setdefault("election_tick", 10)
    kw.setdefault("heartbeat_tick", 1)
    return Config(id=nid, rng=random.Random(f"{seed}:{nid}"), **kw)


def persist(storage: MemoryStorage, rd: Ready) -> None:
    """Step 1 of the Ready contract: snapshot, then entries, then hard state."""
    storage.save(rd.hard_state, rd.entries, rd.snapshot)


def drain(node: RawNode, storage: MemoryStorage) -> Ready:
    """Handle one Ready of a stand-alone node (persist, then advance) and return
    it so the test can inspect its messages.  Returns an empty Ready if the
    node had nothing to do."""
    if not node.has_ready():
        return Ready()
    rd = node.ready()
    persist(storage, rd)
    node.advance()
    return rd


def user_data(ents: Iterable[Entry]) -> list[bytes]:
    """The payloads of normal, non-empty entries (no-ops and conf changes dropped)."""
    return [e.data for e in ents if e.type is EntryType.NORMAL and e.data]


class Network:
    """N RawNodes over MemoryStorage with a controllable, deterministic network."""

    def __init__(
        self,
        ids: Iterable[str],
        *,
        voters: Iterable[str] | None = None,
        learners: Iterable[str] = (),
        seed: int = 0,
        **cfg: Any,
    ) -> None:
        ids = list(ids)
        self.seed = seed
        self.cfg = cfg
        self.nodes: dict[str, RawNode] = {}
        self.storages: dict[str, MemoryStorage] = {}
        # Everything each node applied, in order (entries and snapshots).
        self.applied: dict[str, list[Entry]] = {}
        self.snapshots: dict[str, list[Snapshot]] = {}
        self.read_states: dict[str, list[ReadState]] = {}
        self.readies: dict[str, list[Ready]] = {}
        self.queue: list[Message] = []
        self.delivered: list[Message] = []
        self.dropped: list[Message] = []
        self.isolated: set[str] = set()
        self.cut_links: set[tuple[str, str]] = set()
        self.drop_filter: MessageFilter | None = None
        vs = list(voters) if voters is not None else list(ids)
        learner_ids = list(learners)
        for nid in ids:
            st = MemoryStorage.bootstrap(vs)
            if learner_ids:
                cs = ConfState(voters=frozenset(vs), learners=frozenset(learner_ids))
                st.apply_snapshot(Snapshot(SnapshotMeta(1, 1, cs)))
            self.add(nid, st)

    # -- membership of the harness ------------------------------------------------

    def add(self, nid: str, storage: MemoryStorage | None = None, **overrides: Any) -> RawNode:
        """Start node ``nid`` on ``storage`` (empty storage: a joining node)."""
        st = storage if storage is not None else MemoryStorage()
        kw = {**self.cfg, **overrides}
        node = RawNode(make_config(nid, self.seed, **kw), st)
        self.nodes[nid] = node
        self.storages[nid] = st
        self.applied.setdefault(nid, [])
        self.snapshots.setdefault(nid, [])
        self.read_states.setdefault(nid, [])
        self.readies.setdefault(nid, [])
        return node

    def restart(self, nid: str, **overrides: Any) -> RawNode:
        """Crash ``nid`` (dropping unpersisted state) and start it on its storage.

        The restarted state machine is rebuilt, so the applied record restarts.
        """
        self.applied[nid] = []
        self.queue = [m for m in self.queue if m.to != nid and m.frm != nid]
        return self.add(nid, self.storages[nid], **overrides)

    # -- driving --------------------------------------------------------------------

    def handle_ready(self, nid: str) -> Ready | None:
        node = self.nodes[nid]
        if not node.has_ready():
            return None
        rd = node.ready()
        persist(self.storages[nid], rd)
        self.queue.extend(rd.messages)
        if rd.snapshot is not None:
            self.snapshots[nid].append(rd.snapshot)
        self.applied[nid].extend(rd.committed_entries)
        self.read_states[nid].extend(rd.read_states)
        self.readies[nid].append(rd)
        node.advance()
        return rd

    def flush(self) -> bool:
        """Handle every pending Ready (repeatedly); True if any was handled."""
        any_ready = False
        progressed = True
        while progressed:
            progressed = False
            for nid in sorted(self.nodes):
                if self.handle_ready(nid) is not None:
                    progressed = any_ready = True
        return any_ready

    def is_dropped(self, m: Message) -> bool:
        if m.frm in self.isolated or m.to in self.isolated:
            return True
        if (m.frm, m.to) in self.cut_links:
            return True
        return self.drop_filter is not None and self.drop_filter(m)

    def deliver(self, only: MessageFilter | None = None) -> list[Message]:
        """Deliver queued messages (those matching ``only``, if given) once, in
        FIFO order; messages produced meanwhile wait for the next call."""
        batch, rest = [], []
        for m in self.queue:
            (batch if only is None or only(m) else rest).append(m)
        self.queue = rest
        out = []
        for m in batch:
            if m.to not in self.nodes or self.is_dropped(m):
                self.dropped.append(m)
                continue
            self.delivered.append(m)
            self.nodes[m.to].step(m)
            out.append(m)
        return out

    def take(self, only: MessageFilter | None = None) -> list[Message]:
        """Remove queued messages (matching ``only``) without delivering them."""
        taken = [m for m in self.queue if only is None or only(m)]
        self.queue = [m for m in self.queue if not (only is None or only(m))]
        return taken

    def stabilize(self, max_rounds: int = 500) -> None:
        """Flush and deliver until there is nothing left to do.  When the
        network is quiet the host flushes the leaders' pending commits
        (RawNode.flush_commit), as a runtime does within its bound."""
        for _ in range(max_rounds):
            self.flush()
            if not self.queue:
                pending = [rn for rn in self.nodes.values() if rn.commit_pending]
                if not pending:
                    return
                for rn in pending:
                    rn.flush_commit()
                continue
            self.deliver()
        raise AssertionError("network did not stabilize")

    def tick(self, nids: Iterable[str] | None = None, n: int = 1) -> None:
        """Tick ``nids`` (default: all) ``n`` times, stabilizing after each round."""
        targets = sorted(self.nodes) if nids is None else list(nids)
        for _ in range(n):
            for nid in targets:
                self.nodes[nid].tick()
            self.stabilize()

    def elect(self, nid: str) -> RawNode:
        """Make ``nid`` campaign and run the election to completion."""
        self.nodes[nid].campaign()
        self.stabilize()
        node = self.nodes[nid]
        assert node.role is Role.LEADER, f"{nid} failed to become leader: {node.role}"
        return node

    def propose(self, nid: str, data: bytes) -> int:
        idx = self.nodes[nid].propose(data)
        self.stabilize()
        return idx

    # -- partitions -------------------------------------------------------------------

    def isolate(self, nid: str) -> None:
        self.isolated.add(nid)

    def cut(self, a: str, b: str) -> None:
        self.cut_links.add((a, b))
        self.cut_links.add((b, a))

    def heal(self) -> None:
        self.isolated.clear()
        self.cut_links.clear()
        self.drop_filter = None

    # -- observation --------------------------------------------------------------------

    def leaders(self) -> list[str]:
        return sorted(n for n, rn in self.nodes.items() if rn.role is Role.LEADER)

    def data(self, nid: str) -> list[bytes]:
        return user_data(self.applied[nid])

    def log_terms(self, nid: str) -> list[tuple[int, int]]:
        """(index, term) of every entry in nid's raft log, stable and unstable."""
        log = self.nodes[nid].raft.log
        return [(i, log.term(i)) for i in range(log.first_index(), log.last_index() + 1)]


# -- stand-alone nodes for table tests -------------------------------------------------


def node_with_log(
    nid: str = "n1",
    voters: Iterable[str] = ("n1", "n2", "n3"),
    terms: Iterable[int] = (),
    *,
    term: int | None = None,
    vote: str | None = None,
    commit: int = 1,
    **cfg: Any,
) -> tuple[RawNode, MemoryStorage]:
    """A RawNode whose persisted log holds entries 2.. with the given ``terms``
    after the bootstrap snapshot (index 1, term 1)."""
    terms = list(terms)
    st = MemoryStorage.bootstrap(list(voters))
    st.append([Entry(i + 2, t, b"e%d" % (i + 2)) for i, t in enumerate(terms)])
    hs_term = term if term is not None else max([1, *terms])
    st.set_hard_state(HardState(hs_term, vote, commit))
    return RawNode(make_config(nid, **cfg), st), st


def win_election(node: RawNode, storage: MemoryStorage) -> Ready:
    """Campaign and grant every vote asked for; returns the Ready that carries
    the new leader's first AppendEntries."""
    node.campaign()
    for _ in range(3):
        rd = drain(node, storage)
        if node.role is Role.LEADER:
            return rd
        for m in rd.messages:
            if isinstance(m, RequestVote):
                node.step(VoteResponse(m.term, m.to, m.frm, True, m.pre_vote))
    rd = drain(node, storage)
    assert node.role is Role.LEADER, node.role
    return rd


def ack_all(node: RawNode, storage: MemoryStorage, msgs: Iterable[Message]) -> Ready:
    """Answer every AppendEntries in ``msgs`` as a follower that accepts it."""
    for m in msgs:
        if isinstance(m, AppendEntries):
            last = m.prev_index + len(m.entries)
            node.step(AppendResponse(m.term, m.to, m.frm, last))
    return drain(node, storage)
