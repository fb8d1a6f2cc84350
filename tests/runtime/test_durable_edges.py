"""Edges of the durable contract found by review (docs/statemachine.md,
"The durable contract"; liferaft/runtime/applier.py): a durable store that
belongs to another log, the off-loop worker after the state machine broke,
and a bounded random mix of crashes, restarts, snapshots and membership
changes that must leave every store with each entry exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from liferaft.runtime import Node
from liferaft.runtime.errors import BadConfigError, NodeTimeoutError, StoppedError
from liferaft.runtime.events import EventType
from tests.runtime.cluster import MemCluster
from tests.runtime.sms.sqlite import CrashPoint
from tests.runtime.sms.volatile import BatchRecordingStateMachine
from tests.runtime.test_durable_apply import (
    CountingSQLite,
    assert_exactly_once,
    drive,
    restart,
    sqlite_cluster,
    until,
    write,
)


async def test_a_durable_store_ahead_of_an_empty_log_is_refused(tmp_path: Path) -> None:
    """The data dirs were wiped but one state machine's store was kept: a
    brand-new cluster starts on it.  Trusting its applied index would skip
    the new cluster's entries up to it on that node only (its replicas would
    differ); the node must refuse to start, naming both indexes."""
    (tmp_path / "old").mkdir()
    c = await sqlite_cluster(tmp_path / "old")
    try:
        await write(c, range(10))
        ld = await c.leader()
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        kept = c.sms["n1"].applied_index()
    finally:
        await c.stop()
        for sm in c.sms.values():
            sm.close()
    assert kept > 5
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(tmp_path / "old" / "n1.db", new / "n1.db")
    fresh = MemCluster(3)
    fresh.sm_factory = lambda: CountingSQLite(new / "n1.db")
    node = fresh.make("n1")
    with pytest.raises(BadConfigError, match=rf"index {kept} .* log ends at 0") as e:
        await node.start()
    assert "\n" not in str(e.value)
    fresh.sms["n1"].close()


class GatedSQLite(CountingSQLite):
    """Fails the batch holding ``fail_at`` once the test opens the gate, so
    that the loop has queued more batches behind it meanwhile."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fail_at: int | None = None
        self.inside = threading.Event()
        self.gate = threading.Event()

    def apply_batch(self, entries: Any) -> list[Any]:
        if self.fail_at is not None and any(e.index == self.fail_at for e in entries):
            self.fail_at = None
            self.inside.set()
            self.gate.wait(10)
            raise OSError("disk on fire")
        return super().apply_batch(entries)


async def test_after_the_state_machine_broke_no_batch_behind_it_is_applied(
    tmp_path: Path,
) -> None:
    """``apply_batch`` raised: the node stops, and the batches queued behind
    the broken one must never reach the store.  A later hold (a snapshot
    asked for before the process exits) restarted the worker, which applied
    them over the gap: the store's applied index jumped past entries it
    never got, and a restart resumed after them (entries lost on that node)."""
    c = await sqlite_cluster(tmp_path, GatedSQLite)
    try:
        await write(c, range(5))
        ld = await c.leader()
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        f = next(nid for nid in c.ids if c.nodes[nid] is not ld)
        sm, node = c.sms[f], c.nodes[f]
        sm.fail_at = node.applied + 1
        ld.submit(b"a=1")  # its batch is the one that breaks
        await until(c, sm.inside.is_set)
        for i in range(3):  # committed and queued on the follower behind the stuck batch
            await drive(c, ld.propose(f"b{i}=2".encode()))
        assert len(node.applier._jobs) >= 1
        sm.gate.set()
        await until(c, node.crashed.is_set)
        held = sm.applied_index()
        with contextlib.suppress(StoppedError):
            assert await drive(c, node.snapshot()) < held, "a snapshot past the broken batch"
        await c.clock.advance(0.2, step=0.01)
        await asyncio.sleep(0.05)
        assert sm.applied_index() == held, "a batch behind the broken one was applied"
        node = await restart(c, tmp_path, f)
        await write(c, range(10, 13))
        ld = await c.leader()
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        assert_exactly_once(c)
    finally:
        await c.stop()


