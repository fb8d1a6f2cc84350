"""How long one small KV batch holds the thread that applies it (the event
loop's, when NodeConfig.inline_apply_entries lets it run there): a lone put
by value size, 16 puts of 1 MiB, and one range delete over N keys.  The
figures behind applier.INLINE_APPLY_BYTES and KVMachine.may_apply_inline
(BENCHMARKS.md).  Usage: python bench/kv_apply_cost.py [N] [REPS]"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from liferaft.kv.machine import KVMachine
from liferaft.kv.mvcc.codec import Write, encode_command
from liferaft.kv.mvcc.ops import TO_END, DeleteRange, Put
from liferaft.runtime.statemachine import ApplyEntry


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as d:
        m = KVMachine(d)
        idx = [1]

        def batch(cmds: list[bytes]) -> None:
            ents = []
            for c in cmds:
                idx[0] += 1
                ents.append(ApplyEntry(idx[0], c, 0.0))
            m.apply_batch(ents)

        def put(key: bytes, size: int) -> bytes:
            return encode_command(Write(Put(key, b"v" * size)))

        def fill() -> None:
            for s in range(0, n, 5000):
                batch([put(b"k%09d" % i, 100) for i in range(s, min(n, s + 5000))])

        cases: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
            ("lone put, 100 B", lambda: None, lambda: batch([put(b"a", 100)])),
            ("lone put, 64 KiB", lambda: None, lambda: batch([put(b"a", 64 << 10)])),
            ("16 puts of 1 MiB", lambda: None,
             lambda: batch([put(b"b%d" % i, 1 << 20) for i in range(16)])),
            (f"range delete of {n} keys", fill,
             lambda: batch([encode_command(Write(DeleteRange(b"k", TO_END)))])),
        ]  # fmt: skip
        for name, setup, run in cases:
            walls, cpus = [], []
            for _ in range(reps):
                setup()
                w, c = time.perf_counter(), _cpu()
                run()
                walls.append(time.perf_counter() - w)
                cpus.append(_cpu() - c)
            print(
                f"{name:28s} wall ms median {statistics.median(walls) * 1e3:8.1f} "
                f"cpu ms median {statistics.median(cpus) * 1e3:8.1f}  "
                f"reps {' '.join(f'{x * 1e3:.1f}' for x in walls)}"
            )
        m.close()


if __name__ == "__main__":
    main()
