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
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from liferaft.core import (
    MemoryStorage,
    ReadOnlyOption,
)

from .checker import SafetyViolation
from .churn import Churn
from .cluster import Cluster, NetConfig, TimingConfig
from .disk import NodeDisk
from .nemesis import Nemesis
from .parts import RunState
from .realdisk import RealDisk
from .trace import TraceRecorder

# Liveness bound for the heal phase, in election timeouts.
HEAL_BOUND_TIMEOUTS = 60


@dataclass
class SeedResult:
    seed: int
    profile: str = ""
    steps: int = 0
    commits: int = 0
    acked: int = 0
    violation: str | None = None
    liveness_failure: str | None = None
    recovery_time: int | None = None
    faults: dict[str, int] = field(default_factory=dict)


class Driver(RunState):
    """Proposes, reads and injects faults into a :class:`Cluster`."""

    def __init__(self, c: Cluster, rng: random.Random, nodes: int, profile: str) -> None:
        super().__init__(c, rng, nodes)
        self.profile = profile
        self.period = c.timing.tick_interval * 2
        # Share of driver actions that inject a fault: calm or stormy seeds.
        self.fault_rate = rng.choice([0.06, 0.06, 0.15, 0.3])
        self.kinds = list(PROFILES[profile])
        # The fault families, each a small class of its own (one per concern).
        self.nemesis_ops = Nemesis(self)
        self.membership_ops = Churn(self, partition=self.nemesis_ops._partition)
        self._ops: dict[str, Callable[[], None]] = {
            **self.nemesis_ops.ops(self.kinds),
            **self.membership_ops.ops(self.kinds),
        }
        missing = set(self.kinds) - set(self._ops)
        assert not missing, f"fault kinds without a method: {sorted(missing)}"

    def schedule(self) -> None:
        self.c.call_at(self.c.now + self.rng.randint(1, self.period), self.act)

    def act(self) -> None:
        if self.stopped:
            return
        r = self.rng.random()
        if r < self.fault_rate:
            self.nemesis()
        elif r < self.fault_rate + 0.55:
            self.propose()
        elif r < self.fault_rate + 0.70:
            self.read()
        self.schedule()

    # -- client work --------------------------------------------------------------

    def propose(self) -> None:
        # Any node that believes it leads, including a deposed one cut off in
        # a minority: its uncommitted tail is what later elections must beat.
        leaders = self.c.leaders()
        if not leaders or self.rng.random() < 0.1:
            target = self.rng.choice(self.live_ids())  # a follower refuses: exercised too
        else:
            target = self.rng.choice(leaders)
        for _ in range(self.rng.randint(1, 4)):
            self.counter += 1
            self.c.propose(target, f"{self.c.seed}:{self.counter}".encode())

    def read(self) -> None:
        self.c.read(self.rng.choice(self.live_ids()))

    # -- faults -------------------------------------------------------------------

    def nemesis(self) -> None:
        self._ops[self.rng.choice(self.kinds)]()

    # -- heal phase ---------------------------------------------------------------------

    def crash_minority(self, voters: list[str]) -> list[str]:
        """Leave a random minority of ``voters`` down and the rest up; returns who is down."""
        k = self.rng.randint(1, max(1, (len(voters) - 1) // 2)) if len(voters) > 2 else 0
        down = self.rng.sample(sorted(voters), k)
        for nid in self.live_ids():
            if nid in down:
                self.c.crash(nid)
            elif not self.c.nodes[nid].alive:
                self.c.start(nid)
        return down

    def settled_voters(self) -> list[str] | None:
        """The voters, if no membership change can be under way, else None."""
        if self.churned:
            return None
        return sorted(self.c.voters0)

    def quiesce(self) -> None:
        """Stop the driver and lift every network and disk fault."""
        c = self.c
        self.stopped = True
        c.heal()
        c.net.drop = c.net.duplicate = c.net.long_delay = c.net.replay = 0.0
        c.crash_mid_ready = c.bounce_after_vote = c.crash_after_election = 0.0
        c.defer_ready = 0.0
        c.process_ready()

    def heal_all(self) -> None:
        c = self.c
        self.quiesce()
        for nid in self.crashed:
            c.start(nid)


# Nemesis menus.  Most seeds mix everything; the others concentrate on one
# family of faults so that rare interleavings come up often.
_ALL = ("partition", "isolate", "isolate_leader", "bridge", "heal", "heal", "crash",
        "crash_leader", "bounce", "restart", "restart", "transfer", "transfer_cut", "snapshot",
        "net", "minority_leader", "crash_all", "churn", "churn", "retire", "vote_race",
        "learner_side", "learner_side")
PROFILES: dict[str, tuple[str, ...]] = {
    "mixed": _ALL,
    # Figure 8: keep knocking out leaders while others come back.
    "figure8": ("propose_crash", "propose_crash", "crash_leader", "isolate_leader", "restart",
                "restart", "heal"),
    "crashy": ("bounce", "bounce", "crash", "crash_leader", "crash_all", "restart", "partition",
               "heal", "vote_race", "vote_race"),
    "stale": ("minority_leader", "minority_leader", "heal", "crash", "restart", "bounce",
              "transfer_cut"),
    "churn": ("churn", "churn", "churn_partition", "heal", "heal", "retire", "crash_leader",
              "restart", "transfer", "learner_side", "learner_side"),
    # Start from ONE voter and grow (and shrink) one change at a time, by
    # direct voter adds and through learners, with crashes right after the
    # changes: where a lazily persisted commit index bites.
    "grow": ("churn", "churn", "churn", "crash_leader", "bounce", "restart", "restart",
             "transfer", "heal", "partition", "crash_all", "learner_side"),
}
_PROFILE_ODDS = ("mixed",) * 4 + ("figure8", "crashy", "stale", "churn", "grow")


def run_seed(
    seed: int,
    nodes: int = 5,
    steps: int = 10_000,
    profile: str | None = None,
    timing: TimingConfig | None = None,
    configure: object = None,
    disk: str = "memory",
    trace: TraceRecorder | None = None,
) -> SeedResult:
    """Run one seed.  ``configure(cluster)`` may plant a bug before the run.

    ``trace`` records the run's events for the replay viewer (trace.py);
    recording never changes the run.

    ``profile`` picks the nemesis menu (see PROFILES); by default the seed
    chooses one.  ``disk``: "memory" (SimDisk, fast) or "real" (DiskStorage
    itself on files in a temporary directory, under FaultFS); both keep
    exactly what DiskStorage keeps across a crash.
    """
    if disk not in DISKS:
        raise ValueError(f"unknown disk {disk!r}; choose from {', '.join(DISKS)}")
    if disk == "real":
        with tempfile.TemporaryDirectory(prefix="liferaft-sim-") as tmp:
            return _run_seed(seed, nodes, steps, profile, timing, configure, Path(tmp), trace)
    return _run_seed(seed, nodes, steps, profile, timing, configure, None, trace)


DISKS = ("memory", "real")


def _run_seed(
    seed: int,
    nodes: int,
    steps: int,
    profile: str | None,
    timing: TimingConfig | None,
    configure: object,
    files: Path | None,
    trace: TraceRecorder | None = None,
) -> SeedResult:
    rng = random.Random(f"driver:{seed}")
    if profile is None:
        profile = rng.choice(_PROFILE_ODDS)
    elif profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    net = NetConfig(
        drop=rng.choice([0.0, 0.0, 0.01, 0.05, 0.15]),
        duplicate=rng.choice([0.0, 0.02, 0.1]),
        long_delay=rng.choice([0.0, 0.02, 0.1]),
    )
    ids = [f"n{i}" for i in range(1, (1 if profile == "grow" else nodes) + 1)]
    if timing is None:
        # One entry per AppendEntries in some seeds: acknowledgements then
        # cover a prefix of what a new leader holds, as in Figure 8.
        size = 1 if profile == "figure8" else rng.choice([1, 300, 64 * 1024, 64 * 1024])
        # Pre-vote and check-quorum are defaults, but the classic protocol
        # must be safe too (and elections collide more often without them).
        # Churn keeps them: without the lease check removed servers disrupt.
        classic = profile != "churn" and rng.random() < 0.3
        timing = TimingConfig(
            max_size_per_msg=size,
            pre_vote=not classic or rng.random() < 0.5,
            check_quorum=not classic or rng.random() < 0.5,
        )
        # Lease reads assume bounded message delay: only on seeds without
        # long delays, where the checker then verifies every answer.
        if (
            timing.check_quorum
            and not net.long_delay
            and profile != "churn"
            and rng.random() < 0.4
        ):
            timing.read_only = ReadOnlyOption.LEASE_BASED
    if timing.read_only is not ReadOnlyOption.LEASE_BASED:
        net.replay = rng.choice([0.0, 0.0, 0.005, 0.02])
    c = Cluster(
        ids,
        seed,
        net=net,
        timing=timing,
        snapshot_every=rng.choice([0, 10, 25, 100]),
        snapshot_keep=rng.choice([0, 3, 20]),
        disk_factory=None if files is None else _real_disks(files, seed),
        trace=trace,
    )
    c.crash_mid_ready = rng.choice([0.0, 0.0, 0.002, 0.01])
    c.bounce_after_vote = rng.choice([0.0, 0.05, 0.2])
    c.defer_ready = rng.choice([0.0, 0.1, 0.3])
    if profile == "crashy":
        c.bounce_after_vote = rng.choice([0.1, 0.3])
    if profile == "figure8":
        net.max_latency = 15
        c.crash_after_election = rng.choice([0.2, 0.5])
    if profile == "churn":
        net.drop = rng.choice([0.05, 0.15])
        net.long_delay = 0.1
    if profile == "grow":
        c.crash_mid_ready = rng.choice([0.005, 0.02])
    if callable(configure):
        configure(c)
    d = Driver(c, rng, nodes, profile)
    d.schedule()
    res = SeedResult(seed, profile=profile)
    try:
        while c.steps < steps and c.step():
            pass
        d.quiesce()
        voters = d.settled_voters()
        if voters is not None:
            # Raft must progress with any minority of voters down, whatever
            # stale logs the survivors hold.
            down = d.crash_minority(voters)
            _, res.liveness_failure = check_liveness(c, d, f"with {down} down")
        if res.liveness_failure is None:
            d.heal_all()
            res.recovery_time, res.liveness_failure = check_liveness(c, d, "after healing")
        if res.liveness_failure is None:
            check_durability(c, d)
    except SafetyViolation as exc:
        res.violation = str(exc)
    except Exception as exc:  # any failure is a finding: report it, replayably
        where = traceback.extract_tb(exc.__traceback__)[-1]
        res.violation = (
            f"exception {type(exc).__name__}: {exc} "
            f"(at {Path(where.filename).name}:{where.lineno}, t={c.now})"
        )
    res.steps, res.commits, res.acked, res.faults = c.steps, c.commits, c.acked, d.faults
    if trace is not None:
        trace.meta["profile"] = profile
        # The last state of every live node (the checker may have fired
        # mid-Ready, before the trace saw what that Ready changed).
        for nid, node in sorted(c.nodes.items()):
            if node.alive and node.rn is not None:
                trace.observe(nid, node.rn, c.now)
        trace.finish(res.violation, res.liveness_failure, c.now)
    return res


def _real_disks(files: Path, seed: int) -> Callable[[str, MemoryStorage], NodeDisk]:
    def make(nid: str, initial: MemoryStorage) -> NodeDisk:
        return RealDisk(initial, files / nid, random.Random(f"disk:{seed}:{nid}"))

    return make


def check_liveness(c: Cluster, d: Driver, when: str) -> tuple[int | None, str | None]:
    """A leader, and a new entry applied on every live member, in bounded time."""
    start = c.now
    bound = HEAL_BOUND_TIMEOUTS * c.timing.election_tick * c.timing.tick_interval
    probe = f"probe:{c.seed}:{when}".encode()
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
            c.nodes[m].sm.index >= idx for m in members if m in c.nodes and c.nodes[m].alive
        )

    if c.run_until(done, bound, max_steps=100_000):
        return c.now - start, None
    ld = c.leader()
    roles = {
        n: (node.rn.role.value, node.rn.term) if node.rn else "down"
        for n, node in sorted(c.nodes.items())
        if n not in d.retired
    }
    return None, f"no progress within {bound} time units {when} (leader={ld}, {roles})"


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
    c.run_until(
        lambda: all(c.nodes[m].sm.index >= chk.max_acked for m in members), bound, 100_000
    )
    for idx, (term, data) in chk.acked.items():
        got = chk.applied.get(idx)
        if got != (term, data):
            raise SafetyViolation(
                f"durability: acknowledged entry {idx} was not applied as acked (t={c.now})"
            )
        for m in members:
            node = c.nodes[m]
            if node.sm.index < idx:
                raise SafetyViolation(
                    f"durability: voter {m} never applied acknowledged {idx} (t={c.now})"
                )


__all__ = ["run_seed", "SeedResult", "Driver"]
