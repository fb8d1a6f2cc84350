"""The simulator's network, crash and leadership faults (one seed's nemesis).

Each method is one fault kind of :data:`liferaft.sim.runner.PROFILES`, named
after it with a leading underscore; :class:`~liferaft.sim.runner.Driver`
picks one at random.  Every random choice is drawn from the driver's one
``rng``, so a seed replays exactly.
"""

from __future__ import annotations

from liferaft.core import ReadOnlyOption

from .parts import DriverPart


class Nemesis(DriverPart):
    """Partitions, crashes, restarts, transfers, snapshots and bad networks."""

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
        self.c.connect(bridge)
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
        self.d.counter += 1
        self.c.propose(ld, f"{self.c.seed}:{self.d.counter}".encode())
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
