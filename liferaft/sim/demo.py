"""A narrated run of a simulated 3-node cluster (``make run``).

It elects a leader, commits a few writes, crashes the leader, watches the
others elect a successor, commits again, and brings the old leader back to
catch up.  Everything runs in the deterministic simulator, so the story is
the same every time for a given ``--seed``.  ``--fast`` skips the pauses.
"""

from __future__ import annotations

import argparse
import sys
import time

from .cluster import Cluster, TimingConfig

TICK_MS = 10


class Demo:
    def __init__(self, seed: int, fast: bool) -> None:
        self.c = Cluster(["n1", "n2", "n3"], seed, timing=TimingConfig(tick_interval=TICK_MS))
        self.fast = fast

    def pause(self, s: float = 0.6) -> None:
        if not self.fast:
            time.sleep(s)

    def say(self, text: str) -> None:
        print(f"[t={self.c.now:5d}ms] {text}", flush=True)

    def table(self) -> None:
        print("        node  role        term  commit  applied")
        for nid, node in sorted(self.c.nodes.items()):
            if not node.alive or node.rn is None:
                print(f"        {nid:4s}  (down)")
                continue
            st = node.rn.status()
            print(
                f"        {nid:4s}  {st.role.value:10s}  {st.term:4d}  {st.commit:6d}  "
                f"{st.applied:7d}"
            )
        self.pause()

    def wait_leader(self, exclude: str | None = None) -> str:
        ok = self.c.run_until(
            lambda: self.c.leader() not in (None, exclude), 20 * 10 * 2 * TICK_MS
        )
        ld = self.c.leader()
        if not ok or ld is None:
            raise SystemExit("no leader elected: this is a bug, please report it")
        return ld

    def write(self, leader: str, value: str) -> None:
        idx = self.c.propose(leader, value.encode())
        if idx is None:
            raise SystemExit(f"{leader} refused a write")
        self.c.run_until(lambda: self.c.applied_value(leader, idx) is not None, 2000)
        self.say(f"wrote {value!r} at index {idx} through {leader}: committed and applied")

    def run(self) -> int:
        c = self.c
        print("liferaft demo: a simulated 3-node Raft cluster (no disk, no sockets)\n")
        self.say("starting n1, n2, n3; election timeouts are random in [100ms, 200ms)")
        ld = self.wait_leader()
        self.say(f"{ld} won the election for term {c.rn(ld).term}")
        self.table()
        for v in ("x=1", "y=2", "z=3"):
            self.write(ld, v)
            self.pause(0.3)
        c.run_for(100)
        self.table()
        self.say(f"crashing the leader {ld} (kill -9: it loses nothing it had synced)")
        c.crash(ld)
        old = ld
        self.pause()
        t0 = c.now
        ld = self.wait_leader(exclude=old)
        self.say(f"{ld} took over for term {c.rn(ld).term} after {c.now - t0}ms")
        self.table()
        self.write(ld, "w=4")
        self.say(f"restarting {old}: it rejoins as a follower and catches up")
        c.start(old)
        c.run_for(300)
        self.table()
        applied = {n: sorted(node.sm.values.items()) for n, node in c.nodes.items()}
        if len({tuple(v) for v in applied.values()}) != 1:
            raise SystemExit(f"nodes disagree: {applied}")
        writes = [v.decode() for _, v in applied["n1"]]
        self.say(f"all three nodes applied {writes} in the same order; "
                 "the safety checkers ran after every step")
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liferaft.sim.demo", description=__doc__)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--fast", action="store_true", help="no pauses")
    a = p.parse_args(argv)
    return Demo(a.seed, a.fast).run()


if __name__ == "__main__":
    sys.exit(main())
