"""Automatic compaction: how much MVCC history a node keeps (docs/kv.md,
"Compaction and retention").

Theory of operation: etcd's auto-compaction (``--auto-compaction-mode`` and
``--auto-compaction-retention``, etcd v3.3+ semantics):

- **revision** mode keeps the last ``N`` revisions: every
  :data:`REVISION_CHECK` seconds (etcd's five minutes), if the store's
  revision ``R`` is above ``N``, compact at ``R - N``.
- **periodic** mode keeps a duration ``P`` of history: the revision is
  sampled every ``min(P, 1h) / 10``, and the oldest sample kept is the one
  taken about ``P`` ago.  The first compaction happens once ``P`` has
  passed since the node started, then again every ``min(P, 1h)``, each at
  the revision sampled ``P`` before.  So history between ``P`` and about
  ``P + min(P, 1h)`` old may still be readable; nothing younger than ``P``
  is ever compacted away.
- **Only the leader proposes**, as a ``Compact`` entry like ``POST
  /v1/compact``, so every replica drops the same history at the same
  revision.  Every node samples (reading its own revision is free), so a new
  leader already knows what the revision was ``P`` ago.
- A compaction that fails (no leader, a timeout) is tried again at the next
  check; one that finds the store already compacted at or past the target
  counts as done.

``retention`` 0 (or ``off``) disables it.  The default is periodic, one hour
(:data:`DEFAULT_RETENTION`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from .errors import KVError
from .mvcc.ops import CompactedError

log = logging.getLogger("liferaft.kv")

__all__ = [
    "DEFAULT_MODE",
    "DEFAULT_RETENTION",
    "CompactionPolicy",
    "Compactor",
    "parse_policy",
]

Mode = Literal["periodic", "revision"]
MODES: tuple[Mode, ...] = ("periodic", "revision")
DEFAULT_MODE: Mode = "periodic"
DEFAULT_RETENTION = "1h"
#: Seconds between checks in revision mode (etcd's ``revInterval``).
REVISION_CHECK = 300.0
#: Periodic mode compacts at most this often, and samples ten times as often.
MAX_PERIOD_STEP = 3600.0
_SAMPLES_PER_STEP = 10

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


@dataclass(frozen=True)
class CompactionPolicy:
    """What to keep: ``retention`` seconds of history (periodic) or
    revisions (revision); 0 keeps everything.  ``revision_check`` is how
    often revision mode looks (tests shorten it)."""

    mode: Mode = DEFAULT_MODE
    retention: float = 3600.0
    revision_check: float = REVISION_CHECK

    @property
    def enabled(self) -> bool:
        return self.retention > 0

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        if self.mode == "revision":
            return f"revision: keep the last {int(self.retention)} revisions"
        return f"periodic: keep {self.retention:g} s of history"


def _duration(text: str) -> float:
    """``1h``, ``30m``, ``90s``, ``1h30m``, ``2d``; a bare number is hours
    (etcd's reading of ``--auto-compaction-retention=1``)."""
    try:
        return float(text) * 3600
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"a duration like 1h, 30m, 90s or 1h30m, not {text!r}")
    return total


def parse_policy(mode: str, retention: str) -> CompactionPolicy:
    """The policy the two flags give; ValueError with a one-line reason."""
    if mode not in MODES:
        raise ValueError(f"--auto-compaction-mode is periodic or revision, not {mode!r}")
    text = retention.strip().lower()
    if text in ("off", "0", ""):
        return CompactionPolicy(mode, 0)
    if mode == "revision":
        if not text.isdigit():
            raise ValueError(
                f"--auto-compaction-retention in revision mode is a count of revisions, "
                f"not {retention!r}"
            )
        return CompactionPolicy("revision", int(text))
    try:
        seconds = _duration(text)
    except ValueError as exc:
        raise ValueError(f"--auto-compaction-retention: {exc}") from None
    if seconds < 1:
        raise ValueError(
            f"--auto-compaction-retention must be at least 1s (or off), not {retention!r}"
        )
    return CompactionPolicy("periodic", seconds)


class Compactor:
    """Decides when and where to compact (see the module doc).

    ``revision()`` is the node's store revision, ``compact_revision()`` the
    revision it was last compacted at, ``is_leader()`` whether it leads, and
    ``compact(rev)`` proposes a compaction (the service's).  ``clock`` is
    injectable: :meth:`due` is pure bookkeeping on it, so tests drive it
    without sleeping.
    """

    def __init__(
        self,
        policy: CompactionPolicy,
        *,
        revision: Callable[[], int],
        compact_revision: Callable[[], int],
        is_leader: Callable[[], bool],
        compact: Callable[[int], Awaitable[object]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._revision = revision
        self._compact_revision = compact_revision
        self._is_leader = is_leader
        self._compact = compact
        self._clock = clock
        if policy.mode == "periodic" and policy.enabled:
            step = min(policy.retention, MAX_PERIOD_STEP)
            self.interval = step / _SAMPLES_PER_STEP
            self._step = step
            keep = int(policy.retention / self.interval) + 1
        else:
            self.interval = policy.revision_check
            self._step = policy.revision_check
            keep = 1
        # (time, revision) samples, oldest first; the first is ~retention old.
        self._samples: deque[tuple[float, int]] = deque(maxlen=keep)
        self._wait_until = clock() + (policy.retention if policy.mode == "periodic" else 0.0)

    def due(self) -> int | None:
        """Take a sample; the revision to compact at now, or None."""
        if not self.policy.enabled:
            return None
        now = self._clock()
        rev = self._revision()
        if self.policy.mode == "periodic":
            self._samples.append((now, rev))
            if now < self._wait_until:
                return None
            target = self._samples[0][1]
        else:
            target = rev - int(self.policy.retention)
        if not self._is_leader() or target <= 0 or target <= self._compact_revision():
            return None
        return target

    def done(self) -> None:
        """A compaction succeeded: wait a step before the next one."""
        self._wait_until = self._clock() + self._step

    async def check(self) -> int | None:
        """:meth:`due`, and the compaction if one is; the revision compacted at."""
        target = self.due()
        if target is None:
            return None
        try:
            await self._compact(target)
        except CompactedError:
            pass  # compacted at or past it already: as good as done
        except (KVError, TimeoutError) as exc:
            log.info("auto-compaction at revision %d failed (retried later): %s", target, exc)
            return None
        self.done()
        log.info("auto-compaction: compacted at revision %d (%s)", target, self.policy.describe())
        return target

    async def run(self) -> None:
        """:meth:`check` every :attr:`interval` seconds, until cancelled."""
        if not self.policy.enabled:
            return
        while True:
            await asyncio.sleep(self.interval)
            await self.check()
