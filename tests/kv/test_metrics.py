"""/metrics: the names docs/operations.md and docs/kv.md list are exactly
the ones served, the timers observe what they time, snapshot age comes from
the snapshot file, and the library keeps the same metrics on a registry of
its own without importing prometheus_client unless asked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from liferaft.kv.machine import KVMachine
from liferaft.kv.mvcc.codec import Write, encode_command
from liferaft.kv.mvcc.ops import Put
from liferaft.runtime.metrics import PeerRtt
from tests.kv.one_node import OneNode
from tests.runtime.cluster import MemCluster, TcpCluster

DOCS = Path(__file__).resolve().parents[2] / "docs"
SUFFIX = {"counter": "_total", "histogram": "", "gauge": "", "info": "_info"}


def _documented(doc: str, heading: str) -> set[str]:
    text = (DOCS / doc).read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(liferaft_[a-z_]+)", section))


def _served(text: str) -> dict[str, float]:
    """Every sample, by name and labels, of the liferaft_ families; and the
    family names as a client sees them (a counter with its _total)."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name + SUFFIX.get(fam.type, "")] = 0.0
        for s in fam.samples:
            key = s.name + "".join(f",{k}={v}" for k, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


async def test_metrics_served_documented_and_observed(tmp_path: Path) -> None:
    one = OneNode(tmp_path)
    await one.start()
    try:
        for i in range(3):
            assert (await one.call("PUT", f"/v1/kv/k{i}", {"value": "v"}))[0] == 200
        for i in range(2):
            assert (await one.call("GET", f"/v1/kv/k{i}"))[0] == 200
        assert (await one.call("POST", "/v1/snapshot"))[0] == 200
        snaps = list((tmp_path / "n1" / "snap").glob("*.snap"))
        assert snaps, list((tmp_path / "n1").iterdir())
        hour_ago = time.time() - 3600
        for p in snaps:  # as if the process had restarted an hour after it
            os.utime(p, (hour_ago, hour_ago))
        assert one.server is not None
        text = generate_latest(one.server.metrics.registry).decode()
    finally:
        await one.stop()
    served = _served(text)
    families = {n for n in served if n.startswith("liferaft_") and "," not in n}
    families = {n for n in families if not re.search(r"_(bucket|sum|count|created)$", n)}
    for doc, heading in (("operations.md", "Metrics"), ("kv.md", "Metrics")):
        documented = _documented(doc, heading)
        assert documented - families == set(), (doc, documented - families)
        assert families - documented == set(), (doc, families - documented)
    assert served["liferaft_server_has_leader"] == 1.0
    assert served["liferaft_reads_total"] == 2.0  # the two GETs
    assert served["liferaft_commit_latency_seconds_count"] == 3.0  # the three PUTs
    assert served["liferaft_disk_wal_fsync_duration_seconds_count"] > 0
    assert served["liferaft_server_apply_duration_seconds_count"] > 0
    assert served["liferaft_debugging_snap_save_total_duration_seconds_count"] >= 1
    assert served["liferaft_snapshot_age_seconds"] >= 3600
    assert any(k.startswith("liferaft_build_info,python=") for k in served)
    assert any(k.startswith("process_") for k in served) and "python_info" in str(served)


async def test_an_embedded_node_exports_the_runtime_metrics_on_its_registry() -> None:
    c = MemCluster(3)
    await c.start()
    registries = {nid: CollectorRegistry() for nid in c.ids}
    for nid, n in c.nodes.items():
        assert n.enable_metrics(registries[nid]) is n.enable_metrics(CollectorRegistry())
    try:
        ld = await c.leader()
        await c.drive(c.sms[ld.id].add(1))
        await c.run(0.5)
        served = _served(generate_latest(registries[ld.id]).decode())
    finally:
        await c.stop()
    peers = [nid for nid in c.ids if nid != ld.id]
    for p in peers:
        assert served[f"liferaft_network_peer_round_trip_time_seconds_count,peer={p}"] > 0
    assert served["liferaft_is_leader"] == 1.0
    assert served["liferaft_server_apply_duration_seconds_count"] > 0


def test_peer_rtt_counts_one_answer_per_heartbeat() -> None:
    seen: list[tuple[str, float]] = []
    rtt = PeerRtt(lambda peer, s: seen.append((peer, s)))
    rtt.answered("n2", 1.0)  # no heartbeat sent: nothing to time
    rtt.sent("n2", 1.0)
    rtt.answered("n2", 1.25)
    rtt.answered("n2", 1.5)  # a second answer to the same heartbeat
    assert seen == [("n2", 0.25)]


def test_the_library_does_not_import_prometheus_unless_asked() -> None:
    code = (
        "import sys, liferaft.runtime, liferaft.storage, liferaft.transport\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


class _SlowMachine(KVMachine):
    """Every apply batch takes at least 20 ms (off the loop, as the real one)."""

    def apply_batch(self, entries: Any) -> list[Any]:
        time.sleep(0.02)
        return super().apply_batch(entries)


async def test_the_apply_histogram_times_the_state_machine_not_the_hand_off(
    tmp_path: Path,
) -> None:
    # Off the loop, the loop's apply hook only hands the batch to the apply
    # thread (microseconds); the histogram must time the state machine.
    c = TcpCluster(tmp_path, 1, sm_at=_SlowMachine)
    await c.start()
    try:
        node = await c.leader()
        registry = CollectorRegistry()
        node.enable_metrics(registry)
        for i in range(3):
            await node.propose(encode_command(Write(Put(b"k%d" % i, b"v"))))
        total = registry.get_sample_value("liferaft_server_apply_duration_seconds_sum")
        assert total is not None and total >= 3 * 0.02
    finally:
        await c.stop()