class SlowSQLite(CountingSQLite):
    """Holds the batch that reaches ``block_at`` until the test opens ``gate``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.block_at: int | None = None
        self.inside = threading.Event()
        self.gate = threading.Event()

    def apply_batch(self, entries: Any) -> list[Any]:
        gate = self.gate  # the test may replace it once this batch is through
        if self.block_at is not None and any(e.index >= self.block_at for e in entries):
            self.block_at = None
            self.inside.set()
            gate.wait(20)
        return super().apply_batch(entries)


async def test_a_leaders_snapshot_queued_behind_a_slow_batch_is_installed_after_it(
    tmp_path: Path,
) -> None:
    c = await sqlite_cluster(tmp_path, SlowSQLite, snapshot_entries=4)
    try:
        await write(c, range(3))
        ld = await c.leader()
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        f = next(nid for nid in c.ids if c.nodes[nid] is not ld)
        sm = c.sms[f]
        sm.block_at = ld.applied + 1
        await drive(c, ld.propose(b"s=1"))
        await until(c, sm.inside.is_set)
        c.net.isolate(f)
        await write(c, range(3, 20))  # the leader compacts past the follower
        assert ld.applier.snap_index > c.nodes[f].rn.status().last_index  # type: ignore[union-attr]
        c.net.rejoin(f)
        await until(c, lambda: c.nodes[f].store.snapshot_meta().index > 1)  # type: ignore[union-attr]
        sm.gate.set()
        await write(c, range(20, 24))
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        assert sm.restores >= 1
        assert not any(n.crashed.is_set() for n in c.nodes.values())
        assert c.sms[f].contents() == c.sms[ld.id].contents()
        assert c.sms[f].applied_index() == ld.applied
    finally:
        for sm in c.sms.values():
            sm.gate.set()
        await c.stop()


# --- a bounded random mix --------------------------------------------------------------


class Mix:
    """A cluster of durable SQLite state machines driven through a random
    schedule of writes, crashes at every point of a batch, restarts,
    isolations (so that leaders' snapshots are installed), slow batches,
    snapshots and membership changes (a joint replace included)."""

    def __init__(self, tmp: Path, rng: random.Random, off_loop: bool) -> None:
        self.tmp, self.rng, self.off_loop = tmp, rng, off_loop
        self.c = MemCluster(3, snapshot_entries=5, commit_timeout=3.0)
        self.members = list(self.c.ids)
        self.joined: set[str] = set()
        self.next_id = 4

    def sm(self, nid: str) -> SlowSQLite:
        sm = SlowSQLite(self.tmp / f"{nid}.db")
        sm.apply_off_loop = self.off_loop
        return sm

    async def start(self, nid: str, initial: bool = True) -> Node:
        self.c.sm_factory = lambda: self.sm(nid)
        node = self.c.make(nid, initial=initial)
        await node.start()
        return node

    async def restart(self, nid: str) -> None:
        self.c.sms[nid].gate.set()  # stop() lets a batch in flight finish
        await self.c.nodes[nid].stop()
        self.c.sms[nid].close()
        await self.start(nid, initial=nid not in self.joined)

    def running(self) -> list[str]:
        return [n for n in self.members if not self.c.nodes[n].crashed.is_set()]

    async def burst(self, n: int) -> None:
        try:
            ld = await self.c.leader(seconds=5)
        except AssertionError:
            return
        futs = [ld.submit(f"k{self.rng.randrange(9)}={self.rng.random():.6f}".encode(), timeout=2)
                for _ in range(n)]  # fmt: skip
        await until(self.c, lambda: all(f.done() for f in futs))
        for f in futs:
            f.exception()  # outcomes under faults may be errors; none is left unset

    async def step(self) -> str:
        c, rng = self.c, self.rng
        kinds = ["write", "write", "restart", "crash", "isolate", "snapshot", "member"]
        kind = rng.choice(kinds + ["slow"] * self.off_loop)  # on the loop, a slow batch blocks all
        victim = rng.choice(self.running())
        if kind == "write":
            await self.burst(rng.randint(1, 6))
        elif kind == "restart":
            await self.restart(victim)
        elif kind == "crash":
            sm = c.sms[victim]
            points = [CrashPoint.BEFORE_BATCH, CrashPoint.INSIDE_BATCH, CrashPoint.AFTER_COMMIT]
            sm.arm(rng.choice(points), after_entries=rng.randint(1, 2))
            for _ in range(3):
                await self.burst(4)
                if c.nodes[victim].crashed.is_set():
                    break
            sm._plan = None
            if c.nodes[victim].crashed.is_set():
                await self.restart(victim)
        elif kind == "isolate":
            c.net.isolate(victim)
            await c.run(rng.uniform(0, 0.3))
            await self.burst(rng.randint(5, 12))
            c.net.rejoin(victim)
        elif kind == "slow":
            sm = c.sms[victim]
            sm.block_at = c.nodes[victim].applied + 1
            await self.burst(2)
            if rng.random() < 0.5 and not c.nodes[victim].is_leader:
                await self.change_members()  # a follower's worker lags across it
            await self.burst(3)
            sm.gate.set()
            await self.burst(1)
            sm.block_at, sm.gate = None, threading.Event()
        elif kind == "snapshot":
            with contextlib.suppress(StoppedError):
                await drive(c, c.nodes[victim].snapshot())
        else:
            await self.change_members()
        return f"{kind} {victim}"

    async def change_members(self) -> None:
        c, rng = self.c, self.rng
        try:
            ld = await c.leader(seconds=5)
        except AssertionError:
            return
        new = f"n{self.next_id}"
        self.next_id += 1
        old = rng.choice([n for n in self.members if n != ld.id])
        node = await self.start(new, initial=False)
        self.joined.add(new)
        try:
            if rng.random() < 0.5:
                await drive(c, node.join(ld.id, new, voter=False), real=30)
                await drive(c, ld.replace(old, new, new, catch_up_timeout=10), real=30)
            else:
                await drive(c, node.join(ld.id, new, voter=True), real=30)
                await drive(c, ld.remove(old), real=30)
        except Exception as exc:  # a change under faults may fail; the stores must not
            raise AssertionError(f"membership change {old} -> {new} failed: {exc!r}") from exc
        self.members = [n for n in self.members if n != old] + [new]
        await until(c, lambda: old not in ld.members and c.nodes[new].applied >= ld.applied)
        c.sms[old].gate.set()  # stop() lets a batch in flight finish
        await c.nodes[old].stop()

    async def settle(self) -> None:
        c = self.c
        c.net.heal()
        for nid in self.members:
            c.sms[nid].gate.set()
            c.sms[nid]._plan = None
            if c.nodes[nid].crashed.is_set():
                await self.restart(nid)
        await self.burst(3)
        ld = await c.leader()
        await until(c, lambda: all(c.nodes[n].applied == ld.applied for n in self.members))

    async def check(self) -> None:
        """Read the stores with every worker parked between two batches (a
        batch may still run: the leader's no-op, a joint change's leave)."""
        c = self.c
        holds = [await drive(c, c.nodes[n].applier.hold()) for n in self.members if self.off_loop]
        try:
            self._check()
        finally:
            for released in holds:
                released.set_result(None)

    def _check(self) -> None:
        c = self.c
        logs = {nid: c.sms[nid].log() for nid in self.members}
        first = self.members[0]
        for nid, log in logs.items():
            idx = [row[0] for row in log]
            tail = [r for r in log if r[0] > max(r[0] for r in logs[first]) - 40]
            assert idx == list(range(idx[0], idx[-1] + 1)), f"{nid}: gaps or repeats {idx}"
            assert tail == [r for r in logs[first] if r[0] >= tail[0][0]], f"{nid} differs"
            assert c.sms[nid].contents() == c.sms[first].contents(), f"{nid} differs"
            assert c.nodes[nid].applied == c.sms[nid].applied_index()
        # Every node's snapshot of one index carries one configuration.
        confs: dict[int, Any] = {}
        for nid in self.members:
            meta = c.nodes[nid].store.snapshot_meta()  # type: ignore[union-attr]
            assert confs.setdefault(meta.index, meta.conf_state) == meta.conf_state, meta


@pytest.mark.parametrize("off_loop", [True, False])
@pytest.mark.parametrize("seed", range(3))
async def test_a_random_mix_of_faults_leaves_every_store_exactly_once(
    tmp_path: Path, seed: int, off_loop: bool
) -> None:
    mix = Mix(tmp_path, random.Random(seed), off_loop)
    for nid in mix.members:
        await mix.start(nid)
    done: list[str] = []
    try:
        for _ in range(14):
            done.append(await mix.step())
        await mix.settle()
        await mix.check()
        # A full restart of every member converges again, from its own store.
        for nid in list(mix.members):
            await mix.restart(nid)
        await mix.settle()
        await mix.check()
    except BaseException as exc:
        raise AssertionError(f"after {done}: {exc!r}") from exc
    finally:
        for sm in mix.c.sms.values():
            sm.gate.set()
        await mix.c.stop()


async def test_the_writes_of_a_node_whose_state_machine_broke_still_time_out(
    tmp_path: Path,
) -> None:
    """``apply_batch`` raised on the leader: no proposal of the batch is
    settled by the apply, but its caller, and one who writes to the broken
    node before its process exits, must still learn "unknown" at their
    deadline.  The node's ticker, which enforces deadlines, was cancelled
    along with the node task, so these futures were never settled."""
    c = await sqlite_cluster(tmp_path, GatedSQLite)
    try:
        await write(c, range(3))
        ld = await c.leader()
        sm = c.sms[ld.id]
        sm.fail_at = ld.applied + 1
        sm.gate.set()
        broken = ld.submit(b"a=1", timeout=1.0)
        await until(c, ld.crashed.is_set)
        later = ld.submit(b"b=2", timeout=1.0) if ld.is_leader else broken
        await c.clock.advance(3.0, step=0.01)
        await asyncio.sleep(0)
        assert broken.done() and later.done(), "a write on the broken node never settled"
        assert isinstance(broken.exception(), NodeTimeoutError)
        assert isinstance(later.exception(), NodeTimeoutError | StoppedError)
    finally:
        await c.stop()


@pytest.mark.parametrize("off_loop", [False, True])
async def test_a_promotion_is_announced_whether_applies_run_on_or_off_the_loop(
    off_loop: bool,
) -> None:
    """MEMBER_ADDED tells of a learner promoted.  Off the loop, the change
    reaches the member table after the core advanced past it, so asking the
    core whether the member was a voter already answered yes: no event."""
    c = MemCluster(3, sm=lambda: BatchRecordingStateMachine(off_loop=off_loop))
    await c.start()
    try:
        ld = await c.leader()
        new = c.make("n4", initial=False)
        await new.start()
        await drive(c, new.join(ld.id, "n4", voter=False))
        # Every member has applied the learner's addition before we listen:
        # a late apply of it (off the loop, above all) is a MEMBER_ADDED with
        # voter=False, which this test is not about.
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        seen: list[Any] = []
        off = [n.events.on(lambda ev: seen.append(ev)) for n in c.nodes.values()]
        await drive(c, ld.add_voter("n4", "n4"))
        await until(c, lambda: all("n4" in n.members for n in c.nodes.values()))
        await until(c, lambda: all(n.applied == ld.applied for n in c.nodes.values()))
        for f in off:
            f()
        added = [ev for ev in seen if ev.type is EventType.MEMBER_ADDED]
        assert len(added) == 4 and all(ev.detail["voter"] for ev in added), added
    finally:
        await c.stop()
