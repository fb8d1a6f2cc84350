"""etcd's overload refusal: "etcdserver: too many requests".

etcd refuses a new proposal while its applied index trails its commit
index by more than 5000 entries (``maxGapBetweenApplyAndCommitIndex``):
the entries are agreed but this member's state machine has not caught up,
so more work would only queue behind them and time out.  liferaft-kv does
the same before it proposes, and also before a linearizable read (which
would wait for that same backlog to apply); a serializable read serves the
applied store as it is and is never refused.
"""

from __future__ import annotations

from liferaft.runtime import Node

from . import errors

#: etcd 3.4's maxGapBetweenApplyAndCommitIndex.
MAX_APPLY_GAP = 5000


def apply_gap(node: Node) -> int:
    """Committed entries this node has not applied yet (0 before it runs)."""
    rn = node.rn
    if rn is None:
        return 0
    # The core's commit index (a field read, no status copy) against the
    # applier's applied index: the off-loop apply is where a backlog forms.
    return max(0, rn.raft.log.committed - node.applied)


def check_load(node: Node) -> None:
    """``errors.TOO_MANY_REQUESTS`` while the apply gap exceeds etcd's bound."""
    if apply_gap(node) > MAX_APPLY_GAP:
        raise errors.TOO_MANY_REQUESTS
