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
    ConfChange,
    MemoryStorage,
    ReadOnlyOption,
    Transition,
    add_learner,
    add_voter,
    remove_node,
)

from .checker import SafetyViolation
from .cluster import Cluster, NetConfig, TimingConfig
from .disk import NodeDisk
from .realdisk import RealDisk

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


class Driver:
    """Proposes, reads and injects faults into a :class:`Cluster`."""

    def __init__(self, c: Cluster, rng: random.Random, nodes: int, profile: str) -> None:
        self.c = c
        self.rng = rng
        self.profile = profile
        # Room to grow: a one-voter cluster grows to three and five.
        self.max_nodes = max(nodes + 2, 5)
        self.next_id = nodes + 1
        self.retired: set[str] = set()
        self.churned = False
        self.faults: dict[str, int] = {}
        self.counter = 0
        self.period = c.timing.tick_interval * 2
        self.stopped = False
        # Share of driver actions that inject a fault: calm or stormy seeds.
        self.fault_rate = rng.choice([0.06, 0.06, 0.15, 0.3])
        self.kinds = list(PROFILES[profile])

    def _count(self, what: str) -> None:
        self.faults[what] = self.faults.get(what, 0) + 1

    def _same_life(self, nid: str, life: int) -> bool:
        """Is the run still on and ``nid`` still in the life it was in?  (For
        faults scheduled to strike a little later.)"""
        return not self.stopped and self.c.nodes[nid].lives == life

    def _start_transfer(self, what: str) -> tuple[str, list[str]] | None:
        """Start a transfer from the leader to a random voter; returns the
        leader and the other voters, or None if there was none to start."""
        ld = self.c.leader()
        if ld is None:
            return None
        voters = sorted(self.c.rn(ld).conf_state().voters - {ld})
        if not voters or not self.c.transfer(ld, self.rng.choice(voters)):
            return None
        self._count(what)
        return ld, voters

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
        getattr(self, "_" + self.rng.choice(self.kinds))()

    def _partition(self) -> None:
        ids = self.live_ids()
        if len(ids) < 2:
            return
        self.rng.shuffle(ids)
        k = self.rng.randint(1, len(ids) - 1)
        self.c.partition(ids[:k], ids[k:])
        self._count("partition")

    def _isolate(self) -> None:
        if len(self.live_ids()) < 2:
            return
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

    def _crash_leader(self) -> None:
        ld = self.c.leader()
        if ld is not None:
            self.c.crash(ld)
            self._count("crash_leader")

    def _crash_all(self) -> None:
        """Power loss: every node crashes at once, then all restart."""
        for nid in self.live_ids():
            self.c.crash(nid)
        for nid in self.live_ids():
            self.c.start(nid)
        self._count("crash_all")

    def _propose_crash(self) -> None:
        """Propose at the leader, then crash it before (or while) it replicates."""
        ld = self.c.leader()
        if ld is None:
            return
        self.counter += 1
        self.c.propose(ld, f"{self.c.seed}:{self.counter}".encode())
        life = self.c.nodes[ld].lives

        def later() -> None:
            if self._same_life(ld, life):
                self.c.crash(ld)

        self.c.call_at(self.c.now + self.rng.randint(0, 8), later)
        self._count("propose_crash")

    def _bounce(self) -> None:
        """Crash a node and restart it at once (a fast reboot)."""
        nid = self.rng.choice(self.live_ids())
        self.c.restart(nid)
        self._count("bounce")

    def _restart(self) -> None:
        if self.crashed:
            self.c.start(self.rng.choice(self.crashed))
            self._count("restart")

    def _transfer(self) -> None:
        """Hand leadership to a voter; sometimes cancel the transfer (a transfer
        to the leader itself) or redirect it a little later, while the
        TimeoutNow may already be out (thesis §3.10)."""
        started = self._start_transfer("transfer")
        if started is None:
            return
        ld, voters = started
        if self.rng.random() < 0.5:
            life = self.c.nodes[ld].lives
            to = ld if self.rng.random() < 0.6 else self.rng.choice(voters)

            def later() -> None:
                if self._same_life(ld, life) and self.c.transfer(ld, to):
                    self._count("transfer_cancel" if to == ld else "transfer_redirect")

            self.c.call_at(self.c.now + self.rng.randint(0, 3 * self.c.timing.tick_interval), later)

    def _vote_race(self) -> None:
        """The leader dies and two voters race for its place in the same term:
        the one furthest behind asks first, so the voters it asks move to the
        new term and refuse it, then the one furthest ahead asks and gets
        votes that change nothing but the vote itself (§5.2, §5.4.1): the
        vote-only grants a node must still sync before answering."""
        ld = self.c.leader()
        if ld is None:
            return
        voters = [
            n for n in sorted(self.c.rn(ld).conf_state().voters)
            if n != ld and self.c.nodes[n].alive and self.c.nodes[n].rn is not None
        ]
        if len(voters) < 2:
            return
        self.c.crash(ld)

        def last(n: str) -> tuple[int, int]:
            log = self.c.rn(n).raft.log
            return log.last_term(), log.last_index()

        voters.sort(key=last)
        behind, ahead = voters[0], voters[-1]
        self._count("vote_race")
        for nid, delay in ((behind, 0), (ahead, self.rng.randint(1, 4))):
            life = self.c.nodes[nid].lives

            def go(nid: str = nid, life: int = life) -> None:
                node = self.c.nodes[nid]
                if not self.stopped and node.lives == life and node.rn is not None:
                    node.rn.campaign()
                    self.c.wake(nid)

            self.c.call_at(self.c.now + delay, go)

    def _transfer_cut(self) -> None:
        """A transfer whose TimeoutNow is on its way; then the old leader is
        cut off, keeps cancelling and restarting transfers (each within half
        an election timeout) and clients keep reading from it: neither a
        cancelled transfer nor a restarted one may stretch its lease
        (thesis §3.10, §6.4.1)."""
        started = self._start_transfer("transfer_cut")
        if started is None:
            return
        ld, voters = started
        c, life, tick = self.c, self.c.nodes[ld].lives, self.c.timing.tick_interval
        half = max(1, c.timing.election_tick // 2 - 1)

        def alive() -> bool:
            return self._same_life(ld, life)

        def cut() -> None:
            if alive():
                c.heal()
                c.disconnect(ld)

        def again() -> None:
            if alive():
                c.transfer(ld, ld if self.rng.random() < 0.5 else self.rng.choice(voters))
                c.transfer(ld, ld)
                c.read(ld)

        at = c.now + self.rng.randint(1, c.net.max_latency + 2)
        c.call_at(at, cut)
        for _ in range(self.rng.randint(2, 12)):
            at += self.rng.randint(1, half) * tick
            c.call_at(at, again)

    def _snapshot(self) -> None:
        up = [n for n in self.live_ids() if n not in self.crashed]
        if up and self.c.take_snapshot(self.rng.choice(up)) is not None:
            self._count("snapshot")

    def _net(self) -> None:
        n = self.c.net
        n.drop = self.rng.choice([0.0, 0.01, 0.05, 0.2])
        n.duplicate = self.rng.choice([0.0, 0.02, 0.1])
        if self.c.timing.read_only is not ReadOnlyOption.LEASE_BASED:
            n.long_delay = self.rng.choice([0.0, 0.02, 0.1])
            n.replay = self.rng.choice([0.0, 0.0, 0.005, 0.02])
        self._count("net")

    def _churn_partition(self) -> None:
        """A membership change with the network failing right after it."""
        self._churn()

        def later() -> None:
            if not self.stopped:
                self._partition()

        self.c.call_at(self.c.now + self.rng.randint(1, 30), later)

    def _minority_leader(self) -> None:
        """Cut the leader off with a minority: it keeps taking proposals for a
        while, building a long tail that later elections must not trust."""
        ld = self.c.leader()
        if ld is None:
            return
        others = [n for n in self.live_ids() if n != ld]
        self.rng.shuffle(others)
        k = self.rng.randint(0, max(0, (len(others) - 1) // 2))
        self.c.partition([ld, *others[:k]], others[k:])
        self._count("minority_leader")

    def _new_node(self) -> str:
        nid = f"n{self.next_id}"
        self.next_id += 1
        self.c.add_node(nid)
        return nid

    def _learner_side(self) -> None:
        """Cut the leader off with every learner but only a minority of the
        voters, then, a little later, crash it and heal: while it is cut off
        only learners can acknowledge its writes, and they must never make a
        quorum (thesis §4.2.1)."""
        ld = self.c.leader()
        if ld is None:
            return
        conf = self.c.rn(ld).conf_state()
        learners = sorted(conf.learners)
        others = sorted(conf.voters - {ld})
        k = len(conf.voters) // 2 - 1  # the most voters that stay a minority
        if k < 0 or conf.voters_outgoing:
            return
        if len(learners) < 2:
            # Too few learners to pass for a quorum: add one first.
            if len(self.c.nodes) - len(self.retired) < self.max_nodes:
                nid = self._new_node()
                if self.c.propose_conf_change(ld, ConfChange((add_learner(nid),))) is None:
                    self.retire(nid)
            return
        self.rng.shuffle(others)
        side = [ld, *learners, *others[:k]]
        self.c.partition(side, [n for n in self.live_ids() if n not in side])
        self._count("learner_side")
        life = self.c.nodes[ld].lives

        def later() -> None:
            if self._same_life(ld, life):
                self.c.crash(ld)
                self.c.heal()

        self.c.call_at(self.c.now + self.rng.randint(2, 8) * self.c.timing.tick_interval, later)

    def _churn(self) -> None:
        """One membership change of any kind the API allows."""
        self.churned = True
        ld = self.c.leader()
        if ld is None:
            return
        conf = self.c.rn(ld).conf_state()
        voters, learners = sorted(conf.voters), sorted(conf.learners)
        room = self.max_nodes - (len(self.c.nodes) - len(self.retired))
        ops = []
        if room > 0:
            ops += ["add", "add_voter"]
        if learners:
            ops += ["promote", "replace", "remove_learner"]
        if len(voters) > 1:
            ops += ["remove", "demote"]
        if len(voters) > 2:
            ops += ["double"]
        # A joint change that replaces a majority of the voters at once.
        if len(voters) >= 2 and len(learners) + room >= len(voters) // 2 + 1:
            ops += ["replace_majority", "replace_majority"]
        if not ops:
            return
        op = self.rng.choice(ops)
        new: list[str] = []
        if op in ("add", "add_voter"):
            new = [self._new_node()]
            cc = ConfChange(((add_learner if op == "add" else add_voter)(new[0]),))
        elif op == "promote":
            cc = ConfChange((add_voter(self.rng.choice(learners)),))
        elif op == "replace":
            cc = ConfChange(
                (add_voter(self.rng.choice(learners)), remove_node(self.rng.choice(voters))),
                Transition.JOINT,
            )
        elif op == "replace_majority":
            k = len(voters) // 2 + 1
            gone = self.rng.sample(voters, k)
            pool = self.rng.sample(learners, min(k, len(learners)))
            while len(pool) < k:
                new.append(self._new_node())
                pool.append(new[-1])
            cc = ConfChange(
                tuple(add_voter(n) for n in pool) + tuple(remove_node(n) for n in gone),
                Transition.JOINT,
            )
        elif op == "remove":
            cc = ConfChange((remove_node(self.rng.choice(voters)),))
        elif op == "remove_learner":
            cc = ConfChange((remove_node(self.rng.choice(learners)),))
        elif op == "double":
            # Two changes back to back: the second must be refused while the
            # first is in flight (thesis §4.1).
            a, b = self.rng.sample(voters, 2)
            self.c.propose_conf_change(ld, ConfChange((remove_node(a),)))
            cc = ConfChange((remove_node(b),))
        else:
            cc = ConfChange((add_learner(self.rng.choice(voters)),))
        if self.c.propose_conf_change(ld, cc) is None:
            for nid in new:
                self.retire(nid)
            return
        self._count("churn_" + op)
        if self.rng.random() < 0.3:
            self._crash_soon(sorted(set(voters) | set(learners) | set(new)))

    def _crash_soon(self, candidates: list[str]) -> None:
        """Right after a membership change: crash one node (power loss) a
        little later, and sometimes bring it back at once."""
        nid = self.rng.choice(candidates)
        life = self.c.nodes[nid].lives
        bounce = self.rng.random() < 0.5

        def later() -> None:
            if not self._same_life(nid, life) or nid in self.retired:
                return
            self.c.crash(nid)
            if bounce:
                self.c.start(nid)
            self._count("crash_after_change")

        self.c.call_at(self.c.now + self.rng.randint(0, 6 * self.c.timing.tick_interval), later)

    def retire(self, nid: str) -> None:
        self.c.crash(nid)
        self.retired.add(nid)

    def _retire(self) -> None:
        """Shut down a node the (settled) configuration no longer includes."""
        ld = self.c.leader()
        if ld is None:
            return
        r = self.c.rn(ld).raft
        conf = r.tracker.conf
        if conf.voters_outgoing or r.conf_change_in_flight() or r.has_unapplied_conf_change():
            return  # a change still under way may yet bring a node back
        gone = [n for n in self.live_ids() if n not in conf.members()]
        if gone:
            self.retire(self.rng.choice(gone))
            self._count("retire")

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
) -> SeedResult:
    """Run one seed.  ``configure(cluster)`` may plant a bug before the run.

    ``profile`` picks the nemesis menu (see PROFILES); by default the seed
    chooses one.  ``disk``: "memory" (SimDisk, fast) or "real" (DiskStorage
    itself on files in a temporary directory, under FaultFS); both keep
    exactly what DiskStorage keeps across a crash.
    """
    if disk not in DISKS:
        raise ValueError(f"unknown disk {disk!r}; choose from {', '.join(DISKS)}")
    if disk == "real":
        with tempfile.TemporaryDirectory(prefix="liferaft-sim-") as tmp:
            return _run_seed(seed, nodes, steps, profile, timing, configure, Path(tmp))
    return _run_seed(seed, nodes, steps, profile, timing, configure, None)


DISKS = ("memory", "real")


def _run_seed(
    seed: int,
    nodes: int,
    steps: int,
    profile: str | None,
    timing: TimingConfig | None,
    configure: object,
    files: Path | None,
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
            raise SafetyViolation(f"durability: acknowledged entry {idx} was not applied as acked")
        for m in members:
            node = c.nodes[m]
            if node.sm.index < idx:
                raise SafetyViolation(f"durability: voter {m} never applied acknowledged {idx}")


__all__ = ["run_seed", "SeedResult", "Driver"]
