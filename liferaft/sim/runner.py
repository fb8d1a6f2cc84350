"""Randomized fault schedules: one seed, one reproducible run.

A run has two phases.  In the *chaos* phase a driver proposes, reads and,
every so often, breaks something: it partitions the network (random halves,
one node isolated, the leader isolated, a bridge), crashes and restarts
nodes (losing unsynced writes, sometimes in the middle of a Ready), changes
membership (add a learner, promote, remove, demote, replace through joint
consensus), transfers leadership and takes snapshots that compact the log.
The checker runs after every step.

In the *heal* phase every fault is lifted and every member restarted; the
cluster must then elect a leader and commit a new entry on every voter within
a bounded time (liveness), and every acknowledged write must be applied on
every voter (durability).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from liferaft.core import (
    ConfChange,
    Transition,
    add_learner,
    add_voter,
    remove_node,
)

from .checker import SafetyViolation
from .cluster import Cluster, NetConfig, TimingConfig

# Liveness bound for the heal phase, in election timeouts.
HEAL_BOUND_TIMEOUTS = 60


@dataclass
class SeedResult:
    seed: int
    steps: int = 0
    commits: int = 0
    acked: int = 0
    violation: str | None = None
    liveness_failure: str | None = None
    recovery_time: int | None = None
    faults: dict[str, int] = field(default_factory=dict)


class Driver:
    """Proposes, reads and injects faults into a :class:`Cluster`."""

    def __init__(self, c: Cluster, rng: random.Random, nodes: int, churn: bool = True) -> None:
        self.c = c
        self.rng = rng
        self.max_nodes = nodes + 2
        self.next_id = nodes + 1
        self.retired: set[str] = set()
        self.churn = churn
        self.faults: dict[str, int] = {}
        self.counter = 0
        self.period = c.timing.tick_interval * 2
        self.stopped = False

    def _count(self, what: str) -> None:
        self.faults[what] = self.faults.get(what, 0) + 1

    def live_ids(self) -> list[str]:
        """Nodes that are part of the run (up or crashed), not retired ones."""
        return sorted(n for n in self.c.nodes if n not in self.retired)

    @property
    def crashed(self) -> list[str]:
        # Includes nodes the cluster crashed in the middle of a Ready.
        return [n for n in self.live_ids() if not self.c.nodes[n].alive]

    def schedule(self) -> None:
        self.c.call_at(self.c.now + self.rng.randint(1, self.period), self.act)

    def act(self) -> None:
        if self.stopped:
            return
        r = self.rng.random()
        if r < 0.55:
            self.propose()
        elif r < 0.70:
            self.read()
        elif r < 0.76:
            self.nemesis()
        self.schedule()

    # -- client work --------------------------------------------------------------

    def propose(self) -> None:
        ld = self.c.leader()
        if ld is None or self.rng.random() < 0.1:
            ld = self.rng.choice(self.live_ids())  # a follower refuses: exercised too
        target = ld
        for _ in range(self.rng.randint(1, 4)):
            self.counter += 1
            self.c.propose(target, f"{self.c.seed}:{self.counter}".encode())

    def read(self) -> None:
        self.c.read(self.rng.choice(self.live_ids()))

    # -- faults -------------------------------------------------------------------

    def nemesis(self) -> None:
        kinds = ["partition", "isolate", "isolate_leader", "bridge", "heal", "heal",
                 "crash", "restart", "restart", "transfer", "snapshot", "net"]
        if self.churn:
            kinds += ["churn", "churn", "retire"]
        getattr(self, "_" + self.rng.choice(kinds))()

    def _partition(self) -> None:
        ids = self.live_ids()
        self.rng.shuffle(ids)
        k = self.rng.randint(1, len(ids) - 1)
        self.c.partition(ids[:k], ids[k:])
        self._count("partition")

    def _isolate(self) -> None:
        self.c.heal()
        self.c.disconnect(self.rng.choice(self.live_ids()))
        self._count("isolate")

    def _isolate_leader(self) -> None:
        ld = self.c.leader()
        if ld is not None:
            self.c.heal()
            self.c.disconnect(ld)
            self._count("isolate_leader")

    def _bridge(self) -> None:
        ids = self.live_ids()
        if len(ids) < 3:
            return
        self.rng.shuffle(ids)
        mid = len(ids) // 2
        bridge = ids[0]
        left, right = ids[1 : mid + 1], ids[mid + 1 :]
        self.c.partition([bridge, *left], [*right])
        # The bridge talks to both sides.
        self.c.cut = {(a, b) for (a, b) in self.c.cut if bridge not in (a, b)}
        self._count("bridge")

    def _heal(self) -> None:
        self.c.heal()
        self._count("heal")

    def _crash(self) -> None:
        up = [n for n in self.live_ids() if n not in self.crashed]
        if up:
            nid = self.rng.choice(up)
            self.c.crash(nid)
            self._count("crash")

    def _restart(self) -> None:
        if self.crashed:
            self.c.start(self.rng.choice(self.crashed))
            self._count("restart")

    def _transfer(self) -> None:
        ld = self.c.leader()
        if ld is None:
            return
        voters = sorted(self.c.rn(ld).conf_state().voters - {ld})
        if voters and self.c.transfer(ld, self.rng.choice(voters)):
            self._count("transfer")

    def _snapshot(self) -> None:
        up = [n for n in self.live_ids() if n not in self.crashed]
        if up and self.c.take_snapshot(self.rng.choice(up)) is not None:
            self._count("snapshot")

    def _net(self) -> None:
        n = self.c.net
        n.drop = self.rng.choice([0.0, 0.01, 0.05, 0.2])
        n.duplicate = self.rng.choice([0.0, 0.02, 0.1])
        n.long_delay = self.rng.choice([0.0, 0.02, 0.1])
        self._count("net")

    def _churn(self) -> None:
        ld = self.c.leader()
        if ld is None:
            return
        conf = self.c.rn(ld).conf_state()
        voters, learners = sorted(conf.voters), sorted(conf.learners)
        ops = []
        if len(self.c.nodes) - len(self.retired) < self.max_nodes:
            ops.append("add")
        if learners:
            ops += ["promote", "replace"]
        if len(voters) > 3:
            ops += ["remove", "demote"]
        if not ops:
            return
        op = self.rng.choice(ops)
        if op == "add":
            nid = f"n{self.next_id}"
            self.next_id += 1
            self.c.add_node(nid)
            cc = ConfChange((add_learner(nid),))
            if self.c.propose_conf_change(ld, cc) is None:
                self.retire(nid)
                return
        elif op == "promote":
            cc = ConfChange((add_voter(self.rng.choice(learners)),))
        elif op == "replace":
            cc = ConfChange(
                (add_voter(self.rng.choice(learners)), remove_node(self.rng.choice(voters))),
                Transition.JOINT,
            )
        elif op == "remove":
            cc = ConfChange((remove_node(self.rng.choice(voters)),))
        else:
            cc = ConfChange((add_learner(self.rng.choice(voters)),))
        if op == "add" or self.c.propose_conf_change(ld, cc) is not None:
            self._count("churn_" + op)

    def retire(self, nid: str) -> None:
        self.c.crash(nid)
        self.retired.add(nid)

    def _retire(self) -> None:
        """Shut down a node the (settled) configuration no longer includes."""
        ld = self.c.leader()
        if ld is None:
            return
        conf = self.c.rn(ld).conf_state()
        if conf.voters_outgoing:
            return
        gone = [n for n in self.live_ids() if n not in conf.members()]
        if gone:
            self.retire(self.rng.choice(gone))
            self._count("retire")

    # -- heal phase ---------------------------------------------------------------------

    def heal_all(self) -> None:
        c = self.c
        self.stopped = True
        c.heal()
        c.net.drop = c.net.duplicate = c.net.long_delay = 0.0
        c.crash_mid_ready = 0.0
        for nid in self.crashed:
            c.start(nid)


def run_seed(
    seed: int,
    nodes: int = 5,
    steps: int = 10_000,
    churn: bool = True,
    timing: TimingConfig | None = None,
    configure: object = None,
) -> SeedResult:
    """Run one seed.  ``configure(cluster)`` may plant a bug before the run."""
    rng = random.Random(f"driver:{seed}")
    net = NetConfig(
        drop=rng.choice([0.0, 0.0, 0.01, 0.05, 0.15]),
        duplicate=rng.choice([0.0, 0.02, 0.1]),
        long_delay=rng.choice([0.0, 0.02, 0.1]),
    )
    ids = [f"n{i}" for i in range(1, nodes + 1)]
    c = Cluster(
        ids,
        seed,
        net=net,
        timing=timing or TimingConfig(),
        snapshot_every=rng.choice([0, 0, 25, 100]),
        snapshot_keep=rng.choice([0, 3, 20]),
    )
    c.crash_mid_ready = rng.choice([0.0, 0.0, 0.002, 0.01])
    if callable(configure):
        configure(c)
    d = Driver(c, rng, nodes, churn=churn)
    d.schedule()
    res = SeedResult(seed)
    try:
        while c.steps < steps and c.step():
            pass
        d.heal_all()
        res.recovery_time, res.liveness_failure = check_liveness(c, d)
        if res.liveness_failure is None:
            check_durability(c, d)
    except SafetyViolation as exc:
        res.violation = str(exc)
    res.steps, res.commits, res.acked, res.faults = c.steps, c.commits, c.acked, d.faults
    return res


def check_liveness(c: Cluster, d: Driver) -> tuple[int | None, str | None]:
    """After healing: a leader, and a new entry applied on every voter, in bounded time."""
    start = c.now
    bound = HEAL_BOUND_TIMEOUTS * c.timing.election_tick * c.timing.tick_interval
    probe = f"probe:{c.seed}".encode()
    state: dict[str, int] = {}

    def done() -> bool:
        ld = c.leader()
        if ld is None:
            return False
        rn = c.rn(ld)
        conf = rn.conf_state()
        if conf.voters_outgoing:
            return False
        idx = state.get(ld + str(rn.term))
        if idx is None:
            idx = c.propose(ld, probe)
            if idx is None:
                return False
            state[ld + str(rn.term)] = idx
        members = sorted(conf.voters | conf.learners)
        # Followers may have reached idx through a snapshot; the checker has
        # already compared every entry they applied.
        return c.applied_value(ld, idx) == probe and all(
            c.nodes[m].alive and c.nodes[m].sm.index >= idx for m in members if m in c.nodes
        )

    if c.run_until(done, bound):
        return c.now - start, None
    ld = c.leader()
    roles = {
        n: (node.rn.role.value, node.rn.term) if node.rn else "down"
        for n, node in sorted(c.nodes.items())
        if n not in d.retired
    }
    return None, f"no progress within {bound} time units after healing (leader={ld}, {roles})"


def check_durability(c: Cluster, d: Driver) -> None:
    chk = c.checker
    if chk is None:
        return
    ld = c.leader()
    if ld is None:
        return
    members = c.rn(ld).conf_state().voters
    # Let every voter catch up with the last acknowledged write (bounded).
    bound = HEAL_BOUND_TIMEOUTS * c.timing.election_tick * c.timing.tick_interval
    c.run_until(lambda: all(c.nodes[m].sm.index >= chk.max_acked for m in members), bound)
    for idx, (term, data) in chk.acked.items():
        got = chk.applied.get(idx)
        if got != (term, data):
            raise SafetyViolation(f"durability: acknowledged entry {idx} was not applied as acked")
        for m in members:
            node = c.nodes[m]
            if node.sm.index < idx:
                raise SafetyViolation(f"durability: voter {m} never applied acknowledged {idx}")


__all__ = ["run_seed", "SeedResult", "Driver"]
