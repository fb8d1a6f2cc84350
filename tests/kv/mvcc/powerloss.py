"""A power loss right after an LMDB commit made with ``MDB_NOMETASYNC``,
simulated on the file (docs/kv.md, "LMDB sync policy").

LMDB keeps two meta pages (pages 0 and 1), and a commit of transaction N
writes its meta page into slot N % 2, the other slot holding N - 1's.
With ``MDB_NOMETASYNC`` that meta write is not flushed (the next commit's
data flush carries it), so a power loss may leave the slot as it was
before the commit: the database opens at N - 1.  The data pages N wrote
are on the disk but unreachable; LMDB never reuses the pages of N - 1's
tree while N is the newest commit, so N - 1 is whole.  :func:`meta_pages`
takes the two slots before a commit, :func:`lose_last_meta` puts them
back into the file afterwards.
"""

from __future__ import annotations

from pathlib import Path

from liferaft.kv.mvcc import MVCCStore


def meta_pages(store: MVCCStore) -> bytes:
    """The store's two meta pages as they are now (LMDB writes its pages
    with pwrite, so the file read through the page cache is current)."""
    psize = int(store._env.stat()["psize"])
    with open(store.path / "data.mdb", "rb") as f:
        return f.read(2 * psize)


def lose_last_meta(data_mdb: Path, meta: bytes) -> None:
    """Put back ``meta`` (from :func:`meta_pages` before the last commit):
    the file as a power loss may leave it.  The file must not be open."""
    with open(data_mdb, "r+b") as f:
        f.write(meta)
