"""/metrics for one liferaft-kv node, in Prometheus text (prometheus-client).

Counters and the latency histogram are updated as things happen; the gauges
(term, indices, lag, sizes, reachability) are read from the node at scrape
time by a custom collector, so they are never stale.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from liferaft.runtime import EventType, Node, NodeError

from .state import KVStore

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self, node: Node, store: KVStore) -> None:
        self.node = node
        self.store = store
        self.registry = CollectorRegistry(auto_describe=True)
        self.commit_latency = Histogram(
            "liferaft_commit_latency_seconds",
            "Time from a write's arrival to its apply on this node.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.proposals_failed = Counter(
            "liferaft_proposals_failed",
            "Writes that failed, by runtime error (NotLeader, Dropped, Timeout, ...).",
            ["reason"],
            registry=self.registry,
        )
        self.leader_changes = Counter(
            "liferaft_leader_changes", "Leader changes seen by this node.", registry=self.registry
        )
        self.snapshot_at = time.time()
        self.registry.register(_NodeCollector(self))
        node.events.on(self._on_event)

    def _on_event(self, ev: Any) -> None:
        if ev.type is EventType.LEADER_CHANGE:
            self.leader_changes.inc()
        elif ev.type in (EventType.SNAPSHOT_TAKEN, EventType.SNAPSHOT_INSTALLED):
            self.snapshot_at = time.time()

    def proposal_failed(self, reason: str) -> None:
        self.proposals_failed.labels(reason).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _file_sizes(node: Node, sub: str, suffix: str = "") -> list[int]:
    """Sizes of the files in ``sub`` of the node's data dir (none in memory)."""
    if node.data_dir is None:
        return []
    try:
        entries = os.scandir(os.path.join(os.fspath(node.data_dir), sub))
        return [e.stat().st_size for e in entries if e.name.endswith(suffix)]
    except OSError:
        return []


class _NodeCollector(Collector):
    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[GaugeMetricFamily]:
        node = self.m.node
        try:
            st = node.status()
        except NodeError:
            return

        def g(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield g("liferaft_term", "Current term.", st.term)
        yield g("liferaft_is_leader", "1 if this node is the leader.", float(st.role == "leader"))
        yield g("liferaft_commit_index", "Commit index.", st.commit_index)
        yield g("liferaft_applied_index", "Applied index.", st.applied_index)
        yield g(
            "liferaft_apply_lag",
            "Committed entries not yet applied here.",
            max(0, st.commit_index - st.applied_index),
        )
        yield g("liferaft_last_log_index", "Last log index.", st.last_log_index)
        yield g(
            "liferaft_log_entries",
            "Entries in the log since the snapshot.",
            max(0, st.last_log_index - st.snapshot_index),
        )
        yield g(
            "liferaft_log_bytes", "Bytes of WAL segments on disk.", sum(_file_sizes(node, "wal"))
        )
        yield g("liferaft_snapshot_index", "Index of the newest snapshot.", st.snapshot_index)
        yield g(
            "liferaft_snapshot_bytes",
            "Newest snapshot's file size.",
            max(_file_sizes(node, "snap", ".snap"), default=0),
        )
        yield g(
            "liferaft_snapshot_age_seconds",
            "Seconds since the last snapshot taken or installed.",
            time.time() - self.m.snapshot_at,
        )
        yield g("liferaft_storage_ok", "0 while the disk refuses writes.", float(st.storage_ok))
        yield g("liferaft_keys", "Keys in the store.", len(self.m.store.data))
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
