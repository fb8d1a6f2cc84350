"""Receiving and checking a copy of the MVCC store (for Raft snapshots later).

A copy is the ``data.mdb`` that :meth:`MVCCStore.stream_copy` streams (or
:meth:`MVCCStore.copy_to` writes).  :func:`receive_copy` writes a stream into
a new directory and fsyncs it; :func:`check_store` then reads the whole copy
before anyone trusts it: the format version and meta, every record decodes,
every index entry names a record of its own key, and no record is newer than
the meta's revision.  Framing and a digest for the wire are the Raft
snapshot's business (docs/statemachine.md, "Snapshots of a durable store").
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import lmdb
import msgspec

from liferaft.kv.mvcc import layout
from liferaft.kv.mvcc.ops import StoreFormatError
from liferaft.kv.mvcc.sessions import decode_row
from liferaft.kv.mvcc.store import MVCCStore

DATA_FILE = "data.mdb"


def receive_copy(chunks: Iterable[bytes], path: str | os.PathLike[str]) -> None:
    """Write a streamed copy into the new directory ``path``, durably."""
    d = Path(path)
    d.mkdir(parents=True, exist_ok=False)
    with open(d / DATA_FILE, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_store(path: str | os.PathLike[str]) -> int:
    """Read the whole store at ``path``; its applied index, or :class:`StoreFormatError`."""
    where = str(path)
    if not (Path(path) / DATA_FILE).is_file():
        raise StoreFormatError(f"{where}: no {DATA_FILE}")
    try:
        env = lmdb.open(where, readonly=True, lock=False, max_dbs=layout.MAX_DBS, subdir=True)
    except lmdb.Error as exc:
        raise StoreFormatError(f"{where}: not a readable LMDB file: {exc}") from None
    try:
        _check_size(env, Path(path) / DATA_FILE, where)
        dbs = layout.open_dbs(env, create=False)
        with env.begin() as txn:
            layout.check_format(txn, dbs, where)
            return _check_contents(txn, dbs, where)
    except (lmdb.Error, msgspec.DecodeError, ValueError) as exc:
        if isinstance(exc, StoreFormatError):
            raise
        raise StoreFormatError(f"{where}: damaged store: {exc}") from None
    finally:
        env.close()


def _check_size(env: lmdb.Environment, data: Path, where: str) -> None:
    """A file shorter than the pages its meta names would be mapped short: LMDB
    touching a page past the end is a SIGBUS that kills the process, so a
    truncated copy must be refused before any read of its pages."""
    size = data.stat().st_size
    need = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    if size < need:
        raise StoreFormatError(f"{where}: truncated copy ({size} bytes; its meta needs {need})")


def _check_contents(txn: lmdb.Transaction, dbs: layout.Dbs, where: str) -> int:
    revision = layout.get_meta(txn, dbs, layout.META_REVISION)
    compact = layout.get_meta(txn, dbs, layout.META_COMPACT)
    if compact > revision:
        raise StoreFormatError(f"{where}: compact revision {compact} > revision {revision}")
    for rev, raw in txn.cursor(db=dbs.rev):
        main, _ = layout.unpack_rev(rev)
        if main > revision:
            raise StoreFormatError(f"{where}: a record at revision {main} > meta's {revision}")
        layout.decode_record(raw)
    for key, rev in txn.cursor(db=dbs.index).iternext(keys=True, values=True):
        found = txn.get(rev, db=dbs.rev)
        if found is None or layout.decode_record(found).key != key:
            raise StoreFormatError(f"{where}: the index entry of {key!r} names no record of it")
    _check_tables(txn, dbs, where)
    return layout.get_meta(txn, dbs, layout.META_APPLIED)


def _check_tables(txn: lmdb.Transaction, dbs: layout.Dbs, where: str) -> None:
    """The session and lease tables: fixed-size keys, decodable rows, and
    every attached key set belonging to a live lease."""
    for name, db, size in (("sessions", dbs.sessions, 8), ("session_lru", dbs.session_lru, 8),
                           ("outcomes", dbs.outcomes, 16), ("leases", dbs.leases, 8)):
        for k in txn.cursor(db=db).iternext(values=False):
            if len(k) != size:
                raise StoreFormatError(f"{where}: a {name} key of {len(k)} bytes")
    for raw in txn.cursor(db=dbs.sessions).iternext(keys=False):
        decode_row(raw)
    for lease in txn.cursor(db=dbs.lease_keys).iternext_nodup(keys=True, values=False):
        if txn.get(lease, db=dbs.leases) is None:
            raise StoreFormatError(f"{where}: keys attached to a lease that does not exist")


def open_copy(path: str | os.PathLike[str], **kwargs: bool | int) -> MVCCStore:
    """:func:`check_store`, then open it as a store (``kwargs`` as :class:`MVCCStore`)."""
    check_store(path)
    return MVCCStore(path, **kwargs)  # type: ignore[arg-type]
