"""Giving a store new Raft state: ``liferaft snapshot restore`` and
``liferaft serve --force-new-cluster`` (docs/operations.md, "Restoring from
a backup" and "Losing quorum for good").

Both keep a node's MVCC store and write Raft state around it that starts a
new history (:func:`write_raft_state`): a snapshot at the store's applied
index ``A`` whose configuration is the given members, a hard state that
commits ``A``, and no log.  The snapshot is a deferred one (the store is
the state, liferaft/runtime/checkpoint.py), so nothing is copied: the node
starts, finds its store at ``A``, and the first leader appends after it.
Every member of the new cluster must start from the same store (the same
backup file, or the one survivor's data): two stores at one index with
different contents would be two different replicas forever.

- **restore** (:func:`restore`) builds a new data dir from a backup made
  by ``snapshot save`` or etcdctl's ``snapshot save`` (both are the bytes
  of ``KVMachine.checkpoint_chunks()``; etcd appends a SHA-256 of them,
  accepted and checked), with the ``--initial-cluster`` voters, in term 1.
- **force-new-cluster** (:func:`force_new_cluster`) keeps one survivor's
  data and drops every other member.  First the node runs alone, on no
  network, until it has applied what it knew to be committed (and refuses
  if any other member still answers on its peer address); entries past
  that are dropped (etcd drops them too: with the quorum gone nobody can
  tell whether they were committed, and one could be a write its client
  was told was not applied).  The old ``hardstate``, ``wal/`` and ``snap/``
  move to a backup directory, never deleted; the new state is one term
  past the old, and the cluster epoch one past the node's
  (docs/transport.md, "Epochs").  A record in the data dir
  (:data:`FORCE_RECORD`) says what was done: a later start with the flag
  still given is refused, and one interrupted midway is finished by
  starting again with the flag.
- **stale members**: an old member that comes back with its data meets the
  forced node's newer epoch in the handshake and is told it was removed; it
  stops and records so (:data:`STALE_RECORD`), and never starts on that data
  again (:func:`check_stale`): it must be wiped and joined anew.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from liferaft.core import ConfState, HardState, Snapshot, SnapshotMeta
from liferaft.kv.identity import read_epoch, record_epoch, record_identity
from liferaft.kv.mvcc.checkpoint import fsync_dir
from liferaft.runtime import Node, NodeConfig, NodeError
from liferaft.runtime import address_book as book
from liferaft.runtime.checkpoint import marker
from liferaft.runtime.entry_format import ENTRY_FORMAT_ENVELOPED
from liferaft.runtime.store import DiskStore, wrap_snapshot
from liferaft.storage import DiskStorage
from liferaft.transport.base import parse_address
from liferaft.transport.memory import MemoryNetwork

from .machine import KVMachine

log = logging.getLogger("liferaft.kv")

#: What --force-new-cluster did to this data dir (JSON), in the data dir.
FORCE_RECORD = "force-new-cluster.json"
#: The Raft state of a data dir (everything but the store and the identity).
RAFT_STATE = ("hardstate", "wal", "snap")
#: In a data dir while ``snapshot restore`` builds it (JSON: the backup, the id).
RESTORING = "restore-incomplete"
#: In the data dir of a member told it is of a history its cluster left (JSON).
STALE_RECORD = "removed.json"
_CHUNK = 1 << 20
_SHA = 32


class RebuildError(Exception):
    """Restore or force-new-cluster cannot go on (one line, nothing changed
    unless it says so)."""


def write_raft_state(
    data_dir: Path, index: int, term: int, members: dict[str, dict[str, Any]]
) -> None:
    """Durable Raft state in ``data_dir`` (which holds none): a deferred
    snapshot at ``index`` (the store's applied index) in ``term``, with
    ``members`` (id -> address book entry) as its voters, and a hard state
    that commits it."""
    meta = SnapshotMeta(index, term, ConfState(voters=frozenset(members)))
    store = DiskStore(DiskStorage(data_dir, snapshot_data_in_memory=False))
    try:
        if not store.is_empty():
            raise RebuildError(f"{data_dir} already holds Raft state")
        w = store.receive(meta)
        for chunk in wrap_snapshot(members, [marker(index)], ENTRY_FORMAT_ENVELOPED):
            w.write(chunk)
        w.commit()
        store.save(HardState(term=term, vote=None, commit=index), [], Snapshot(meta))
    finally:
        store.close()


# -- snapshot restore ---------------------------------------------------------------------


def backup_chunks(path: Path) -> Iterator[bytes]:
    """The checkpoint in backup file ``path``, without etcd's SHA-256
    trailer when the file ends with one that matches (etcdctl's ``snapshot
    save`` keeps what the server streamed; etcd's server appends it)."""
    size = path.stat().st_size
    end = size
    if size > _SHA:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            left = size - _SHA
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            if h.digest() == f.read(_SHA):
                end = size - _SHA
    with open(path, "rb") as f:
        left = end
        while left > 0 and (chunk := f.read(min(_CHUNK, left))):
            left -= len(chunk)
            yield chunk


def restore(
    backup: Path, data_dir: Path, node_id: str, cluster: dict[str, str], cluster_id: str
) -> int:
    """Build ``data_dir`` (absent or empty) for member ``node_id`` of a new
    cluster of ``cluster`` (id -> peer address) from ``backup``; the store's
    applied index, where the new log starts.  :class:`RebuildError` (the
    data dir left as it was found) if the backup is damaged or not a store,
    or the disk refuses it.  While it runs the dir holds :data:`RESTORING`,
    removed last: a restore killed midway leaves a dir that refuses to
    start (:func:`check_restored`) instead of one that looks whole."""
    if node_id not in cluster:
        raise RebuildError(f"--initial-cluster does not name {node_id}")
    check_restored(data_dir)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise RebuildError(f"{data_dir} is not empty: restore builds a new data dir")
    made = not data_dir.exists()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        _write_json(data_dir / RESTORING, {"backup": str(backup), "id": node_id})
        machine = KVMachine(data_dir / "kv")
        try:
            machine.restore(backup_chunks(backup))
            index = machine.applied_index()
        finally:
            machine.close()
        if index < 1:
            raise RebuildError(f"{backup} holds an empty store (applied index 0)")
        write_raft_state(data_dir, index, 1, {n: {"addr": a} for n, a in cluster.items()})
        record_identity(data_dir, node_id, cluster_id)
        (data_dir / RESTORING).unlink()
        fsync_dir(data_dir)
    except BaseException as exc:
        # Ctrl-C and a full disk as well (LMDB's errors are not OSErrors):
        # nothing half-built stays.  If even that fails, the mark stays.
        with contextlib.suppress(OSError):
            _empty(data_dir, remove=made)
        if isinstance(exc, RebuildError) or not isinstance(exc, Exception):
            raise
        raise RebuildError(f"cannot restore {backup}: {_why(backup, exc)}") from exc
    return index


def check_restored(data_dir: Path) -> None:
    """:class:`RebuildError` if a ``snapshot restore`` into ``data_dir``
    was cut short (it holds :data:`RESTORING`)."""
    if (data_dir / RESTORING).exists():
        raise RebuildError(
            f"a snapshot restore into {data_dir} did not finish (interrupted): remove "
            f"{data_dir} and run the restore again"
        )


#: bbolt's meta page magic (after the 16-byte page header): an etcd data
#: file, or an etcd 3.4 server's snapshot, is a bbolt database.
_BBOLT_MAGIC = (16, bytes.fromhex("edda0ced"))


def _why(backup: Path, exc: BaseException) -> str:
    """The reason a restore failed, naming an etcd database for what it is."""
    at, magic = _BBOLT_MAGIC
    with contextlib.suppress(OSError), open(backup, "rb") as f:
        f.seek(at)
        if f.read(len(magic)) == magic:
            return (
                "it is an etcd (bbolt) database, not a liferaft-kv snapshot: restore it "
                "with etcdutl, or copy its keys into liferaft-kv with an etcd client"
            )
    return str(exc) or type(exc).__name__


def _empty(data_dir: Path, remove: bool) -> None:
    if not data_dir.exists():
        return
    for p in data_dir.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    if remove:
        data_dir.rmdir()


# -- force-new-cluster ----------------------------------------------------------------------


def read_force_record(data_dir: Path) -> dict[str, Any] | None:
    """What --force-new-cluster recorded in ``data_dir``; None if nothing."""
    try:
        d = json.loads((data_dir / FORCE_RECORD).read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise RebuildError(f"{data_dir / FORCE_RECORD} is damaged: {exc}") from None
    return d if isinstance(d, dict) else None


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


async def _drain(config: NodeConfig, machine: KVMachine, data_dir: Path) -> dict[str, Any]:
    """Run the node alone on a network of its own until it has applied its
    commit index; what it knew then (term, commit, members)."""
    node = Node(config, machine, MemoryNetwork().transport(config.id), data_dir=data_dir)
    await node.start()
    try:
        st = node.status()
        deadline = time.monotonic() + 120
        while st.applied_index < st.commit_index:
            if time.monotonic() > deadline:
                raise RebuildError(
                    f"applying up to the commit index {st.commit_index} did not finish "
                    f"(applied {st.applied_index})"
                )
            await node.clock.sleep(0.05)
            st = node.status()
        return {
            "term": st.term,
            "commit": st.commit_index,
            "last": st.last_log_index,
            "members": {k: dict(v) for k, v in st.members.items()},
        }
    finally:
        await node.stop()


async def answering(members: dict[str, dict[str, Any]], timeout: float = 1.0) -> list[str]:
    """The ``members`` (id -> address book entry) whose peer address accepts
    a TCP connection now.  A member that still runs would, with the others
    of the old majority, go on electing leaders and taking writes beside
    the forced node (which refuses them as strangers, so nothing ever ends
    that): a live old member means the quorum is not lost.  A connection
    is all this asks: whatever listens on an old member's peer address must
    be stopped before the old cluster is given up."""

    async def up(addr: str) -> bool:
        try:
            host, port = parse_address(addr)
            _, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, ValueError, TimeoutError):
            return False
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
        return True

    addrs = {m: book.addresses(e).peer_addr for m, e in sorted(members.items())}
    addrs = {m: a for m, a in addrs.items() if a}
    got = await asyncio.gather(*(up(a) for a in addrs.values()))
    return [f"{m} ({a})" for (m, a), ok in zip(addrs.items(), got, strict=True) if ok]


async def force_new_cluster(config: NodeConfig, machine: KVMachine, data_dir: Path) -> int:
    """Make ``data_dir``'s node the one member of its cluster, keeping what
    it applied (see the module doc); the index the new history starts at.
    Resumes one interrupted midway.  :class:`RebuildError` if refused."""
    rec = read_force_record(data_dir)
    if rec is not None and rec.get("state") == "done":
        raise RebuildError(
            f"--force-new-cluster already ran on {data_dir} ({rec.get('at')}, index "
            f"{rec.get('index')}): start without it. To force again (the quorum is lost "
            f"again), remove {data_dir / FORCE_RECORD} first"
        )
    if rec is None:
        try:
            seen = await _drain(config, machine, data_dir)
        except NodeError as exc:
            raise RebuildError(f"cannot open this node's data: {exc}") from exc
        own = seen["members"].get(config.id)
        if own is None:
            raise RebuildError(f"{config.id} is not a member in its own data: nothing to keep")
        others = {m: e for m, e in seen["members"].items() if m != config.id}
        alive = await answering(others)
        if alive:
            raise RebuildError(
                f"{', '.join(alive)} still answer on their peer addresses: the quorum may not "
                "be lost, and forcing now makes two clusters under one id that both take "
                "writes. Stop every other member first (and wipe it before it ever rejoins); "
                "nothing was changed"
            )
        rec = {
            "state": "started",
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "index": machine.applied_index(),
            "term": seen["term"] + 1,
            "dropped_entries": max(0, seen["last"] - seen["commit"]),
            "removed": sorted(m for m in seen["members"] if m != config.id),
            "member": own,
            "backup": f"force-new-cluster-backup-{int(time.time())}",
        }
        _write_json(data_dir / FORCE_RECORD, rec)
    if "epoch" not in rec:  # recorded before the epoch, by an older build, or just now
        rec = {**rec, "epoch": read_epoch(data_dir) + 1}
        _write_json(data_dir / FORCE_RECORD, rec)
    backup = data_dir / str(rec["backup"])
    backup.mkdir(exist_ok=True)
    for name in RAFT_STATE:
        here = data_dir / name
        if not here.exists():
            continue
        if (backup / name).exists():
            # Moved already: this is new state an interrupted run began.
            shutil.rmtree(here) if here.is_dir() else here.unlink()
        else:
            os.replace(here, backup / name)
    fsync_dir(backup)
    fsync_dir(data_dir)
    if machine.applied_index() != rec["index"]:
        raise RebuildError(
            f"the store is at index {machine.applied_index()}, not {rec['index']} as recorded "
            f"in {data_dir / FORCE_RECORD}: put the old state back from {backup}"
        )
    write_raft_state(data_dir, int(rec["index"]), int(rec["term"]), {config.id: rec["member"]})
    # Before the record says done: a node that serves is of the new epoch.
    record_epoch(data_dir, int(rec["epoch"]))
    _write_json(data_dir / FORCE_RECORD, {**rec, "state": "done"})
    log.warning(
        "FORCE-NEW-CLUSTER: %s is now the only member (removed: %s) at index %d, term %d, "
        "epoch %d; %d uncommitted log entries dropped; the old Raft state is in %s. Remove "
        "--force-new-cluster before the next start, then add members.",
        config.id, ", ".join(rec["removed"]) or "none", rec["index"], rec["term"],
        rec["epoch"], rec["dropped_entries"], backup,
    )  # fmt: skip
    return int(rec["index"])


# -- stale members ------------------------------------------------------------------------


class EpochKeeper:
    """A data dir's cluster epoch as ``liferaft serve`` hands it to its
    transport (docs/transport.md, "Epochs"): ``epoch`` (None for an empty
    node ``joining``: learned), :meth:`learned` and :meth:`removed` its
    callbacks; ``stale`` is set once this node was proven stale."""

    def __init__(self, data_dir: Path, joining: bool) -> None:
        self.data_dir = data_dir
        self.epoch = None if joining else read_epoch(data_dir)
        self.stale = asyncio.Event()
        #: Whether a REMOVED answer is proven (peers authenticate with the
        #: cluster secret or certificates).  Without that, anyone on the peer
        #: port can claim a member's id: the node still stops, but records
        #: nothing that would keep it from starting again.
        self.proven = True

    def learned(self, epoch: int) -> None:
        record_epoch(self.data_dir, epoch)

    def removed(self, reason: str) -> None:
        # Recorded before anything else: this data must never serve again,
        # whatever happens to this process next (check_stale).
        log.error("removed from the cluster: %s; stopping", reason)
        try:
            if self.proven:
                record_stale(self.data_dir, reason)
            else:
                log.error(
                    "not recorded in %s: the peer port authenticates nobody, so this answer "
                    "proves nothing lasting; check the cluster before starting this node again",
                    STALE_RECORD,
                )
        finally:
            self.stale.set()


def check_data_dir(data_dir: Path) -> dict[str, Any] | None:
    """Before a node starts on ``data_dir``: :class:`RebuildError` if a
    restore into it was cut short or it was found stale; else what
    --force-new-cluster recorded in it (None if nothing)."""
    check_restored(data_dir)
    check_stale(data_dir)
    return read_force_record(data_dir)


def record_stale(data_dir: Path, reason: str) -> None:
    """Note in ``data_dir`` that a member of a newer epoch proved this node
    is of a history its cluster left (``reason``: what it said)."""
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_json(data_dir / STALE_RECORD, {"at": at, "reason": reason})


def check_stale(data_dir: Path) -> None:
    """:class:`RebuildError` if ``data_dir`` was found stale (:func:`record_stale`):
    started again, it could with other old members elect a leader and take
    writes beside the cluster that left it."""
    path = data_dir / STALE_RECORD
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except ValueError:
        d = {}
    d = d if isinstance(d, dict) else {}
    raise RebuildError(
        f"this node was removed from its cluster ({d.get('reason', 'see ' + str(path))}; "
        f"{d.get('at', '')}): its data is of a history the cluster left and must not serve "
        f"again. Wipe {data_dir} and start it with --join (to start on it anyway, delete {path})"
    )
