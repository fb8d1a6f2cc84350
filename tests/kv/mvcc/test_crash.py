"""A process killed (SIGKILL) anywhere in an apply batch leaves the store at one applied index.

A child (crash_child.py) applies a seeded workload of 40-entry batches; it is
killed at a random moment, restarted (it resumes after the store's applied
index, as the runtime does), killed again, a bounded number of times.
After each kill the store must hold an applied index that is a whole number
of batches, and its contents, at the current and at past revisions, must
equal the reference model after exactly those batches.  SIGKILL keeps the
page cache, so this proves the commit protocol against process death only;
power loss is below anything this suite can inject (docs/kv.md, "MVCC store").

With deferred commits (mvcc/store.py, "Deferred commits": GROUP batches in
one open transaction, then a settle) the kill must also lose every batch of
the open transaction and nothing before it: the store is at a settle point.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from liferaft.kv.mvcc import TO_END, MVCCStore, Range
from tests.kv.mvcc.model import Model, batch

SEED = 15
SIZE = 40
LAST = 10_000  # more than any child reaches before its kill
GROUP = 3  # batches per commit in the deferred run
KILLS = 6
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("group", [1, GROUP], ids=["commit-each", "deferred"])
def test_kill_anywhere_leaves_one_applied_index(tmp_path: Path, group: int) -> None:
    rnd = random.Random(SEED)
    db = tmp_path / "db"
    model, batches = Model(), 0
    progressed = 0
    for _ in range(KILLS):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.kv.mvcc.crash_child", str(db), str(SEED), str(SIZE),
             str(LAST), str(group)],
            cwd=ROOT, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"ready"
            time.sleep(rnd.uniform(0.01, 0.25))
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=30) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        store = MVCCStore(db)
        try:
            applied = store.applied_index()
            assert applied % SIZE == 0, f"applied index {applied} is inside a batch"
            assert applied % (SIZE * group) == 0, f"applied index {applied} is not settled"
            while batches < applied // SIZE:
                for index, op in batch(SEED, batches, SIZE):
                    model.apply(index, op)
                batches += 1
            assert store.revision() == model.revision
            everything = Range(b"\x00", TO_END)
            assert list(store.range(everything).kvs) == model.range(everything)[0]
            for rev in rnd.sample(range(1, model.revision + 1), min(5, model.revision)):
                past = Range(b"\x00", TO_END, revision=rev)
                assert list(store.range(past).kvs) == model.range(past)[0]
        finally:
            store.close()
        progressed += applied > 0
    # The kills landed while batches were being applied, not all before the first.
    assert batches > 0 and progressed
