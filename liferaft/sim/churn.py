"""The simulator's membership faults: every kind of change the API allows.

Adds (as learner or straight to voter), promotions, removals, demotions,
replacements through joint consensus (including one that replaces a majority
of the voters at once), two changes back to back, crashes right after a
change, and retiring the nodes a settled configuration no longer includes.
"""

from __future__ import annotations

from collections.abc import Callable

from liferaft.core import ConfChange, Transition, add_learner, add_voter, remove_node

from .parts import DriverPart, RunState


class Churn(DriverPart):
    """Membership changes of one seed.  ``partition`` is the network fault
    that ``churn_partition`` strikes with right after a change."""

    def __init__(self, d: RunState, partition: Callable[[], None]) -> None:
        super().__init__(d)
        self._partition = partition

    def _churn_partition(self) -> None:
        """A membership change with the network failing right after it."""
        self._churn()

        def later() -> None:
            if not self.stopped:
                self._partition()

        self.c.call_at(self.c.now + self.rng.randint(1, 30), later)

    def _new_node(self) -> str:
        nid = f"n{self.d.next_id}"
        self.d.next_id += 1
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
            if len(self.c.nodes) - len(self.d.retired) < self.d.max_nodes:
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
        self.d.churned = True
        ld = self.c.leader()
        if ld is None:
            return
        conf = self.c.rn(ld).conf_state()
        voters, learners = sorted(conf.voters), sorted(conf.learners)
        room = self.d.max_nodes - (len(self.c.nodes) - len(self.d.retired))
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
            if not self._same_life(nid, life) or nid in self.d.retired:
                return
            self.c.crash(nid)
            if bounce:
                self.c.start(nid)
            self._count("crash_after_change")

        self.c.call_at(self.c.now + self.rng.randint(0, 6 * self.c.timing.tick_interval), later)

    def retire(self, nid: str) -> None:
        self.c.crash(nid)
        self.d.retired.add(nid)

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
