"""etcd's 64-bit cluster and member ids, derived from liferaft's names.

etcd numbers clusters and members with random uint64s; liferaft names them
(``--cluster-id``, ``--id``).  Every ResponseHeader and every Member carries
the numbers, and clients send them back (``MemberRemove``, ``MoveLeader``),
so they must be the same on every node and across restarts: each is a hash
of the names, never stored.  0 means "none" in etcd's messages (no leader),
so a hash of 0 is moved to 1.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def _u64(*parts: str) -> int:
    h = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") or 1


def cluster_id(cluster: str) -> int:
    """The uint64 etcd clients see as the cluster id."""
    return _u64("cluster", cluster)


def member_id(cluster: str, node: str) -> int:
    """The uint64 etcd clients see as ``node``'s member id in ``cluster``."""
    return _u64("member", cluster, node)


def node_of(cluster: str, mid: int, nodes: Iterable[str]) -> str | None:
    """The node among ``nodes`` whose member id is ``mid``; None if none."""
    for n in nodes:
        if member_id(cluster, n) == mid:
            return n
    return None


def hex_id(mid: int) -> str:
    """A member id as etcdctl prints it (lower-case hex, no padding)."""
    return f"{mid:x}"
