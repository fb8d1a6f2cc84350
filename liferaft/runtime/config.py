"""The configuration and the status report of a node.

:class:`NodeConfig` is what an operator tunes; :class:`NodeStatus` is what
:meth:`Node.status` reports.  Both live here, apart from the node's parts,
so every part can read the config without importing the facade.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import BadConfigError


@dataclass
class NodeConfig:
    """Tuning of one node.  Times are in seconds; the core counts ticks."""

    id: str
    #: The cluster this node belongs to, written into every peer handshake.
    #: Given once, here: the Node hands it (and ``id``) to its transport.
    #: None takes the transport's, if it was built with one, else "liferaft".
    cluster_id: str | None = None
    tick_interval: float = 0.05
    election_ticks: int = 20  # 1 s with the default tick
    heartbeat_ticks: int = 2  # 100 ms
    commit_timeout: float = 5.0
    read_timeout: float = 5.0
    snapshot_entries: int = 10_000
    snapshot_bytes: int = 64 << 20
    #: Allow lease-based answers (thesis §6.4.1) to the reads that ask for
    #: one (``read(..., consistency="lease")``); linearizable reads always
    #: get a confirmed ReadIndex round.  Needs check_quorum.  Off, here and
    #: in ``liferaft serve`` alike: a lease is only as safe as the operator's
    #: clocks, so the operator turns it on (docs/runtime.md, "Lease reads").
    lease_reads: bool = False
    pre_vote: bool = True
    check_quorum: bool = True
    max_batch: int = 4096
    #: A Ready with at most this many new entries is fsynced on the event
    #: loop's thread; larger ones go to a worker thread so the loop keeps
    #: reading and batching meanwhile.  The thread hop cost about 0.1-0.25 ms
    #: per fsync on the 2-core bench machine, most of a lightly loaded write's
    #: latency; under load the batches grow and the thread pays for itself.
    inline_sync_entries: int = 16
    #: An off-loop state machine (``apply_off_loop``) is handed a batch of
    #: at most this many committed entries on the event loop's thread when
    #: its worker is idle and no other write waits here: a write alone then
    #: skips two thread hops (liferaft-kv's LMDB store: about 0.15 ms of its
    #: latency and 0.2 ms of leader CPU on the 2-core bench machine,
    #: BENCHMARKS.md, issue 18).  Larger batches, and any while the worker
    #: is busy or other writes wait, go to the worker, so the loop keeps
    #: reading and batching under load.  0 (the default): always the worker,
    #: as a state machine that declares ``apply_off_loop`` may block for
    #: long; turn it on only for one whose small batch costs about what a
    #: WAL fsync does (``liferaft serve`` sets 16 for its store).
    inline_apply_entries: int = 0
    #: Longest a state machine with ``settle()`` keeps a batch applied on
    #: the loop uncommitted (docs/statemachine.md, "settle"): one commit and
    #: its fsync then serve every inline batch of that stretch.  Nothing
    #: acknowledged waits for it, and a crash only makes the node apply
    #: those entries again from its log; reads never see less (another
    #: thread's read settles first).  etcd's backend commits every 0.1 s.
    settle_delay: float = 0.1
    #: Longest a leader waits to tell its followers that the commit index
    #: advanced, when no append or heartbeat carries it sooner (the core's
    #: lazy commit broadcast, docs/core.md).  One write at a time then costs
    #: a follower one message, not two, when the next write comes within
    #: it.  Followers apply, and serve stale reads, up to this much later;
    #: linearizable reads and acknowledgements are unaffected.  0 sends the
    #: commit as soon as the node task is idle.  In effect never more than a
    #: tick: a tick flushes it anyway (so a longer value, or the default
    #: with a tick shorter than 1 ms, is allowed and acts as one tick).
    commit_flush_delay: float = 0.001
    #: Seeds the node's randomness (election jitter, read nonces); tests only.
    #: None (the default) draws from the OS, so every start of a node differs,
    #: which read nonces need (liferaft.core.RawNode.read_index).
    seed: int | None = None

    def validate(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise BadConfigError("id must be a non-empty string")
        if self.cluster_id is not None and (
            not isinstance(self.cluster_id, str) or not self.cluster_id
        ):
            raise BadConfigError("cluster_id must be a non-empty string (or None)")
        if self.tick_interval <= 0:
            raise BadConfigError("tick_interval must be > 0")
        if self.heartbeat_ticks <= 0 or self.election_ticks <= self.heartbeat_ticks:
            raise BadConfigError("need 0 < heartbeat_ticks < election_ticks")
        if self.commit_timeout <= 0 or self.read_timeout <= 0:
            raise BadConfigError("timeouts must be > 0")
        if self.snapshot_entries <= 0 or self.snapshot_bytes <= 0:
            raise BadConfigError("snapshot thresholds must be > 0")
        if self.max_batch <= 0:
            raise BadConfigError("max_batch must be > 0")
        if not self.commit_flush_delay >= 0:  # also refuses NaN
            raise BadConfigError("commit_flush_delay must be >= 0")
        if self.inline_sync_entries < 0:
            raise BadConfigError("inline_sync_entries must be >= 0")
        if self.inline_apply_entries < 0:
            raise BadConfigError("inline_apply_entries must be >= 0")
        if not 0 <= self.settle_delay <= 60:  # also refuses NaN
            raise BadConfigError("settle_delay must be between 0 and 60 seconds")
        if self.lease_reads and not self.check_quorum:
            raise BadConfigError("lease_reads needs check_quorum")


@dataclass(frozen=True)
class PeerInfo:
    match: int
    lag: int
    state: str
    learner: bool
    active: bool


@dataclass(frozen=True)
class NodeStatus:
    id: str
    role: str
    term: int
    leader: str | None
    commit_index: int
    applied_index: int
    last_log_index: int
    snapshot_index: int
    members: dict[str, dict[str, Any]]
    voters: list[str]
    learners: list[str]
    peers: dict[str, PeerInfo] = field(default_factory=dict)
    storage_ok: bool = True
    #: Members this node cannot reach because their committed address is
    #: unusable (id -> reason); remove or re-add them to fix it.
    bad_peer_addresses: dict[str, str] = field(default_factory=dict)
