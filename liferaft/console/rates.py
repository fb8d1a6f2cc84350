"""The console's rates: one sample a second while gathering, kept 5 minutes.

Definitions (docs/console.md, "Rates"), from counters each member reports
with its state (:func:`counters`, sent through the peer status call's
``extra``):

- ``writes_per_s``: how far the highest store revision any reachable
  member reports moved since the previous sample, per second.  Every
  applied write (put, delete, a transaction that writes, a lease grant or
  revoke) advances the revision by one, and the highest is the leader's
  (or a member's just ahead of a new leader's first report).
- ``reads_per_s``: reads served (key reads, ranges, etcd's reads) since the
  previous sample, summed over the members reachable both times, per second.
- ``commit_p50_ms`` / ``commit_p99_ms``: percentiles (nearest rank) of the
  write latencies completed in the last second on every reachable member:
  a write's arrival at a member to its apply there (what
  ``liferaft_commit_latency_seconds`` observes); null without writes.
- ``apply_lag``: the largest gap, over reachable members, between the
  highest commit index any of them reports and that member's applied index.

The first sample after gathering starts has nothing to compare with: its
writes and reads per second are 0.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from liferaft.kv.metrics import Metrics
from liferaft.kv.service import KVService

#: Samples kept: 5 minutes at one a second.
KEEP = 300
#: Latencies a member sends per answer at most (an even subsample past it).
MAX_LATENCIES = 200


def counters(service: KVService, now: float | None = None) -> dict[str, Any]:
    """This node's counters, for its status answers (``Node.on_status``)."""
    m: Metrics = service.metrics
    now = time.monotonic() if now is None else now
    recent = sorted(s * 1000 for t, s in reversed(m.recent_writes) if now - t <= 1.0)
    if len(recent) > MAX_LATENCIES:
        step = len(recent) / MAX_LATENCIES
        recent = [recent[int(i * step)] for i in range(MAX_LATENCIES)]
    return {
        "revision": service.machine.revision(),
        "reads": m.reads_served,
        "write_ms": [round(x, 3) for x in recent],
    }


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank ``p`` percentile (0 < p <= 100) of sorted ``values``."""
    if not values:
        return None
    return values[max(0, math.ceil(p / 100 * len(values)) - 1)]


class Rates:
    """Samples from successive gathers; :attr:`history` holds the last 5 minutes."""

    def __init__(self, keep: int = KEEP) -> None:
        self.history: deque[dict[str, Any]] = deque(maxlen=keep)
        self._prev_t: float | None = None
        self._prev_rev: int | None = None
        self._prev_reads: dict[str, int] = {}

    def sample(
        self,
        t: float,
        revision: int | None,
        reads: dict[str, int],
        write_ms: Iterable[float],
        apply_lag: int | None,
    ) -> dict[str, Any]:
        """Record the sample taken at unix time ``t``: the highest revision
        seen (None: no member answered), each reachable member's reads
        served, the write latencies (ms) of the last second, the apply lag.
        Returns the sample (also appended to :attr:`history`)."""
        dt = t - self._prev_t if self._prev_t is not None else 0.0
        writes = reads_s = 0.0
        if dt > 0:
            if revision is not None and self._prev_rev is not None and revision >= self._prev_rev:
                writes = (revision - self._prev_rev) / dt
            # A member that restarted counts from 0 again: skipped this once.
            got = [n - self._prev_reads[m] for m, n in reads.items() if m in self._prev_reads]
            reads_s = sum(d for d in got if d >= 0) / dt
        lat = sorted(write_ms)
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        s = {
            "t": round(t, 3),
            "writes_per_s": round(writes, 2),
            "reads_per_s": round(reads_s, 2),
            "commit_p50_ms": None if p50 is None else round(p50, 3),
            "commit_p99_ms": None if p99 is None else round(p99, 3),
            "apply_lag": apply_lag if apply_lag is not None else 0,
        }
        self._prev_t = t
        if revision is not None:
            self._prev_rev = max(revision, self._prev_rev or 0)
        self._prev_reads = dict(reads)
        self.history.append(s)
        return s
