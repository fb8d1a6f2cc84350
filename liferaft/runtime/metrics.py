"""The runtime's metrics, on a Prometheus registry the application hands in.

``Node(..., registry=CollectorRegistry())`` exports them; without a registry
the node keeps none and ``prometheus_client`` is never imported (it is an
optional dependency of the library: the server's extra brings it).  Names
follow etcd's after the ``liferaft_`` prefix where etcd has the same thing
(docs/operations.md, "Metrics").

Two kinds:

* observed as things happen, with nothing on the hot path when no registry
  is given: WAL fsync (timed around the WAL's own ``fdatasync``), apply of
  a batch, snapshot save, peer round trips (a leader's heartbeat to a
  peer's next answer), leader changes;
* read from the node when scraped (term, indices, lag, sizes, leader,
  snapshot age), by a collector, so they are never stale.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from typing import Any

from liferaft.core import Entry, NodeId

from .events import Event, EventType
from .store import DiskStore

# The node is typed Any here: node.py imports this module (no import circle).
Node = Any

# Seconds; from a tenth of a millisecond (a page-cache fsync) to seconds.
DISK_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128,
                0.256, 0.512, 1.024, 2.048, 4.096, 8.192)  # fmt: skip
# etcd's round-trip buckets (0.1 ms doubling to ~0.8 s).
RTT_BUCKETS = tuple(0.0001 * 2**i for i in range(14))


class PeerRtt:
    """Round trips from a leader's heartbeats: the time from the latest
    heartbeat sent to a peer to that peer's next answer.  The loop calls
    :meth:`sent` and :meth:`answered` only when metrics are on."""

    def __init__(self, observe: Callable[[NodeId, float], None]) -> None:
        self._sent: dict[NodeId, float] = {}
        self._observe = observe

    def sent(self, to: NodeId, now: float) -> None:
        self._sent[to] = now

    def answered(self, frm: NodeId, now: float) -> None:
        t = self._sent.pop(frm, None)
        if t is not None:  # else an answer to a heartbeat already counted
            self._observe(frm, now - t)


class NodeMetrics:
    """The runtime metrics of one node on ``registry`` (a
    ``prometheus_client.CollectorRegistry``)."""

    def __init__(self, node: Node, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram  # optional: only when asked

        self.node = node
        self.registry = registry

        def hist(name: str, doc: str, labels: tuple[str, ...] = (),
                 buckets: tuple[float, ...] = DISK_BUCKETS) -> Any:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        self.wal_fsync = hist(
            "liferaft_disk_wal_fsync_duration_seconds",
            "Duration of the WAL's fdatasync calls (etcd_disk_wal_fsync_duration_seconds).",
        )
        self.apply_duration = hist(
            "liferaft_server_apply_duration_seconds",
            "Duration of applying one batch of committed entries to the state machine.",
        )
        self.snap_save = hist(
            "liferaft_debugging_snap_save_total_duration_seconds",
            "Duration of taking one snapshot: capture, write, fsync, adopt.",
        )
        self.peer_rtt = hist(
            "liferaft_network_peer_round_trip_time_seconds",
            "Leader only: time from a heartbeat to a peer to its answer.",
            ("peer",), RTT_BUCKETS,
        )
        self.leader_changes = Counter(
            "liferaft_leader_changes", "Leader changes seen by this node.", registry=registry
        )
        build = Gauge(
            "liferaft_build_info", "Always 1; the labels name the build.",
            ["version", "python"], registry=registry,
        )  # fmt: skip
        from liferaft import __version__

        build.labels(__version__, platform.python_version()).set(1)
        #: Wall-clock time of the last snapshot taken or installed (a
        #: node without a snapshot file, in memory, has only this).
        self.snapshot_at: float | None = None
        registry.register(_NodeCollector(self))
        node.events.on(self._on_event)
        self.rtt = PeerRtt(lambda peer, s: self.peer_rtt.labels(peer).observe(s))

    def _on_event(self, ev: Event) -> None:
        if ev.type is EventType.LEADER_CHANGE:
            self.leader_changes.inc()
        elif ev.type in (EventType.SNAPSHOT_TAKEN, EventType.SNAPSHOT_INSTALLED):
            self.snapshot_at = time.time()
            duration = ev.detail.get("duration")
            if duration is not None:
                self.snap_save.observe(duration)

    def timed_apply(self, apply: Callable[[list[Entry]], bool]) -> Callable[[list[Entry]], bool]:
        """``apply`` (the loop's hook), observed into the apply histogram."""
        hist = self.apply_duration.observe
        clock = time.perf_counter

        def timed(ents: list[Entry]) -> bool:
            t0 = clock()
            try:
                return apply(ents)
            finally:
                hist(clock() - t0)

        return timed

    def attach_store(self) -> None:
        """Once the node's store is open: time the WAL's fsyncs."""
        store = self.node.store
        if isinstance(store, DiskStore):
            store.disk.wal.on_fsync = self.wal_fsync.observe

    def snapshot_time(self) -> float | None:
        """When the newest snapshot was written: its file's modification
        time, which survives a restart; else the last snapshot event's."""
        node = self.node
        if node.data_dir is not None:
            try:
                with os.scandir(os.path.join(os.fspath(node.data_dir), "snap")) as it:
                    times = [e.stat().st_mtime for e in it if e.name.endswith(".snap")]
            except OSError:
                times = []
            if times:
                return max(times)
        return self.snapshot_at


def file_sizes(node: Node, sub: str, suffix: str = "") -> list[int]:
    """Sizes of the files in ``sub`` of the node's data dir (none in memory)."""
    if node.data_dir is None:
        return []
    try:
        with os.scandir(os.path.join(os.fspath(node.data_dir), sub)) as it:
            return [e.stat().st_size for e in it if e.name.endswith(suffix)]
    except OSError:
        return []


class _NodeCollector:
    """The gauges, read from the node at scrape time."""

    def __init__(self, m: NodeMetrics) -> None:
        self.m = m

    def describe(self) -> list[Any]:
        return []  # unchecked: the names depend on the node's state

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from .errors import NodeError

        node = self.m.node
        try:
            st = node.status()
        except NodeError:
            return

        def g(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield g("liferaft_term", "Current term.", st.term)
        yield g("liferaft_is_leader", "1 if this node is the leader.", float(st.role == "leader"))
        yield g("liferaft_server_has_leader", "1 if this node knows a leader.",
                float(bool(st.leader)))  # fmt: skip
        yield g("liferaft_commit_index", "Commit index.", st.commit_index)
        yield g("liferaft_applied_index", "Applied index.", st.applied_index)
        yield g("liferaft_apply_lag", "Committed entries not yet applied here.",
                max(0, st.commit_index - st.applied_index))  # fmt: skip
        yield g("liferaft_last_log_index", "Last log index.", st.last_log_index)
        yield g("liferaft_log_entries", "Entries in the log since the snapshot.",
                max(0, st.last_log_index - st.snapshot_index))  # fmt: skip
        yield g("liferaft_log_bytes", "Bytes of WAL segments on disk.",
                sum(file_sizes(node, "wal")))  # fmt: skip
        yield g("liferaft_snapshot_index", "Index of the newest snapshot.", st.snapshot_index)
        yield g("liferaft_snapshot_bytes", "Newest snapshot's file size.",
                max(file_sizes(node, "snap", ".snap"), default=0))  # fmt: skip
        at = self.m.snapshot_time()
        if at is not None:
            yield g("liferaft_snapshot_age_seconds",
                    "Seconds since the newest snapshot was written (its file's time).",
                    max(0.0, time.time() - at))  # fmt: skip
        yield g("liferaft_storage_ok", "0 while the disk refuses writes.", float(st.storage_ok))
        yield from _peer_families(node, st)


def _peer_families(node: Node, st: Any) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily

    reach = GaugeMetricFamily(
        "liferaft_peer_reachable", "1 if the peer's connection is up.", labels=["peer"]
    )
    try:
        peers = node.transport.stats()["peers"]
    except (AttributeError, KeyError, TypeError):
        peers = {}
    for pid, p in sorted(peers.items()):
        reach.add_metric([pid], float(bool(p.get("connected"))))
    bad = GaugeMetricFamily(
        "liferaft_peer_address_invalid",
        "1 for a member whose committed peer address the transport cannot use.",
        labels=["peer"],
    )
    for pid in sorted(st.bad_peer_addresses):
        if pid not in peers:
            reach.add_metric([pid], 0.0)
        bad.add_metric([pid], 1.0)
    yield reach
    yield bad
    if st.peers:
        lag = GaugeMetricFamily(
            "liferaft_follower_lag", "Entries a follower lacks (leader only).", labels=["peer"]
        )
        for pid, pi in sorted(st.peers.items()):
            if pid != st.id:
                lag.add_metric([pid], pi.lag)
        yield lag
