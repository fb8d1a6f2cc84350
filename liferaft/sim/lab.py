"""The MIT 6.5840 Raft lab's test vocabulary, on top of the simulator.

Theory of operation
-------------------
:class:`Lab` wraps a :class:`~liferaft.sim.cluster.Cluster` and speaks the
lab's language: servers are numbered ``0..n-1`` (so a test can say
``(leader + 1) % n``), and there are ``check_one_leader``, ``check_terms``,
``check_no_leader``, ``n_committed``, ``one``, ``wait``, ``crash1``,
``start1``, ``disconnect``, ``connect``, ``set_unreliable`` and
``set_long_reordering``.

Simulated time is in milliseconds, and :data:`LAB_TIMING` sets the node
clocks to the lab's scale: a tick is 50 ms, a leader sends a heartbeat every
second tick (at most ten a second, as the lab asks) and the election timeout
is drawn from [300, 600) ms, well inside the lab's rule that a new leader
must be elected within five seconds of a failure.

Concurrency.  The lab runs several client goroutines at once (concurrent
``one()`` calls, churn clients).  Here a client is a generator that yields
how many milliseconds it wants to sleep; :meth:`Lab.spawn` runs it as a
:class:`Task` on the cluster's event heap, interleaved with the network and
the nodes, so a run stays deterministic for a given seed.

The lab's "log" of a server (what its applier saw) is read from the
simulated state machines: a server has index ``i`` once its state machine
has applied through ``i`` (replayed or restored from a snapshot), and the
command at ``i`` is the one every node applied there (the
:class:`~liferaft.sim.checker.Checker` already fails the run if two nodes
ever apply different entries at one index).  No-op entries appended by a new
leader carry no command: ``n_committed`` reports ``None`` for them.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Generator, Iterable
from typing import Any, Generic, TypeVar

from liferaft.core import (
    AppendEntries,
    Heartbeat,
    InstallSnapshot,
    Message,
    NodeId,
    ReadIndexRequest,
    RequestVote,
    Role,
    TimeoutNow,
)

from .checker import SafetyViolation
from .cluster import Cluster, NetConfig, TimingConfig
from .disk import SimDisk

T = TypeVar("T")

#: A simulated client thread: yields milliseconds to sleep, returns a result.
Client = Generator[int, None, T]

SECOND = 1000
#: The lab's RaftElectionTimeout: the test's unit of "long enough to elect".
ELECTION_TIMEOUT = 1000
#: The lab's service snapshots every this many applied entries (3D).
SNAPSHOT_INTERVAL = 10

#: Node clocks at the lab's scale (see the module docstring).
LAB_TIMING = TimingConfig(tick_interval=50, election_tick=6, heartbeat_tick=2)

#: The lab's reliable network: fast, with a little jitter, so that (as RPCs
#: in separate goroutines may) one message can overtake another.
RELIABLE = NetConfig(min_latency=1, max_latency=5)


class LabFailure(AssertionError):
    """A lab check failed (the lab's ``t.Fatalf``)."""


class TermChanged(Exception):
    """``wait(..., start_term)`` saw a term newer than ``start_term``."""


# Messages that start an exchange; the others are replies.
_REQUESTS = (AppendEntries, Heartbeat, RequestVote, InstallSnapshot, TimeoutNow, ReadIndexRequest)


class _LabCluster(Cluster):
    """A Cluster that counts the messages it sends, by type, and delays only
    replies when long reordering is on (as the lab's network does)."""

    def __init__(
        self,
        ids: list[NodeId],
        seed: int,
        net: NetConfig,
        timing: TimingConfig,
        snapshot_every: int,
    ) -> None:
        self.sent_by_type: Counter[str] = Counter()
        # Chance that a reply is held back for long (the lab's long reordering).
        self.reply_long_delay = 0.0
        super().__init__(
            ids, seed, net=net, timing=timing, snapshot_every=snapshot_every, snapshot_keep=0
        )

    def send(self, m: Message) -> None:
        self.sent_by_type[type(m).__name__] += 1
        # The lab's network holds back replies, never requests.
        self.net.long_delay = 0.0 if isinstance(m, _REQUESTS) else self.reply_long_delay
        super().send(m)


class Task(Generic[T]):
    """A client generator running on the simulator's event heap."""

    def __init__(self, cluster: Cluster, gen: Client[T], name: str = "") -> None:
        self._c = cluster
        self._gen = gen
        self.name = name
        self.done = False
        self._result: T | None = None
        self._error: TermChanged | None = None
        self._resume()

    def _resume(self) -> None:
        try:
            delay = next(self._gen)
        except StopIteration as stop:
            self.done = True
            self._result = stop.value
            return
        except TermChanged as exc:
            # A signal for whoever joins this task; lab failures (assertions)
            # propagate at once, out of the simulation step.
            self.done = True
            self._error = exc
            return
        self._c.call_at(self._c.now + max(0, delay), self._resume)

    @property
    def result(self) -> T:
        if not self.done:
            raise LabFailure(f"task {self.name} has not finished")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


class Lab:
    """``n`` Raft servers under the lab's test harness."""

    def __init__(
        self,
        n: int,
        seed: int,
        unreliable: bool = False,
        snapshot_every: int = 0,
        timing: TimingConfig | None = None,
    ) -> None:
        self.n = n
        self.seed = seed
        self.ids: list[NodeId] = [f"s{i}" for i in range(n)]
        self.c = _LabCluster(
            self.ids,
            seed,
            net=NetConfig(**vars(RELIABLE)),
            timing=dataclasses.replace(timing or LAB_TIMING),
            snapshot_every=snapshot_every,
        )
        # The test's own randomness, apart from the cluster's.
        self.rng = random.Random(f"lab:{seed}")
        self.connected = [True] * n
        self.long_reordering = False
        # index -> command, as applied (identically) by every node that did.
        self.values: dict[int, bytes] = {}
        self.c.on_apply_hook = self._on_apply
        self.set_unreliable(unreliable)

    # -- time ------------------------------------------------------------------------

    @property
    def now(self) -> int:
        return self.c.now

    def sleep(self, ms: int) -> None:
        """Let the cluster (and every spawned client) run for ``ms``."""
        self.c.run_for(ms)

    def spawn(self, gen: Client[T], name: str = "") -> Task[T]:
        """Start a concurrent client; it runs as simulated time passes."""
        return Task(self.c, gen, name)

    def join(self, tasks: Iterable[Task[Any]], timeout: int = 120 * SECOND) -> None:
        """Run the simulation until every task has finished."""
        pending = list(tasks)
        if not self.c.run_until(lambda: all(t.done for t in pending), timeout):
            left = [t.name for t in pending if not t.done]
            raise LabFailure(f"clients {left} did not finish within {timeout} ms")

    def run(self, gen: Client[T], name: str = "") -> T:
        """Run one client to completion (the test's own thread)."""
        task = self.spawn(gen, name)
        self.join([task])
        return task.result

    # -- servers ---------------------------------------------------------------------

    def alive(self, i: int) -> bool:
        return self.c.nodes[self.ids[i]].alive

    def get_state(self, i: int) -> tuple[int, bool]:
        """(term, is_leader) of a live server (the lab's GetState)."""
        rn = self.c.rn(self.ids[i])
        return rn.term, rn.role is Role.LEADER

    def start(self, i: int, cmd: bytes) -> tuple[int, int, bool]:
        """The lab's ``rafts[i].Start(cmd)``: (index, term, is_leader).

        Works on a disconnected server too; a dead one answers (-1, -1, False).
        """
        if not self.alive(i):
            return -1, -1, False
        term = self.c.rn(self.ids[i]).term
        idx = self.c.propose(self.ids[i], cmd)
        if idx is None:
            return -1, term, False
        return idx, term, True

    def crash1(self, i: int) -> None:
        """Kill server ``i``; only what it had synced to its disk survives."""
        self.disconnect(i)
        self.c.crash(self.ids[i])

    def start1(self, i: int) -> None:
        """(Re)start server ``i`` from its disk, disconnected (as in the lab)."""
        self.crash1(i)
        self.c.start(self.ids[i])

    # -- network ---------------------------------------------------------------------

    def _apply_cut(self) -> None:
        # A link works only if both ends are connected (the lab's labrpc rule).
        down = {self.ids[i] for i in range(self.n) if not self.connected[i]}
        self.c.cut = {
            (a, b) for a in self.ids for b in self.ids if a != b and (a in down or b in down)
        }

    def disconnect(self, i: int) -> None:
        self.connected[i] = False
        self._apply_cut()

    def connect(self, i: int) -> None:
        self.connected[i] = True
        self._apply_cut()

    def set_unreliable(self, unreliable: bool) -> None:
        """Drop about 10% of messages and delay each by up to 27 ms."""
        net = self.c.net
        net.drop = 0.1 if unreliable else 0.0
        net.max_latency = 27 if unreliable else RELIABLE.max_latency

    def set_long_reordering(self, on: bool) -> None:
        """Hold about two replies in three back for up to two seconds."""
        self.long_reordering = on
        self.c.reply_long_delay = 2 / 3 if on else 0.0
        self.c.net.long_delay_max = 2000

    # -- counters --------------------------------------------------------------------

    def rpc_total(self) -> int:
        """Requests sent so far (what the lab's rpcTotal counts)."""
        return self.c.rpc_count

    def bytes_total(self) -> int:
        """Command (and snapshot) bytes carried by requests so far."""
        return self.c.bytes_sent

    def sent(self, msg_type: str) -> int:
        return self.c.sent_by_type[msg_type]

    def log_size(self, i: int) -> int:
        """Entries server ``i`` keeps in its log after its latest snapshot."""
        store = self.c.nodes[self.ids[i]].disk.live
        return int(store.last_index() - store.first_index() + 1)

    def snapshot_index(self, i: int) -> int:
        """Index of the snapshot on server ``i``'s (durable) disk."""
        disk = self.c.nodes[self.ids[i]].disk
        assert isinstance(disk, SimDisk)
        return disk.durable.snapshot().index

    def applied_index(self, i: int) -> int:
        return self.c.nodes[self.ids[i]].sm.index

    # -- the lab's checks --------------------------------------------------------------

    def _on_apply(self, nid: NodeId, index: int, data: bytes) -> None:
        seen = self.values.setdefault(index, data)
        if seen != data:
            raise SafetyViolation(f"{nid} applied {data!r} at {index}, others {seen!r}")

    def n_committed(self, index: int) -> tuple[int, bytes | None]:
        """How many servers have applied ``index``, and the command there.

        Like the lab, a crashed server still counts what it applied before it
        crashed, until it is started again.
        """
        count = sum(1 for n in self.c.nodes.values() if n.sm.index >= index)
        return count, self.values.get(index) if count else None

    def commands(self, lo: int, hi: int) -> list[bytes]:
        """Commands applied at indexes [lo, hi), in order, skipping no-ops."""
        return [self.values[i] for i in range(lo, hi) if i in self.values]

    def check_one_leader(self) -> int:
        """Wait (up to ~5 s) for exactly one leader among connected servers."""
        for _ in range(10):
            self.sleep(self.rng.randint(450, 550))
            by_term: dict[int, list[int]] = {}
            for i in range(self.n):
                if self.connected[i] and self.alive(i):
                    term, leader = self.get_state(i)
                    if leader:
                        by_term.setdefault(term, []).append(i)
            for term, leaders in by_term.items():
                if len(leaders) > 1:
                    raise LabFailure(f"term {term} has {len(leaders)} (>1) leaders")
            if by_term:
                return by_term[max(by_term)][0]
        raise LabFailure("expected one leader, got none")

    def check_terms(self) -> int:
        """Every connected server must be in the same term; returns it."""
        term = -1
        for i in range(self.n):
            if self.connected[i] and self.alive(i):
                t, _ = self.get_state(i)
                if term == -1:
                    term = t
                elif t != term:
                    raise LabFailure(f"servers disagree on term ({term} vs {t})")
        return term

    def check_no_leader(self) -> None:
        for i in range(self.n):
            if self.connected[i] and self.alive(i) and self.get_state(i)[1]:
                raise LabFailure(f"expected no leader among connected servers, but {i} is one")

    def one_client(self, cmd: bytes, expected: int, retry: bool) -> Client[int]:
        """The lab's ``one()`` as a client: submit ``cmd`` to whichever
        connected server accepts it, and wait until ``expected`` servers have
        applied it; retry on another leader if ``retry``.  Ten seconds at most.
        """
        t0 = self.now
        starts = 0
        while self.now - t0 < 10 * SECOND:
            index = -1
            for _ in range(self.n):
                starts = (starts + 1) % self.n
                if self.connected[starts]:
                    idx, _, ok = self.start(starts, cmd)
                    if ok:
                        index = idx
                        break
            if index == -1:
                yield 50
                continue
            t1 = self.now
            while self.now - t1 < 2 * SECOND:
                nd, got = self.n_committed(index)
                if nd > 0 and nd >= expected and got == cmd:
                    return index
                yield 20
            if not retry:
                raise LabFailure(f"one({cmd!r}) failed to reach agreement")
        raise LabFailure(f"one({cmd!r}) failed to reach agreement (t={self.now})")

    def one(self, cmd: bytes, expected: int, retry: bool = True) -> int:
        """Agree on ``cmd`` on at least ``expected`` servers; returns its index."""
        return self.run(self.one_client(cmd, expected, retry), f"one({cmd!r})")

    def wait_client(self, index: int, n: int, start_term: int = -1) -> Client[bytes | None]:
        """Wait for ``n`` servers to apply ``index``; returns its command.

        Raises :class:`TermChanged` if a server reaches a term after
        ``start_term`` first (the lab's ``-1`` answer).
        """
        to = 10
        for _ in range(30):
            nd, _ = self.n_committed(index)
            if nd >= n:
                break
            yield to
            if to < SECOND:
                to *= 2
            if start_term > -1:
                for i in range(self.n):
                    if self.alive(i) and self.get_state(i)[0] > start_term:
                        raise TermChanged(f"term moved past {start_term}")
        nd, cmd = self.n_committed(index)
        if nd < n:
            raise LabFailure(f"only {nd} decided for index {index}; wanted {n}")
        return cmd

    def wait(self, index: int, n: int, start_term: int = -1) -> bytes | None:
        return self.run(self.wait_client(index, n, start_term), f"wait({index})")

    def check_replicas_agree(self, timeout: int = 5 * SECOND) -> int:
        """Every server must be up and connected: wait until they have all
        applied the same index, then compare their state machines (a running
        CRC of every command, carried through snapshots).  Returns the index."""
        nodes = [self.c.nodes[nid] for nid in self.ids]
        if not all(n.alive for n in nodes) or not all(self.connected):
            raise LabFailure("check_replicas_agree needs every server up and connected")

        def settled() -> bool:
            return len({n.sm.index for n in nodes}) == 1 and all(
                n.rn is not None and n.sm.index == n.rn.raft.log.committed for n in nodes
            )

        if not self.c.run_until(settled, timeout):
            got = {nid: self.c.nodes[nid].sm.index for nid in self.ids}
            raise LabFailure(f"replicas did not converge: applied {got}")
        states = {(n.sm.index, n.sm.crc, n.sm.count) for n in nodes}
        if len(states) != 1:
            raise LabFailure(f"replicas differ: {states}")
        return nodes[0].sm.index

    def rand_cmd(self) -> bytes:
        """A random command (the lab's ``rand.Int()``)."""
        return str(self.rng.getrandbits(62)).encode()


__all__ = [
    "ELECTION_TIMEOUT",
    "LAB_TIMING",
    "SECOND",
    "SNAPSHOT_INTERVAL",
    "Client",
    "Lab",
    "LabFailure",
    "Task",
    "TermChanged",
]
