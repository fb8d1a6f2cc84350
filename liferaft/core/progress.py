"""The leader's view of one follower: probe, replicate and snapshot states.

Theory of operation
-------------------
``match`` is the highest index known to be replicated on the follower and
``next`` the next index to send (§5.3, "nextIndex" and "matchIndex").  How the
leader sends depends on the state:

* PROBE: the leader does not know where the logs diverge.  It sends one
  AppendEntries and waits (``probe_sent``) for the answer or a heartbeat
  response before sending another, so a rejection walks ``next`` back without
  a flood of doomed messages.
* REPLICATE: the logs are known to match up to ``match``.  The leader streams
  entries optimistically, advancing ``next`` as it sends, limited by the
  in-flight window (pipelining, thesis §10.2.2).
* SNAPSHOT: the entries the follower needs are compacted; an InstallSnapshot
  is on its way and nothing else is sent until it is acknowledged or fails.

Invariant: ``match < next`` in every state.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """A bounded window of in-flight AppendEntries, by last index and bytes.

    The window is full when it holds ``capacity`` messages or ``max_bytes``
    bytes (0 means no byte limit).  Entries leave it when acknowledged.
    """

    __slots__ = ("capacity", "max_bytes", "_q", "bytes")

    def __init__(self, capacity: int, max_bytes: int = 0) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._q: deque[tuple[int, int]] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._q)

    def add(self, last_index: int, nbytes: int) -> None:
        self._q.append((last_index, nbytes))
        self.bytes += nbytes

    def free_le(self, index: int) -> None:
        """Release every message whose last index is <= ``index``."""
        q = self._q
        while q and q[0][0] <= index:
            self.bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        if self._q:
            self.bytes -= self._q.popleft()[1]

    def full(self) -> bool:
        return len(self._q) >= self.capacity or (
            self.max_bytes > 0 and self.bytes >= self.max_bytes
        )

    def reset(self) -> None:
        self._q.clear()
        self.bytes = 0


class Progress:
    """Replication state of one peer, as tracked by the leader."""

    __slots__ = (
        "match",
        "next",
        "state",
        "pending_snapshot",
        "recent_active",
        "probe_sent",
        "inflights",
        "is_learner",
        "commit_sent",
    )

    def __init__(self, next_index: int, inflight_cap: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        # Index of the snapshot in flight, while in SNAPSHOT state.
        self.pending_snapshot = 0
        # Set by any message from the peer; check-quorum reads and clears it.
        self.recent_active = False
        # In PROBE: one AppendEntries is outstanding, send nothing more.
        self.probe_sent = False
        self.inflights = Inflights(inflight_cap)
        self.is_learner = is_learner
        # The highest commit index a message to this peer has carried (a
        # heartbeat's min(match, commit) included): a pending commit needs
        # an extra message only to a peer told less (leader.flush_commit).
        self.commit_sent = 0

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.value}"
            f"{', learner' if self.is_learner else ''})"
        )

    def reset(self, next_index: int, match: int = 0) -> None:
        """Start over in PROBE from ``next_index`` (a new term began)."""
        self._reset_state(ProgressState.PROBE)
        self.recent_active = False
        self.match = match
        self.next = next_index
        self.commit_sent = 0

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        # After a snapshot, resume right after it: the follower has it unless
        # it failed, in which case the probe finds the truth.
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """Record an acknowledgement of index ``n``; False if it was stale."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def sent_entries(self, last_index: int, nbytes: int) -> None:
        """Account for an AppendEntries carrying entries up to ``last_index``."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflights.add(last_index, nbytes)
        else:
            self.probe_sent = True

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """Handle a rejection of prev index ``rejected``; False if it was stale.

        ``match_hint`` is the highest index that may still match, derived from
        the follower's conflict hint.
        """
        if self.state is ProgressState.REPLICATE:
            # Rejections at or below match are reordered stale messages.
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        # In PROBE only the answer to the last probe counts.
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        """True when the leader must not send more AppendEntries now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True
