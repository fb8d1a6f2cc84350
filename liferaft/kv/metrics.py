"""/metrics for one liferaft-kv node, in Prometheus text (prometheus-client).

The runtime's metrics (term, indices, leader, WAL fsync, apply, snapshots,
peer round trips, build info: liferaft/runtime/metrics.py) go on this
registry, with the process and Python collectors that prometheus_client's
default registry would have (``process_*``, ``python_*``), and the KV
server's own: the client write latency, failed writes by error, reads
served, and the store's revision, compact revision and file size.
docs/operations.md, "Metrics", lists every name; a test compares that list
with what /metrics serves.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from liferaft.runtime import Node

from .machine import KVMachine

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def new_registry() -> CollectorRegistry:
    """A registry with what the default one has: ``process_*`` (CPU, memory,
    open files, start time) and ``python_*`` (version, garbage collection)."""
    registry = CollectorRegistry(auto_describe=True)
    for c in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(c)
    return registry


class Metrics:
    """The node's /metrics: on the node's registry if it keeps metrics
    (``Node(..., registry=...)``, as ``liferaft serve`` builds it), else on a
    new one."""

    def __init__(self, node: Node, machine: KVMachine) -> None:
        self.node = node
        self.machine = machine
        if node.metrics is None:
            node.enable_metrics(new_registry())
        assert node.metrics is not None
        self.registry = node.metrics.registry
        self.commit_latency = Histogram(
            "liferaft_commit_latency_seconds",
            "Time from a write's arrival to its apply on this node.",
            buckets=_BUCKETS,
            registry=self.registry,
        )
        # Writes/s is that histogram's _count; reads/s is this counter's rate
        # (a plain int the service bumps: no Counter lock on every read).
        self.registry.register(_ReadsCollector(self))
        self.proposals_failed = Counter(
            "liferaft_proposals_failed",
            "Writes that failed, by runtime error (NotLeader, Dropped, Timeout, ...).",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(_KVCollector(machine))
        #: Reads asked of this node (key reads, ranges, etcd's reads), bumped
        #: where a read arrives: liferaft_reads_total and the web console's
        #: reads/s (docs/console.md).  A plain int: no Counter lock per read.
        self.reads_served = 0
        #: (monotonic time, seconds) of the latest writes completed here,
        #: for the console's latency percentiles; bounded.
        self.recent_writes: deque[tuple[float, float]] = deque(maxlen=4096)

    def write_done(self, seconds: float) -> None:
        """A write proposed here was applied here ``seconds`` after it arrived."""
        self.commit_latency.observe(seconds)
        self.recent_writes.append((time.monotonic(), seconds))

    def proposal_failed(self, reason: str) -> None:
        self.proposals_failed.labels(reason).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


_READS_HELP = "Reads asked of this node (gets, ranges, etcd's Range), as they arrive."


class _ReadsCollector(Collector):
    """liferaft_reads_total, from the count the service keeps."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[CounterMetricFamily]:
        # The registry describes a collector when it is registered, before
        # the count exists: the name alone.
        yield CounterMetricFamily("liferaft_reads", _READS_HELP)

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily("liferaft_reads", _READS_HELP, value=self.metrics.reads_served)


class _KVCollector(Collector):
    def __init__(self, machine: KVMachine) -> None:
        self.machine = machine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        m = self.machine
        yield GaugeMetricFamily(
            "liferaft_kv_revision", "The store revision applied here.", value=m.revision()
        )
        yield GaugeMetricFamily(
            "liferaft_kv_compact_revision",
            "History below this revision is compacted away.",
            value=m.compact_revision(),
        )
        yield GaugeMetricFamily(
            "liferaft_kv_db_size_bytes", "Size of the store's LMDB file.", value=m.db_size()
        )
