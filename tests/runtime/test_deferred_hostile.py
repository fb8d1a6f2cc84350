"""Hostile schedules against deferred snapshots (docs/statemachine.md,
"Deferred snapshots"): membership changes committed between the snapshot's
index X and the copy's index A, two installs back to back across a change
of leader, a restart right after an install, a follower whose store is
ahead of its own snapshot but behind the leader's compaction point, and
the leader's snapshot taken while its apply thread is mid-batch.

Safety is checked by the SQLite state machine's ``applied_log`` (a primary
key: an index applied twice crashes the node) and by
:func:`assert_exactly_once` (same entries, same state, no gaps), plus the
configuration each node ends with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from liferaft.core import AppendEntries, Message
from liferaft.runtime.checkpoint import split_marker
from liferaft.runtime.store import MemStore, unwrap_snapshot
from tests.runtime.cluster import MemCluster
from tests.runtime.sms.checkpointing import CheckpointSQLite
from tests.runtime.test_deferred_snapshots import (
    _behind_a_compacted_log,
    _cluster,
    _restart,
    _same_applied,
    _snapshot_bytes,
)
from tests.runtime.test_durable_apply import assert_exactly_once, drive, until, write


def _conf(node: Any) -> tuple[list[str], list[str]]:
    st = node.status()
    return sorted(st.voters), sorted(st.learners)


def _snap_conf(node: Any) -> tuple[list[str], list[str]]:
    store = node.store
    assert store is not None
    cs = store.snapshot_meta().conf_state
    return sorted(cs.voters | cs.voters_outgoing), sorted(cs.learners | cs.learners_next)


def _entries_to(c: MemCluster, f: str) -> Any:
    """Drop the AppendEntries to ``f`` that its log would accept, so its log
    stays where it is; a probe past its log still arrives and is refused,
    so a leader learns ``f`` is behind its compacted log."""

    def pred(frm: str, m: Message) -> bool:
        if not (isinstance(m, AppendEntries) and m.to == f and m.entries):
            return False
        store = c.nodes[f].store
        return store is None or m.prev_index <= store.reader.last_index()

    return pred


async def test_a_voter_and_a_learner_added_between_the_snapshot_and_the_copy(
    tmp_path: Path,
) -> None:
    """X < (add voter n4, add learner n5) <= A: the follower installs the
    copy at A with the snapshot's members (X), and the changes X+1..A reach
    it as membership only.  It must end with the leader's configuration,
    take its own snapshot with it, and keep it across a restart."""
    c = await _cluster(tmp_path, "mem")
    try:
        ld, f, x, _ = await _behind_a_compacted_log(c)
        for nid in ("n4", "n5"):
            c.stores[nid] = MemStore()
            c.sm_factory = lambda nid=nid: CheckpointSQLite(tmp_path / f"{nid}.db")  # type: ignore[misc]
            new = c.make(nid, initial=False)
            await new.start()
            await drive(c, new.join(ld.id, nid, voter=nid == "n4"))
        await write(c, range(26, 30))
        a = ld.applied
        assert a > x
        c.ids += ["n4", "n5"]
        want = (["n1", "n2", "n3", "n4"], ["n5"])
        assert _conf(ld) == want
        restores = c.sms[f].restores
        c.net.rejoin(f)
        await until(c, _same_applied(c))
        node = c.nodes[f]
        assert not node.crashed.is_set()
        assert c.sms[f].restores == restores + 1
        assert node.applier.snap_index == x  # the snapshot's members were those of X
        assert _conf(node) == want
        assert set(node.members) == set(ld.members) == {"n1", "n2", "n3", "n4", "n5"}
        # Its own snapshot, once the configuration known caught up to A,
        # records the configuration of its applied index.
        y = await drive(c, node.snapshot())
        assert y >= a and _snap_conf(node) == want
        header, state = unwrap_snapshot([_snapshot_bytes(node)])
        assert set(header.members) == {"n1", "n2", "n3", "n4", "n5"}
        assert split_marker(state)[0] == y
        node = await _restart(c, tmp_path, "mem", f)
        assert _conf(node) == want and set(node.members) == set(ld.members)
        await write(c, range(30, 34))
        await until(c, _same_applied(c))
        assert_exactly_once(c)
        # The new voter and the learner were themselves sent a checkpoint.
        assert all(c.sms[n].restores >= 1 for n in ("n4", "n5"))
    finally:
        await c.stop()


async def test_a_voter_removed_between_the_snapshot_and_the_copy(tmp_path: Path) -> None:
    """4 voters; one follower cut off behind the compacted log while another
    voter is removed (committed between X and A): the follower's copy at A
    holds the members of X, the removal reaches it as membership only."""
    c = await _cluster(tmp_path, "mem")
    try:
        c.stores["n4"] = MemStore()
        c.sm_factory = lambda: CheckpointSQLite(tmp_path / "n4.db")
        new = c.make("n4", initial=False)
        await new.start()
        ld = await c.leader()
        await drive(c, new.join(ld.id, "n4"))
        await until(c, lambda: "n4" in ld.status().voters)
        c.ids.append("n4")
        await write(c, range(5))
        await until(c, _same_applied(c))
        ld = await c.leader()
        f, gone = [nid for nid in c.ids if c.nodes[nid] is not ld][:2]
        c.net.isolate(f)
        await write(c, range(5, 20))
        x = await drive(c, ld.snapshot())
        await drive(c, ld.remove(gone))
        await write(c, range(20, 26))
        await c.nodes[gone].stop()
        c.sms[gone].close()
        del c.nodes[gone]
        c.ids.remove(gone)
        want = sorted(set(c.ids))
        assert _conf(ld) == (want, [])
        assert ld.applied > x
        c.net.rejoin(f)
        await until(c, _same_applied(c))
        node = c.nodes[f]
        assert not node.crashed.is_set() and c.sms[f].restores >= 1
        assert _conf(node) == (want, []) and gone not in node.members
        y = await drive(c, node.snapshot())
        assert y > x and _snap_conf(node) == (want, [])
        await write(c, range(26, 30))
        await until(c, _same_applied(c))
        assert_exactly_once(c)
    finally:
        await c.stop()


async def test_two_installs_back_to_back_across_a_leader_change(tmp_path: Path) -> None:
    """The follower installs the first leader's copy at A1 while its log
    stays at X1; leadership moves; the new leader writes, snapshots at
    X2 > A1 and compacts; the follower, store at A1 and log at X1, is sent
    a second copy at A2.  It is restarted right after, before its log
    caught up, then catches up: every index applied once."""
    c = await _cluster(tmp_path, "disk")
    try:
        ld1, f, _x1, a1 = await _behind_a_compacted_log(c)
        c.net.drop_if(_entries_to(c, f))
        restores = c.sms[f].restores
        c.net.rejoin(f)
        await until(c, lambda: c.sms[f].restores == restores + 1 and c.nodes[f].applied >= a1)
        first_a = c.nodes[f].applied
        other = next(nid for nid in c.ids if nid not in (ld1.id, f))
        await drive(c, ld1.transfer_leadership(other, timeout=5.0))
        ld2 = await c.leader()
        assert ld2.id == other
        await write(c, range(50, 70))
        x2 = await drive(c, ld2.snapshot())
        assert x2 > first_a
        await write(c, range(70, 74))
        await until(c, lambda: c.sms[f].restores == restores + 2)
        node = c.nodes[f]
        await until(c, lambda: node.applied >= x2)
        assert not node.crashed.is_set()
        assert node.applier.snap_index == x2
        store = node.store
        assert store is not None and store.reader.last_index() == x2 <= node.applied
        node = await _restart(c, tmp_path, "disk", f)
        assert c.sms[f].restores == 0 and node.applied == c.sms[f].applied_index() >= x2
        c.net.drop_if(None)
        await write(c, range(74, 80))
        await until(c, _same_applied(c))
        assert not node.crashed.is_set()
        assert_exactly_once(c)
    finally:
        await c.stop()


async def test_a_second_install_for_a_snapshot_the_store_already_holds(tmp_path: Path) -> None:
    """A follower whose store (from a first copy, at A1) is past a new
    leader's snapshot X2 but whose log (X1) is behind that leader's
    compaction point: it is sent a copy it does not need, must not restore
    it (nor re-apply X2+1..A1), and resumes after its own store."""
    c = await _cluster(tmp_path, "mem")
    try:
        ld1, f, _x1, a1 = await _behind_a_compacted_log(c)
        c.net.drop_if(_entries_to(c, f))
        restores = c.sms[f].restores
        c.net.rejoin(f)
        await until(c, lambda: c.sms[f].restores == restores + 1 and c.nodes[f].applied >= a1)
        first_a = c.nodes[f].applied
        other = next(nid for nid in c.ids if nid not in (ld1.id, f))
        # The other voter snapshots at its applied index (<= A1), then leads.
        x2 = await drive(c, c.nodes[other].snapshot())
        assert x2 <= first_a
        await drive(c, ld1.transfer_leadership(other, timeout=5.0))
        ld2 = await c.leader()
        assert ld2.id == other
        await until(c, lambda: c.nodes[f].applier.snap_index == x2, real=5)
        node = c.nodes[f]
        assert not node.crashed.is_set()
        assert c.sms[f].restores == restores + 1, "a copy restored over a store holding it"
        assert node.applied == first_a
        c.net.drop_if(None)
        await write(c, range(80, 86))
        await until(c, _same_applied(c))
        assert_exactly_once(c)
    finally:
        await c.stop()


class _SlowBatches(CheckpointSQLite):
    """Each batch takes real time in the apply thread."""

    def apply_batch(self, entries: Sequence[Any]) -> list[Any]:
        time.sleep(0.01)
        return super().apply_batch(entries)


async def test_the_leaders_snapshot_while_its_apply_thread_is_mid_batch(tmp_path: Path) -> None:
    """Proposals stream in while the leader is asked for snapshots again and
    again: each is taken between two batches, at an index its store holds
    durably, and the log is never compacted past the store."""
    c = await _slow_cluster(tmp_path)
    try:
        ld = await c.leader()
        taken: list[tuple[int, int | None]] = []
        for round_ in range(6):
            props = [
                asyncio.ensure_future(ld.propose(f"k{i % 5}=v{i}".encode()))
                for i in range(round_ * 8, round_ * 8 + 8)
            ]
            await until(c, lambda: ld.applied > ld.applier.snap_index)
            x = await drive(c, ld.snapshot())
            _, state = unwrap_snapshot([_snapshot_bytes(ld)])
            durable = split_marker(state)[0]
            taken.append((x, durable))
            assert durable is not None and durable >= x
            # Asked between two batches (the worker held): the test must keep
            # the rule it checks, never two state-machine calls at once (it
            # raced a batch here once: ConcurrentCallError).
            released = await drive(c, ld.applier.hold())
            try:
                assert c.sms[ld.id].applied_index() >= x
            finally:
                released.set_result(None)
            store = ld.store
            assert store is not None and store.reader.first_index() <= x + 1
            await drive(c, asyncio.gather(*props))
        assert [t[0] for t in taken] == sorted(t[0] for t in taken)
        await until(c, _same_applied(c))
        assert_exactly_once(c)
    finally:
        await c.stop()


async def _slow_cluster(tmp: Path) -> MemCluster:
    c = MemCluster(3, snapshot_entries=10_000)
    for nid in c.ids:
        c.sm_factory = lambda nid=nid: _SlowBatches(tmp / f"{nid}.db")  # type: ignore[misc]
        await c.make(nid).start()
    return c
