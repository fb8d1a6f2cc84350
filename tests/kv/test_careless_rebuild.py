"""A careless operator's ``liferaft snapshot restore`` (docs/operations.md,
"Backups"): a restore cut short (Ctrl-C, kill -9, a full disk) must leave
either nothing or a data dir that refuses to start, saying why; never a
traceback, and never a dir that starts as if it were whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from liferaft.kv import rebuild
from liferaft.kv.machine import KVMachine
from liferaft.kv.mvcc.codec import Write, encode_command
from liferaft.kv.mvcc.ops import Put
from liferaft.runtime.statemachine import ApplyEntry
from tests.kv.procs import CLI

CLUSTER = "n1=127.0.0.1:7001,n2=127.0.0.1:7002"


@pytest.fixture
def backup(tmp_path: Path) -> Path:
    """A backup file of a store holding 20 keys (as ``snapshot save`` writes it)."""
    m = KVMachine(tmp_path / "src")
    try:
        m.apply_batch([
            ApplyEntry(i, encode_command(Write(Put(b"k%d" % i, b"v" * 100))), 0.0)
            for i in range(1, 21)
        ])  # fmt: skip
        path = tmp_path / "backup.db"
        path.write_bytes(b"".join(m.checkpoint_chunks()))
    finally:
        m.close()
    return path


def _cli(*args: str, pre: str = "") -> subprocess.CompletedProcess[str]:
    """``liferaft ARGS`` in a child that first runs ``pre`` (a fault)."""
    run = "import sys\nfrom liferaft.cli import main\nsys.argv[0] = 'liferaft'\nmain()"
    code = f"{pre}\n{run}"
    return subprocess.run([sys.executable, "-c", code, *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_restore_interrupted_leaves_no_data_dir(
    backup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def ctrl_c(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rebuild, "write_raft_state", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        rebuild.restore(backup, tmp_path / "d", "n1", {"n1": "127.0.0.1:7001"}, "liferaft")
    assert not (tmp_path / "d").exists()


def test_restore_on_a_full_disk_is_one_line_and_leaves_nothing(
    backup: Path, tmp_path: Path
) -> None:
    # Writes past 20 kB fail as on a full disk (no mount needed): LMDB's
    # own error, not an OSError, as it creates the store.
    full = textwrap.dedent("""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))
    """)
    d = tmp_path / "d"
    r = _cli("snapshot", "restore", str(backup), "--data-dir", str(d), "--id", "n1",
             "--initial-cluster", CLUSTER, pre=full)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot restore {backup}" in r.stderr
    assert not d.exists()


def test_restore_killed_midway_refuses_to_start(backup: Path, tmp_path: Path) -> None:
    """kill -9 after the store is written, before the Raft state: the dir
    must not start (as a new cluster or otherwise), and says what to do."""
    killed = textwrap.dedent("""
        import os
        from liferaft.kv import rebuild
        rebuild.write_raft_state = lambda *a, **k: os._exit(9)
    """)
    d = tmp_path / "d"
    r = _cli("snapshot", "restore", str(backup), "--data-dir", str(d), "--id", "n1",
             "--initial-cluster", CLUSTER, pre=killed)  # fmt: skip
    assert r.returncode == 9 and (d / "kv").exists()
    serve = subprocess.run(
        [*CLI, "serve", "--id", "n1", "--data-dir", str(d), "--peer-addr", "127.0.0.1:7001",
         "--client-addr", "127.0.0.1:1", "--initial-cluster", CLUSTER],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert serve.returncode != 0
    assert "snapshot restore" in serve.stderr and "did not finish" in serve.stderr, serve.stderr
    again = _cli("snapshot", "restore", str(backup), "--data-dir", str(d), "--id", "n1",
                 "--initial-cluster", CLUSTER)  # fmt: skip
    assert again.returncode == 1 and "did not finish" in again.stderr, again.stderr


def test_restore_of_an_etcd_database_says_so(tmp_path: Path) -> None:
    """A file from etcd's own ``etcdctl snapshot save`` (a bbolt database:
    its meta page magic after the 16-byte page header) is named as one."""
    etcd = tmp_path / "etcd.db"
    etcd.write_bytes(bytes(16) + bytes.fromhex("edda0ced") + bytes(4076))
    with pytest.raises(rebuild.RebuildError, match="etcd .bbolt. database"):
        rebuild.restore(etcd, tmp_path / "d", "n1", {"n1": "127.0.0.1:7001"}, "liferaft")
    assert not (tmp_path / "d").exists()
