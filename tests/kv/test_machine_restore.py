"""A restore killed at any step leaves the old store or the new one, whole.

A child process (machine_crash_child.py) opens a machine on a copy of the
old data dir and restores a checkpoint of another machine, exiting on the
spot (``os._exit``) at one step: mid-receive, after receiving, after the
check, after writing ``CURRENT.tmp``, after renaming it over ``CURRENT``,
after reopening.  Reopening the data dir must then give exactly the old
state before the rename and exactly the new one from it on, with the
crash's leftovers removed (docs/kv.md, "The KV state machine").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from liferaft.kv.mvcc import DeleteRange, Put
from liferaft.kv.mvcc.codec import LeaseGrant, OpenSession, Write
from tests.kv.machine_crash_child import DIED
from tests.kv.machine_log import Log

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = "old", "new"
STEPS = [("receiving", OLD), ("received", OLD), ("checked", OLD), ("pointer-written", OLD),
         ("pointer-renamed", NEW), ("reopened", NEW), ("none", NEW)]


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The old data dir, the checkpoint of the new state, and each state's contents."""
    root = tmp_path_factory.mktemp("restore")
    old = Log(root / "old")
    old.batch(LeaseGrant(1, 10), Write(Put(b"a", b"old", lease=1)), Write(Put(b"b", b"old")))
    new = Log(root / "new")
    new.batch(OpenSession(), *(Write(Put(b"k%d" % i, b"new" * 30)) for i in range(300)))
    new.batch(Write(DeleteRange(b"k1", b"k2")), LeaseGrant(0, 7))
    (root / "checkpoint").write_bytes(b"".join(new.m.checkpoint_chunks()))
    want = {
        OLD: (old.m.applied_index(), old.everything(), old.m.leases(), old.m.sessions()),
        NEW: (new.m.applied_index(), new.everything(), new.m.leases(), new.m.sessions()),
    }
    old.m.close()
    new.m.close()
    yield root, want


@pytest.mark.parametrize(("step", "expect"), STEPS, ids=[s for s, _ in STEPS])
def test_a_restore_killed_at_each_step_leaves_one_whole_store(
    states: tuple[Path, dict], step: str, expect: str  # type: ignore[type-arg]
) -> None:
    root, want = states
    data = root / f"at-{step}"
    shutil.copytree(root / "old", data)
    child = subprocess.run(
        [sys.executable, "-m", "tests.kv.machine_crash_child", str(data),
         str(root / "checkpoint"), step],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
        capture_output=True,
    )
    assert child.returncode == (0 if step == "none" else DIED), child.stderr.decode()
    after = Log(data)
    try:
        got = (after.m.applied_index(), after.everything(), after.m.leases(), after.m.sessions())
        assert got == want[expect]
        names = sorted(p.name for p in data.iterdir())
        assert len(names) == 2 and names[0] == "CURRENT" and names[1].startswith("store.")
    finally:
        after.m.close()
