"""WAL benchmark: ``python -m liferaft.storage.bench [--dir D] [--entries N]``.

Prints, for 100-byte entries in batches of 1, 16 and 256:

* with sync on, serial (write, fdatasync, repeat) and pipelined (the next
  batch is written while the previous one syncs in a thread): entries/s,
  MB/s and syncs/s, next to the raw sync rate of
  the same file system measured in the same run (write 100 bytes, then
  fdatasync, in a loop): the physical limit;
* with sync off: the CPU limit;
* reopen time and resident memory of the index for a log of N entries.

``--ab REPS`` instead measures one append + fdatasync at a time (the latency
a single writer sees) with segments appended to (format 1) and preallocated
and written in place (format 2), alternating the two REPS times in one run:
the median latency of each rep, and CPU per append (user + system time of
this process).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
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


def append_latency(d: Path, preallocate: bool, n: int) -> tuple[float, float]:
    """``n`` appends of one entry, each synced, into a fresh WAL; returns the
    median seconds per append and the CPU seconds per append."""
    sub = Path(tempfile.mkdtemp(dir=d))
    data = b"x" * PAYLOAD
    lat = []
    with WAL(sub, preallocate=preallocate) as w:
        w.append([Entry(1, 1, data)])  # the segment exists (and the spare is made) first
        w.sync()
        cpu0 = sum(os.times()[:2])
        for i in range(2, n + 2):
            t0 = time.perf_counter()
            w.append([Entry(i, 1, data)])
            lat.append(time.perf_counter() - t0)
        cpu = sum(os.times()[:2]) - cpu0
    for p in sub.iterdir():
        p.unlink()
    sub.rmdir()
    return statistics.median(lat), cpu / n


@dataclass(frozen=True)
class LatencyAB:
    """Interleaved reps of :func:`append_latency`, format 1 then 2 in each."""

    appended: list[tuple[float, float]]
    preallocated: list[tuple[float, float]]

    def lines(self) -> list[str]:
        def row(name: str, reps: list[tuple[float, float]]) -> str:
            med = statistics.median(r[0] for r in reps) * 1e6
            cpu = statistics.median(r[1] for r in reps) * 1e6
            each = " ".join(f"{r[0] * 1e6:.0f}" for r in reps)
            return (f"{name}: append+fdatasync p50 {med:6.0f} us (reps: {each}); "
                    f"CPU {cpu:.0f} us/append")  # fmt: skip

        a = statistics.median(r[0] for r in self.appended)
        b = statistics.median(r[0] for r in self.preallocated)
        return [
            row("appended     (format 1)", self.appended),
            row("preallocated (format 2)", self.preallocated),
            f"preallocated - appended: {(b - a) * 1e6:+.0f} us per synced append",
        ]


def latency_ab(directory: str | None, reps: int, n: int) -> LatencyAB:
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        d = Path(tmp)
        a, b = [], []
        for _ in range(reps):
            a.append(append_latency(d, False, n))
            b.append(append_latency(d, True, n))
    return LatencyAB(a, b)


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


@dataclass(frozen=True)
class BatchResult:
    """One batch size: entries/s and syncs/s with sync on, serial and
    pipelined, and entries/s with sync off (the CPU limit)."""

    batch: int
    serial: float
    serial_syncs: float
    pipelined: float
    pipelined_syncs: float
    no_sync: float


@dataclass(frozen=True)
class WalBench:
    """A whole run: the figures ``liferaft bench wal`` prints (docs/bench.md)."""

    raw_syncs: float
    batches: list[BatchResult]
    entries: int
    reopen_seconds: float
    index_mb: float
    peak_rss_mb: float

    def limit(self, b: BatchResult) -> float:
        """min(batch x raw sync rate, CPU): the best an entry rate can be."""
        return min(b.batch * self.raw_syncs, b.no_sync)

    def lines(self) -> list[str]:
        """The run for people, a line per figure."""
        out = [f"raw write({PAYLOAD}B)+fdatasync: {self.raw_syncs:,.0f} syncs/s "
               "(the physical limit)"]  # fmt: skip
        for b in self.batches:
            limit = self.limit(b)
            out.append(
                f"batch={b.batch:4d} sync=on : {b.serial:10,.0f} entries/s "
                f"{b.serial * PAYLOAD / 1e6:6.2f} MB/s {b.serial_syncs:7,.0f} syncs/s = "
                f"{b.serial / limit:4.0%} | pipelined: {b.pipelined:10,.0f} entries/s "
                f"{b.pipelined * PAYLOAD / 1e6:6.2f} MB/s {b.pipelined_syncs:7,.0f} syncs/s = "
                f"{b.pipelined / limit:4.0%} of min(batch x raw, cpu) | sync=off: "
                f"{b.no_sync:10,.0f} entries/s"
            )
        out.append(
            f"reopen of {self.entries:,} entries: {self.reopen_seconds:.2f} s; index "
            f"{self.index_mb:.1f} MB; peak RSS {self.peak_rss_mb:.0f} MB"
        )
        return out


def run(directory: str | None, entries: int, seconds: float) -> WalBench:
    """Measure, in a temporary directory under ``directory``."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        d = Path(tmp)
        raw = raw_sync_rate(d, seconds)
        batches = []
        for batch in (1, 16, 256):
            eps, sps = run_batches(d, batch, True, seconds)
            pip, psps = run_pipelined(d, batch, seconds)
            cpu, _ = run_batches(d, batch, False, seconds)
            batches.append(BatchResult(batch, eps, sps, pip, psps, cpu))
        dt, index_mb, rss = reopen(d, entries)
    return WalBench(raw, batches, entries, dt, index_mb, rss)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liferaft.storage.bench", description=__doc__)
    p.add_argument("--dir", default=None, help="directory on the file system to test")
    p.add_argument("--entries", type=int, default=1_000_000, help="log size for the reopen test")
    p.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    p.add_argument("--ab", type=int, default=0, metavar="REPS",
                   help="only the interleaved latency A/B, appended vs preallocated")
    p.add_argument("--appends", type=int, default=2000, help="synced appends per A/B rep")
    a = p.parse_args(argv)
    result = latency_ab(a.dir, a.ab, a.appends) if a.ab else run(a.dir, a.entries, a.seconds)
    for line in result.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
