"""Review of the simulator trace (issue 17): the trace against the cluster
itself, sampled while the run goes on, not only at its end.

A seed of the churn profile crashes a node mid-save (a torn write): its
disk then holds entries the trace must show while it is down, not only
once it restarts.  And ``--trace`` into a directory that does not exist is
refused before the run, not with a traceback after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from liferaft.sim import Cluster, run_seed
from liferaft.sim.__main__ import main
from liferaft.sim.trace import TraceRecorder


def _replayed_logs(events: list[str], upto: int) -> dict[str, list[int]]:
    """Each node's log terms after the first ``upto`` events (index 1 first;
    0 inside a snapshot), replayed independently of the viewer."""
    import json

    logs: dict[str, list[int]] = {}
    for raw in events[:upto]:
        ev = json.loads(raw)
        k = ev["k"]
        if k not in ("append", "truncate", "snapshot"):
            continue
        log = logs.setdefault(ev["node"], [])
        if k == "append":
            del log[ev["index"] - 1:]
            log.extend([0] * (ev["index"] - 1 - len(log)))
            log.extend(ev["terms"])
        elif k == "truncate":
            del log[ev["index"] - 1:]
        elif len(log) < ev["index"]:
            log.extend([0] * (ev["index"] - len(log)))
    return logs


def test_a_crashed_nodes_log_is_its_disk_while_it_is_down(monkeypatch: Any) -> None:
    """Sampled every few steps, every node's log as the trace draws it is
    the log on its disk, crashed nodes included (seed 1, churn: a crash
    tears a write and leaves entries the trace did not show until the node
    restarted)."""
    tr = TraceRecorder(seed=1)
    samples: list[tuple[int, dict[str, tuple[bool, int, int, dict[int, int]]]]] = []
    step = Cluster.step

    def sampled(self: Cluster) -> bool:
        more = step(self)
        if self.steps % 7 == 0 and not self._dirty:
            disks = {}
            for nid, node in self.nodes.items():
                st = node.disk.live
                base = st.snapshot().index
                disks[nid] = (node.alive, base, st.last_index(),
                              {i: st.term(i) for i in range(base + 1, st.last_index() + 1)})
            samples.append((len(tr.events), disks))
        return more

    monkeypatch.setattr(Cluster, "step", sampled)
    run_seed(1, nodes=5, steps=1200, profile="churn", trace=tr)
    assert not tr.truncated
    wrong = []
    down = 0
    for upto, disks in samples:
        logs = _replayed_logs(tr.events, upto)
        for nid, (alive, base, last, terms) in disks.items():
            log = logs.get(nid, [])
            drawn = {i + 1: t for i, t in enumerate(log) if i + 1 > base}
            down += not alive
            if len(log) != last or drawn != terms:
                wrong.append((upto, nid, "up" if alive else "down", len(log), last))
    assert down > 20, "the seed no longer crashes a node for long: pick another"
    assert wrong == []


def test_trace_into_a_missing_directory_is_refused_before_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "no" / "such" / "run.json"
    with pytest.raises(SystemExit) as e:
        main(["--seed", "3", "--steps", "300", "--trace", str(target)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "cannot write the trace" in err and str(target.parent) in err
    assert "elapsed" not in err  # refused before running anything
    assert not target.parent.exists()
