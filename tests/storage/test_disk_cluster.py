"""Three cores on real files: elect, replicate, snapshot, compact, restart.

Each node persists its Readies through DiskStorage.save; a restart throws
the RawNode and the storage objects away and reopens the data directory, so
everything the cluster knows afterwards came back from disk.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from pathlib import Path

from liferaft.core import Config, ConfState, Entry, EntryType, Message, RawNode, Role
from liferaft.storage.disk import DiskStorage

IDS = ["n1", "n2", "n3"]


class Node:
    def __init__(self, nid: str, d: Path) -> None:
        self.id, self.dir = nid, d
        self.start()

    def start(self) -> None:
        self.st = DiskStorage(self.dir, segment_size=2048)
        snap = self.st.snapshot()
        self.state = int(snap.data) if snap.data else 0  # a running CRC of applied data
        self.applied = snap.index
        self.rn = RawNode(Config(id=self.id, rng=random.Random(self.id)), self.st)

    def restart(self) -> None:
        self.st.close()
        self.start()


def bootstrap(tmp: Path) -> dict[str, Node]:
    from liferaft.core import Snapshot, SnapshotMeta

    nodes = {}
    for nid in IDS:
        st = DiskStorage(tmp / nid)
        st.apply_snapshot(Snapshot(SnapshotMeta(1, 1, ConfState(voters=frozenset(IDS))), b"0"))
        st.close()
        nodes[nid] = Node(nid, tmp / nid)
    return nodes


def pump(nodes: dict[str, Node], down: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    q: deque[Message] = deque()
    busy = True
    while busy:
        busy = False
        # The host's half of the lazy commit broadcast (docs/core.md): once
        # nothing else moves, a leader's pending commit index goes out.
        for n in nodes.values():
            if n.id not in down and n.rn.commit_pending:
                n.rn.flush_commit()
        for n in nodes.values():
            if n.id in down:
                continue
            while n.rn.has_ready():
                busy = True
                rd = n.rn.ready()
                n.st.save(rd.hard_state, rd.entries, rd.snapshot)
                q.extend(rd.messages)
                if rd.snapshot is not None:
                    n.state, n.applied = int(rd.snapshot.data), rd.snapshot.index
                for e in rd.committed_entries:
                    assert e.index == n.applied + 1
                    if e.type is EntryType.NORMAL and e.data:
                        n.state = zlib.crc32(e.data, n.state)
                    n.applied = e.index
                n.rn.advance()
        while q:
            busy = True
            m = q.popleft()
            if m.to not in down:
                nodes[m.to].rn.step(m)
            elif m.frm in nodes and type(m).__name__ == "InstallSnapshot":
                nodes[m.frm].rn.report_snapshot(m.to, failed=True)


def elect(nodes: dict[str, Node], nid: str) -> RawNode:
    nodes[nid].rn.campaign()
    pump(nodes)
    assert nodes[nid].rn.role is Role.LEADER
    return nodes[nid].rn


def test_cluster_on_disk_survives_restarts_snapshots_and_compaction(tmp_path: Path) -> None:
    nodes = bootstrap(tmp_path)
    ld = elect(nodes, "n1")
    for i in range(60):
        ld.propose(f"v{i}".encode())
        pump(nodes)
    assert {n.applied for n in nodes.values()} == {ld.status().commit}

    # n3 goes down; the others snapshot and compact while it is away.
    down = {"n3"}
    for i in range(60, 160):
        ld.propose(f"v{i}".encode())
        pump(nodes, down)
    for nid in ("n1", "n2"):
        n = nodes[nid]
        n.st.create_snapshot(n.applied, n.rn.conf_state(), str(n.state).encode())
        assert n.st.compact(n.applied) >= 1
    # Everyone restarts from disk; n3 must be brought up to date by snapshot.
    for n in nodes.values():
        n.restart()
    ld = elect(nodes, "n2")
    ld.propose(b"after")
    pump(nodes)
    states = {(n.applied, n.state) for n in nodes.values()}
    assert len(states) == 1, states
    assert nodes["n3"].st.snap_meta.index > 1  # n3 installed a snapshot from disk
    # A last restart with nothing lost.
    for n in nodes.values():
        n.restart()
    assert {n.st.last_index() for n in nodes.values()} == {ld.status().last_index}


def test_entries_and_terms_read_back_through_the_log_reader(tmp_path: Path) -> None:
    st = DiskStorage(tmp_path)
    st.save(None, [Entry(1, 1, b"a"), Entry(2, 2, b"b")])
    st.close()
    st = DiskStorage(tmp_path)
    assert (st.first_index(), st.last_index(), st.term(2)) == (1, 2, 2)
    assert st.entries(1, 3) == [Entry(1, 1, b"a"), Entry(2, 2, b"b")]
