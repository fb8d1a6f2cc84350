"""The store the revision checker replays writes into: every version of every
key by revision, and which of them the history cannot be sure of.

A revision that no acknowledged write claims (a *gap*) was taken by
something the history does not show: an indeterminate write nobody observed,
or a lease expiry (the leader's revoke).  A gap may have deleted any key, or
put a value that was overwritten before anyone read it; so a key's state at
revision ``x`` is *uncertain* when a gap lies between its last known change
and ``x``, and its ``create_revision`` and ``version`` are uncertain when a
gap lies anywhere in its current generation.  Uncertain facts are never held
against a read (no false alarms); everything else must match exactly.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from .rev_history import Cond, Step


@dataclass(frozen=True)
class Ver:
    """A key's state from revision ``eff`` on.  ``value`` None: absent.
    ``rev`` is the change that made it; for an absence learned from a read
    (a gap deleted the key) ``rev`` is the last known change and ``eff`` the
    revision it was seen absent at.  ``gen`` is where this generation's
    knowledge starts (meta certain when no gap lies in ``(gen, rev]``).
    ``doubt``: the version ``rev`` is dead from ``eff`` on, but whether the
    key is absent is not known (a revoke at a gap, :meth:`Model.kill`)."""

    eff: int
    rev: int
    value: str | None
    create: int = 0
    version: int = 0
    lease: int = 0
    gen: int = 0
    doubt: bool = False


_NONE = Ver(0, 0, None)


@dataclass(frozen=True)
class Change:
    """What revision ``r`` did to one key (for the watch checker).
    ``prev`` is the value before (None: absent); ``prev_known`` False when
    the key was uncertain just before ``r``: then a delete is not ``sure``
    either (a gap may have deleted the key already)."""

    kind: str  # "put" or "delete"
    value: str | None
    prev: str | None
    prev_known: bool = True

    @property
    def sure(self) -> bool:
        return self.kind == "put" or self.prev_known


@dataclass
class Model:
    keys: dict[str, list[Ver]] = field(default_factory=dict)
    gaps: list[int] = field(default_factory=list)
    universe: list[str] = field(default_factory=list)  # every key any request put, sorted
    changes: dict[int, dict[str, Change]] = field(default_factory=dict)

    def at(self, key: str, x: int) -> Ver:
        """The key's state at revision ``x``."""
        vs = self.keys.get(key)
        if not vs:
            return _NONE
        i = bisect.bisect_right([v.eff for v in vs], x) if vs[-1].eff > x else len(vs)
        return vs[i - 1] if i else _NONE

    def gap_in(self, lo: int, hi: int) -> bool:
        """Whether a gap lies in ``(lo, hi]``."""
        i = bisect.bisect_right(self.gaps, lo)
        return i < len(self.gaps) and self.gaps[i] <= hi

    def uncertain(self, key: str, x: int) -> bool:
        v = self.at(key, x)
        return v.doubt or self.gap_in(v.eff, x)

    def meta_certain(self, v: Ver) -> bool:
        return not self.gap_in(v.gen, v.rev)

    def in_range(self, s: Step) -> list[str]:
        """The keys of the universe a step's key or range covers."""
        if s.end is None:
            return [s.key]
        lo = bisect.bisect_left(self.universe, s.key)
        hi = bisect.bisect_left(self.universe, s.end)
        return self.universe[lo:hi]

    def _set(self, key: str, v: Ver, r: int) -> None:
        vs = self.keys.setdefault(key, [])
        if key not in self.changes.get(r, {}):
            before = self.at(key, r - 1)
            self.changes.setdefault(r, {})[key] = Change(
                "put" if v.value is not None else "delete", v.value, before.value,
                not self.uncertain(key, r - 1))
        else:
            c = self.changes[r][key]
            self.changes[r][key] = Change("put" if v.value is not None else "delete", v.value,
                                          c.prev, c.prev_known)
        if vs and vs[-1].eff == r:
            vs[-1] = v
        else:
            vs.append(v)

    def put(self, key: str, value: str, lease: int, r: int) -> None:
        p = self.at(key, r)
        if p.value is None:
            self._set(key, Ver(r, r, value, r, 1, lease, p.gen if p.doubt else p.eff), r)
        else:
            self._set(key, Ver(r, r, value, p.create, p.version + 1, lease, p.gen), r)

    def delete(self, keys: list[str], r: int) -> int:
        """Delete the keys present at ``r``; how many there were."""
        n = 0
        for k in keys:
            if self.at(k, r).value is not None:
                self._set(k, Ver(r, r, None, gen=r), r)
                n += 1
            elif self.uncertain(k, r - 1):  # a gap may have put it: absent for sure now
                self._set(k, Ver(r, r, None, gen=r), r)
        return n

    def learn_absent(self, key: str, x: int) -> None:
        """A read saw ``key`` absent at ``x`` where a gap may have deleted it."""
        p, vs = self.at(key, x), self.keys.get(key, [])
        if p.value is not None and vs[-1].eff <= x:  # only at the end: history stays ordered
            self.keys.setdefault(key, []).append(Ver(x, p.rev, None, gen=x))

    def kill(self, key: str, x: int) -> None:
        """The key's current version is gone from ``x`` on; the key may have
        been put again there (a lease revoke that reported a gap)."""
        p, vs = self.at(key, x), self.keys.get(key, [])
        if p.value is not None and vs[-1].eff <= x:
            vs.append(Ver(x, p.rev, None, gen=p.gen, doubt=True))

    def leased(self, lease: int, x: int) -> list[str]:
        return [k for k in self.keys if (v := self.at(k, x)).value is not None and v.lease == lease]

    def holds(self, c: Cond, x: int) -> bool | None:
        """The compare at revision ``x``; None when the key is uncertain there."""
        v = self.at(c.key, x)
        if self.uncertain(c.key, x):
            return None
        if c.target == "value":
            if v.value is None:
                return False
            got: str | int = v.value
        else:
            if c.target in ("version", "create_revision") and not self.meta_certain(v):
                return None
            got = {"version": v.version, "create_revision": v.create,
                   "mod_revision": v.rev, "lease": v.lease}[c.target] if v.value is not None else 0
        if type(got) is not type(c.operand):
            return False
        return {"=": got == c.operand, "!=": got != c.operand,
                "<": got < c.operand, ">": got > c.operand}[c.op]  # type: ignore[operator]
