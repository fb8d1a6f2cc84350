"""A careless operator lets the disk fill up under a node (issue 15).  An
apply that cannot be written must stop the node with one clear line, and
leave the store at a whole batch: never a replica that silently went on.

The child applies batches under a file-size limit (RLIMIT_FSIZE, SIGXFSZ
ignored: writes past it fail as on a full disk, without a mount).  The
real "No space left" case was checked by hand on a 3 MB tmpfs (LMDB then
reports EIO; the error adds the filesystem's free bytes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from liferaft.kv.machine import KVMachine
    from liferaft.kv.mvcc.codec import Write, encode_command
    from liferaft.kv.mvcc.ops import Put
    from liferaft.runtime.statemachine import ApplyEntry
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    m = KVMachine(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (3 << 20, resource.RLIM_INFINITY))
    idx = 0
    try:
        for _ in range(1000):
            batch = []
            for _ in range(20):
                idx += 1
                cmd = Write(Put(b"k%d" % idx, b"x" * 2000))
                batch.append(ApplyEntry(idx, encode_command(cmd), 0.0))
            m.apply_batch(batch)
    except Exception as exc:
        print(type(exc).__name__)
        print(str(exc))
        print(m.applied_index())
    """
)


def test_a_write_the_disk_refuses_names_the_store_and_where_it_stopped(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "kv")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    out = r.stdout.splitlines()
    assert len(out) == 3, r.stdout + r.stderr
    name, message, applied = out
    assert name == "StoreWriteError"  # not lmdb's bare Error("mdb_...: Input/output error")
    assert str(tmp_path / "kv") in message and f"applied index {applied}" in message
    assert int(applied) > 0 and int(applied) % 20 == 0  # a whole batch
