"""``liferaft bench trace`` end to end: a real 3-node cluster, a few dozen
traced writes, and a stage table that is whole and consistent.  Timings are
not asserted (benchmarks are not tests), only their consistency."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from liferaft.harness.trace_bench import BESIDE, END_TO_END, PATH, run
from liferaft.runtime import write_trace


def test_the_trace_is_off_unless_asked_for(tmp_path: Path) -> None:
    code = "from liferaft.runtime import write_trace as w; print(w.tracer is not None)"
    env = {k: v for k, v in os.environ.items() if k != write_trace.ENV}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert off.stdout.strip() == "False"
    env[write_trace.ENV] = str(tmp_path / "t")
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert on.stdout.strip() == "True"
    assert len(list(tmp_path.glob("t.*"))) == 1  # one file per process


def test_bench_trace_prints_every_stage_and_they_add_up() -> None:
    report = run(writes=40, rate=0.0, warmup=5)
    assert report.writes >= 30  # writes whose every stage was seen, in all processes
    labels = [r.stage for r in report.rows]
    assert labels == [label for label, _, _ in (*PATH, *BESIDE)]
    for r in [*report.rows, report.end_to_end]:
        assert 0 <= r.p50_us <= r.p90_us, r
    assert report.end_to_end.stage == END_TO_END[0]
    # Per write, the path's stages sum to its end-to-end time exactly; the
    # medians need not, but must be of the same size.
    total = sum(r.p50_us for r in report.rows if r.in_sum)
    assert 0.5 * report.end_to_end.p50_us <= total <= 2 * report.end_to_end.p50_us
    assert set(report.cpu_us_per_write) == {"leader", "follower 1", "follower 2"}
    assert all(us > 0 for us in report.cpu_us_per_write.values())
    assert report.fsync_p50_us > 0 and report.rtt_p50_us > 0
    table = report.table()
    for label in labels:
        assert label in table
    print(table)  # the figures, for whoever runs it; nothing asserted on them
