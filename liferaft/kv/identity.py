"""Whose data dir this is: the node id and cluster id written at first start.

A node's hard state (its term and vote) and log are its own.  The same
files started under another id make that node vote as the first one did
and forget what it acknowledged itself: two leaders in one term and lost
commits (the Raft thesis, 3.6: a server must not forget its vote or its
log).  etcd refuses a member id that differs from its WAL's; here the data
dir holds ``node``, one JSON object ``{"id", "cluster_id"}``, written once
(write, fsync, rename, fsync of the dir) and compared on every start.

Data dirs written before this file existed get it on their next start: it
cannot tell them apart then, only from then on.

The file also keeps the node's cluster epoch (``"epoch"``, absent: 0):
one more after each ``--force-new-cluster``, or the epoch an empty node
learned when it joined (docs/transport.md, "Epochs").  Its presence also marks a
data dir of this build, so a missing ``kv/`` store is named as deleted, not
as a dir of the in-memory store's builds (docs/kv.md, "The data dir").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from liferaft.kv.mvcc.checkpoint import fsync_dir

FILE = "node"


class IdentityError(Exception):
    """The data dir belongs to another node or cluster (one line)."""


def read_identity(data_dir: Path) -> tuple[str, str] | None:
    """(node id, cluster id) the data dir was written by; None if unrecorded."""
    path = data_dir / FILE
    try:
        d = json.loads(path.read_text())
        return str(d["id"]), str(d["cluster_id"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise IdentityError(
            f"{path} is damaged ({type(exc).__name__}); it should read "
            '{"id": NODE_ID, "cluster_id": CLUSTER_ID}: fix it by hand, never copy another '
            "node's"
        ) from None


def adopted_id(data_dir: Path, given: str) -> str:
    """The node id to run under when started with ``--id given``: the id
    recorded in the data dir when it records ``given`` as its name (a
    member added by etcd's MemberAdd runs under the id the cluster gave it,
    liferaft/kv/adopt.py), else ``given``."""
    try:
        d = json.loads((data_dir / FILE).read_text())
    except (OSError, ValueError):
        return given
    if isinstance(d, dict) and d.get("name") == given and isinstance(d.get("id"), str):
        return str(d["id"])
    return given


def check_identity(data_dir: Path, node_id: str, cluster_id: str, fresh: bool) -> bool:
    """Refuse a data dir of another node or cluster.  True if the dir has
    ours recorded (it was written by this build); a ``fresh`` dir (no Raft
    state: nothing to protect, and a start that failed may be retried under
    another id) counts as unrecorded.  Writes nothing: :func:`record_identity`
    does, once the dir is known to be usable."""
    got = None if fresh else read_identity(data_dir)
    if got is None:
        return False
    if got != (node_id, cluster_id):
        was, was_cluster = got
        raise IdentityError(
            f"{data_dir} is the data dir of node {was} (cluster {was_cluster}), not of "
            f"{node_id} (cluster {cluster_id}): a node started on another's vote and log "
            "can elect two leaders and lose commits; start it on its own data dir, or an "
            "empty one with --join"
        )
    return True


def record_identity(data_dir: Path, node_id: str, cluster_id: str, name: str = "") -> None:
    """Write ``node`` (write, fsync, rename, fsync of the directory);
    ``name``: the ``--id`` the node runs under ``node_id`` for (:func:`adopted_id`)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    _write(data_dir, {"id": node_id, "cluster_id": cluster_id, **({"name": name} if name else {})})


def read_epoch(data_dir: Path) -> int:
    """The cluster epoch recorded in the data dir (0 if none is)."""
    try:
        d = json.loads((data_dir / FILE).read_text())
    except (OSError, ValueError):
        return 0
    epoch = d.get("epoch", 0) if isinstance(d, dict) else 0
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**63:
        # A hand edit: guessing 0 could make a forced node look like one of
        # the history it left, and a huge one would not fit the handshake.
        raise IdentityError(
            f"{data_dir / FILE}: epoch {epoch!r} is not a cluster epoch (0 <= epoch < 2**63); "
            "fix it by hand"
        )
    return epoch


def record_epoch(data_dir: Path, epoch: int) -> None:
    """Keep ``epoch`` in the identity file (written by :func:`record_identity`
    first), durably, before the node acts on it."""
    d = json.loads((data_dir / FILE).read_text())
    _write(data_dir, {**d, "epoch": epoch})


def _write(data_dir: Path, doc: dict[str, object]) -> None:
    tmp = data_dir / (FILE + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(doc) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, data_dir / FILE)
    fsync_dir(data_dir)
