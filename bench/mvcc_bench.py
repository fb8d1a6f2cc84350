"""LMDB vs SQLite (stdlib) as the MVCC store's backend, on one apply workload.

Batches of 64 puts of 100-byte values, each batch one transaction that also
writes the applied log index, sync on (LMDB's default; SQLite
``synchronous=FULL``, rollback journal and WAL both).  LMDB is the real
store (liferaft.kv.mvcc.MVCCStore: revisions, history, index); SQLite gets
an equivalent two-table MVCC schema (a revisions table and a key index),
so both do the same writes.  Prints batches/s and puts/s per backend.

    .venv/bin/python bench/mvcc_bench.py --batches 300
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time

from liferaft.kv.mvcc import MVCCEntry, MVCCStore, Put

BATCH = 64
VALUE = b"v" * 100
KEYS = 10_000


def lmdb_run(path: str, batches: int) -> float:
    store = MVCCStore(path)
    t0 = time.perf_counter()
    i = 0
    for _ in range(batches):
        entries = []
        for _ in range(BATCH):
            i += 1
            entries.append(MVCCEntry(i, Put(b"key/%08d" % (i % KEYS), VALUE)))
        store.apply_batch(entries)
    dt = time.perf_counter() - t0
    store.close()
    return dt


def sqlite_run(path: str, batches: int, journal: str) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(
        """
        CREATE TABLE rev (main INTEGER, sub INTEGER, key BLOB, create_rev INTEGER,
                          mod_rev INTEGER, version INTEGER, lease INTEGER, value BLOB,
                          PRIMARY KEY (main, sub)) WITHOUT ROWID;
        CREATE TABLE idx (key BLOB, main INTEGER, sub INTEGER,
                          PRIMARY KEY (key, main, sub)) WITHOUT ROWID;
        CREATE TABLE meta (k TEXT PRIMARY KEY, v INTEGER);
        INSERT INTO meta VALUES ('applied_index', 0), ('revision', 1);
        """
    )
    t0 = time.perf_counter()
    i, rev = 0, 1
    for _ in range(batches):
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(BATCH):
            i += 1
            rev += 1
            key = b"key/%08d" % (i % KEYS)
            # The key's latest version, as the LMDB store reads it for a put.
            row = conn.execute(
                "SELECT r.create_rev, r.version FROM idx JOIN rev r USING (main, sub) "
                "WHERE idx.key = ? ORDER BY idx.main DESC, idx.sub DESC LIMIT 1",
                (key,),
            ).fetchone()
            create, version = (row[0], row[1] + 1) if row else (rev, 1)
            conn.execute(
                "INSERT INTO rev VALUES (?, 0, ?, ?, ?, ?, 0, ?)",
                (rev, key, create, rev, version, VALUE),
            )
            conn.execute("INSERT INTO idx VALUES (?, ?, 0)", (key, rev))
        conn.execute("UPDATE meta SET v = ? WHERE k = 'applied_index'", (i,))
        conn.execute("UPDATE meta SET v = ? WHERE k = 'revision'", (rev,))
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--dir", default=None, help="where the databases go (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        runs = {
            "lmdb (MVCCStore, sync)": lambda: lmdb_run(os.path.join(d, "lmdb"), args.batches),
            "sqlite (journal=DELETE, FULL)": lambda: sqlite_run(
                os.path.join(d, "a.sqlite"), args.batches, "DELETE"),
            "sqlite (journal=WAL, FULL)": lambda: sqlite_run(
                os.path.join(d, "b.sqlite"), args.batches, "WAL"),
        }
        print(f"{args.batches} batches of {BATCH} puts of {len(VALUE)} B, one commit each")
        for name, run in runs.items():
            dt = run()
            print(f"{name:32s} {args.batches / dt:8.0f} batches/s  "
                  f"{args.batches * BATCH / dt:9.0f} puts/s  ({dt:.2f} s)")


if __name__ == "__main__":
    main()
