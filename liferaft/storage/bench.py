"""WAL benchmark: ``python -m liferaft.storage.bench [--dir D] [--entries N]``.

Prints, for 100-byte entries in batches of 1, 16 and 256:

* with sync on, serial (write, fdatasync, repeat) and pipelined (the next
  batch is written while the previous one syncs in a thread): entries/s,
  MB/s and syncs/s, next to the raw sync rate of
  the same file system measured in the same run (write 100 bytes, then
  fdatasync, in a loop): the physical limit;
* with sync off: the CPU limit;
* reopen time and resident memory of the index for a log of N entries.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from liferaft.core import Entry

from .wal import WAL

PAYLOAD = 100


def raw_sync_rate(d: Path, seconds: float) -> float:
    path = d / "raw.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        n = 0
        data = b"x" * PAYLOAD
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            os.write(fd, data)
            os.fdatasync(fd)
            n += 1
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        path.unlink()


def run_batches(d: Path, batch: int, sync: bool, seconds: float) -> tuple[float, float]:
    """Returns (entries/s, syncs/s)."""
    sub = Path(tempfile.mkdtemp(dir=d))
    data = b"x" * PAYLOAD
    with WAL(sub) as w:
        i = 1
        syncs = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            w.append([Entry(j, 1, data) for j in range(i, i + batch)], sync=sync)
            i += batch
            syncs += 1 if sync else 0
        dt = time.perf_counter() - t0
    for p in sub.iterdir():
        p.unlink()
    sub.rmdir()
    return (i - 1) / dt, syncs / dt


def run_pipelined(d: Path, batch: int, seconds: float, window: int = 32) -> tuple[float, float]:
    """Pipelined group commit, as a runtime does it: batches keep being
    encoded and written while an fdatasync runs in a syncer thread; when it
    returns, one new sync covers every batch written meanwhile (at most
    ``window`` batches wait).  An entry counts only once a sync covering it
    has returned.  Returns (durable entries/s, syncs/s)."""
    sub = Path(tempfile.mkdtemp(dir=d))
    data = b"x" * PAYLOAD
    pool = ThreadPoolExecutor(1)
    with WAL(sub) as w:
        i = 1
        syncs = 0
        durable = 0
        waiting = 0
        pending: Future[int] | None = None
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            w.append([Entry(j, 1, data) for j in range(i, i + batch)], sync=False)
            i += batch
            waiting += 1
            if pending is not None and (pending.done() or waiting >= window):
                durable = pending.result()
                syncs += 1
                pending = None
            if pending is None:
                pending = pool.submit(w.finish_sync, w.begin_sync())
                waiting = 0
        if pending is not None:
            durable = pending.result()
            syncs += 1
        dt = time.perf_counter() - t0
    pool.shutdown()
    for p in sub.iterdir():
        p.unlink()
    sub.rmdir()
    return durable / dt, syncs / dt


def reopen(d: Path, n: int) -> tuple[float, float, float]:
    """Write n entries, then time a reopen; returns (seconds, index MB, RSS MB)."""
    sub = d / "reopen"
    data = b"x" * PAYLOAD
    with WAL(sub) as w:
        for i in range(1, n + 1, 4096):
            w.append([Entry(j, 1, data) for j in range(i, min(i + 4096, n + 1))], sync=False)
        w.sync()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    w = WAL(sub)
    dt = time.perf_counter() - t0
    index_mb = (
        sum(s.offsets.itemsize * len(s.offsets) for s in w.segments)
        + w._terms.itemsize * len(w._terms)
    ) / 1e6
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert w.last_index == n
    w.close()
    for p in sub.iterdir():
        p.unlink()
    sub.rmdir()
    return dt, index_mb, max(rss, rss0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liferaft.storage.bench", description=__doc__)
    p.add_argument("--dir", default=None, help="directory on the file system to test")
    p.add_argument("--entries", type=int, default=1_000_000, help="log size for the reopen test")
    p.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        d = Path(tmp)
        raw = raw_sync_rate(d, a.seconds)
        print(f"raw write({PAYLOAD}B)+fdatasync: {raw:,.0f} syncs/s (the physical limit)")
        for batch in (1, 16, 256):
            eps, sps = run_batches(d, batch, True, a.seconds)
            pip, psps = run_pipelined(d, batch, a.seconds)
            cpu, _ = run_batches(d, batch, False, a.seconds)
            limit = min(batch * raw, cpu)
            print(
                f"batch={batch:4d} sync=on : {eps:10,.0f} entries/s "
                f"{eps * PAYLOAD / 1e6:6.2f} MB/s {sps:7,.0f} syncs/s = {eps / limit:4.0%}"
                f" | pipelined: {pip:10,.0f} entries/s {pip * PAYLOAD / 1e6:6.2f} MB/s"
                f" {psps:7,.0f} syncs/s = {pip / limit:4.0%}"
                f" of min(batch x raw, cpu) | sync=off: {cpu:10,.0f} entries/s"
            )
        dt, index_mb, rss = reopen(d, a.entries)
        print(
            f"reopen of {a.entries:,} entries: {dt:.2f} s; index {index_mb:.1f} MB; "
            f"peak RSS {rss:.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
