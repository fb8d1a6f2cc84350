"""Every served etcd call: the rows of each service's module (calls.py)."""

from __future__ import annotations

from . import auth, cluster, kv, lease, maintenance, txn, watch
from .calls import Call


def all_calls() -> list[Call]:
    """The rows both front ends serve."""
    return [
        *kv.CALLS, *txn.CALLS, *watch.CALLS, *lease.CALLS, *cluster.CALLS,
        *maintenance.CALLS, *auth.CALLS,
    ]  # fmt: skip
