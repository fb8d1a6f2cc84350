"""The watch-stream checker (issue 15, "Proof"): every watch stream the
harness opened is gap-free, duplicate-free, in revision order from its
start revision, and agrees with the acknowledged writes.

Input: one :class:`Stream` per watch the harness opened (its key or range,
its start revision, and every event it received, in arrival order, across
reconnects: the client resumes from the last revision it saw + 1, so one
stream is one logical watch), and what each revision did, as the revision
checker replayed it (:attr:`.revisions.RevReport.changes`).

For each stream, :func:`check_watches` counts:

- ``gaps``: an acknowledged change of a key in the stream's range (not a
  delete of a key a gap may have deleted before) at a
  revision from ``start_revision`` up to the stream's coverage (the highest
  revision it received an event or a progress notification for) that the
  stream did not deliver;
- ``dups``: an event (revision, key) delivered a second time;
- ``disorder``: an event at a revision below one delivered before it;
- ``mismatch``: an event that disagrees with the write at its revision
  (kind, value, and with ``prev_kv`` the value before), an event for a key
  that revision did not change, one outside the stream's range or below its
  start.  At a revision the history does not explain (a gap: a lease
  expiry, an unobserved indeterminate write), the event is held against
  every other stream's event for the same key and revision instead.

The soak's verdict line carries ``watch_gaps`` and ``watch_dups``
(:meth:`WatchReport.line`); any count above 0 fails the run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .rev_history import prefix_end
from .rev_model import Change
from .revisions import Seen


@dataclass(frozen=True)
class WEvent:
    """One event as a watcher received it.  ``value``: the put's value (None
    for a delete); ``prev_value``: with ``prev_kv``, the value before (None:
    the key was absent).  ``by``: when it arrived (the harness's monotonic
    clock; optional)."""

    revision: int
    kind: str
    key: str
    value: str | None = None
    prev_value: str | None = None
    by: float = float("inf")

    def __post_init__(self) -> None:
        if self.kind not in ("put", "delete"):
            raise ValueError(f"watch event at {self.revision}: kind must be put or delete")


@dataclass(frozen=True)
class Stream:
    """One watch: ``key`` alone (``end`` None) or ``[key, end)`` (for a prefix
    use :meth:`prefix`), from ``start_revision`` (a concrete revision: for
    "now", the revision the watch's first response named + 1), its events in
    arrival order, and the highest progress notification's revision (0:
    none)."""

    id: int
    key: str
    start_revision: int
    end: str | None = None
    prev_kv: bool = False
    events: tuple[WEvent, ...] = ()
    progress: int = 0

    @classmethod
    def prefix(cls, id: int, prefix: str, start_revision: int, **kw: Any) -> Stream:
        return cls(id, prefix, start_revision, prefix_end(prefix), **kw)

    def covers(self, key: str) -> bool:
        return key == self.key if self.end is None else self.key <= key < self.end


@dataclass
class WatchReport:
    streams: int = 0
    events: int = 0
    gaps: int = 0
    dups: int = 0
    disorder: int = 0
    mismatch: int = 0
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.dups or self.disorder or self.mismatch)

    def line(self) -> str:
        return (f"watch_streams={self.streams} watch_events={self.events} "
                f"watch_gaps={self.gaps} watch_dups={self.dups} "
                f"watch_disorder={self.disorder} watch_mismatch={self.mismatch}")


def _against(ev: WEvent, ch: Change | None, prev_kv: bool) -> str | None:
    """Why ``ev`` disagrees with the acknowledged change ``ch``, or None."""
    if ch is None:
        return "that revision did not change the key"
    if not ch.sure and ev.kind == "delete":
        return None
    if ev.kind != ch.kind or (ev.kind == "put" and ev.value != ch.value):
        return f"the write made it {ch.kind} {ch.value!r}"
    if prev_kv and ch.prev_known and ev.prev_value != ch.prev:
        return f"its prev_kv is {ev.prev_value!r}, but it was {ch.prev!r} before"
    return None


def check_watches(
    streams: Iterable[Stream], changes: Mapping[int, Mapping[str, Change]]
) -> WatchReport:
    """Check every stream against ``changes`` (module docstring)."""
    rep = WatchReport()
    others: dict[tuple[int, str], tuple[int, WEvent]] = {}
    revs = sorted(changes)
    for s in streams:
        rep.streams += 1
        got: set[tuple[int, str]] = set()
        last = 0

        def bad(kind: str, ev: WEvent, why: str, s: Stream = s) -> None:
            setattr(rep, kind, getattr(rep, kind) + 1)
            rep.messages.append(f"watch {s.id} {kind}: {ev.kind} {ev.key}={ev.value!r} at "
                                f"revision {ev.revision}: {why}")

        for ev in s.events:
            rep.events += 1
            r, here = ev.revision, (ev.revision, ev.key)
            if here in got:
                bad("dups", ev, "delivered before")
                continue
            got.add(here)
            if r < last:
                bad("disorder", ev, f"after an event at revision {last}")
            last = max(last, r)
            if not s.covers(ev.key) or r < s.start_revision:
                bad("mismatch", ev, f"outside the watch of {s.key!r} from {s.start_revision}")
            elif r in changes:
                why = _against(ev, changes[r].get(ev.key), s.prev_kv)
                if why:
                    bad("mismatch", ev, why)
            else:
                sid, first = others.setdefault(here, (s.id, ev))
                if (first.kind, first.value) != (ev.kind, ev.value):
                    bad("mismatch", ev, f"watch {sid} got {first.kind} {first.value!r} there")
        upto = max(last, s.progress)
        for r in revs:
            if r < s.start_revision:
                continue
            if r > upto:
                break
            for key, ch in changes[r].items():
                if s.covers(key) and ch.sure and (r, key) not in got:
                    rep.gaps += 1
                    rep.messages.append(f"watch {s.id} gaps: missed {ch.kind} {key}="
                                        f"{ch.value!r} at revision {r} (it saw up to {upto})")
    return rep


def seen_from(streams: Iterable[Stream]) -> list[Seen]:
    """The values the streams saw, for the revision checker to place
    indeterminate writes by (:func:`.revisions.check_revisions`)."""
    return [Seen(e.key, e.value, e.revision, e.by) for s in streams for e in s.events
            if e.kind == "put" and e.value is not None]


def streams_from_json(raw: Iterable[dict[str, Any]]) -> list[Stream]:
    out = []
    for d in raw:
        d = dict(d)
        d["events"] = tuple(WEvent(**e) for e in d.get("events", ()))
        out.append(Stream(**d))
    return out
