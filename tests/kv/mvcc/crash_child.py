"""Child of test_mvcc_crash.py: apply a seeded workload to a store until killed.

argv: store dir, seed, batch size, last batch, and how many batches share
one commit (1: each its own; more: deferred commits, settled after that
many, as the runtime settles the loop's batches).  Resumes after the
store's applied index (as the runtime would), says "ready" once open, then
applies batch after batch with sync on.
"""

import sys

from liferaft.kv.mvcc import MVCCEntry, MVCCStore
from tests.kv.mvcc.model import batch


def main() -> None:
    path, seed, size, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    group = int(sys.argv[5])
    store = MVCCStore(path)
    done = store.applied_index() // size
    print("ready", flush=True)
    for n in range(done, last):
        store.apply_batch([MVCCEntry(i, op) for i, op in batch(seed, n, size)], defer=group > 1)
        if (n + 1) % group == 0:
            store.settle()
    store.close()


if __name__ == "__main__":
    main()
