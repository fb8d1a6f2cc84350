"""The lease early-expiry check (issue 15, "Proof": ``lease_early_expiry``).

A key attached to a lease may vanish only once its holder stopped keeping
the lease alive (or revoked it).  Times are on one monotonic clock: the
harness's, which on one machine is the nodes' too (``CLOCK_MONOTONIC`` is
system-wide), so the leader's deadlines and the harness's observations
compare directly.

**The rule.**  Each acknowledged grant or keep-alive, called at ``c`` and
answered at ``r``, was processed by a leader at some ``p`` in ``[c, r]``,
which then set the lease's deadline to ``p + ttl`` (a new leader restarts
it at its full TTL, which only moves it later).  The earliest deadline the
acknowledgements allow is therefore reached by taking every ``p`` as early
as possible: ``T = c0 + ttl`` for the first (the grant), and for each later
acknowledgement in call order, if it was answered by ``T`` (``r <= T``, so
the lease was provably alive when it was processed) ``T = max(T, c + ttl)``;
the first one answered after ``T`` may have come too late, and ``T`` stays.
The lease is *protected until* ``T``, or until the holder's own revoke was
called, whichever is first.  The leader revokes an expired lease at or
after its deadline, and the key is observed gone only after that revoke
commits; so a key observed gone at a time ``t < T`` (the arrival of a watch
delete event, or the return of a read that found it absent: the deletion
happened at or before ``t``) vanished early, and counts once in
``lease_early_expiry``.

**No leader.**  During a leader change a deposed leader that has not yet
heard of its successor may still acknowledge a keep-alive its successor
never saw.  So an acknowledgement whose ``[c, r]`` overlaps one of the
cluster's *leaderless* intervals (from the nemesis log: from a fault that
can cost the leader until a new leader is known everywhere) does not count;
a long enough such interval ends the protection, as it may end the lease.

The keys given must be deleted by nothing but their lease (the harness's
lease keys are written only by their holder); a key the holder deleted
itself is not an expiry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KeyGone:
    """``key`` (attached to the lease) was known gone by time ``seen``."""

    key: str
    seen: float


@dataclass(frozen=True)
class LeaseRecord:
    """One lease as its holder saw it: ``ttl`` seconds, the grant's call and
    return, every *successful* keep-alive's call and return, the holder's
    revoke call (None: it never revoked), and its keys observed gone."""

    id: int
    ttl: float
    granted: tuple[float, float]
    keepalives: tuple[tuple[float, float], ...] = ()
    revoked: float | None = None
    gone: tuple[KeyGone, ...] = ()


@dataclass
class LeaseReport:
    leases: int = 0
    keys_gone: int = 0
    early: int = 0
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.early

    def line(self) -> str:
        return f"leases={self.leases} lease_keys_gone={self.keys_gone} " \
               f"lease_early_expiry={self.early}"


def protected_until(
    lease: LeaseRecord, leaderless: Iterable[tuple[float, float]] = ()
) -> float | None:
    """The time until which ``lease`` provably lived (module docstring);
    None if no acknowledgement counts.  Any counting acknowledgement can
    start the chain: its success proves the lease lived when it was
    processed, with a deadline ``ttl`` later."""
    gaps = list(leaderless)
    acks = sorted(a for a in (lease.granted, *lease.keepalives)
                  if not any(a[0] <= e and a[1] >= s for s, e in gaps))
    if not acks:
        return None
    t = acks[0][0] + lease.ttl
    for c, r in acks[1:]:
        if r > t:
            break
        t = max(t, c + lease.ttl)
    return t if lease.revoked is None else min(t, lease.revoked)


def check_leases(
    leases: Iterable[LeaseRecord], leaderless: Iterable[tuple[float, float]] = ()
) -> LeaseReport:
    """Count the keys that vanished while their lease was provably alive."""
    rep = LeaseReport()
    gaps = list(leaderless)
    for lease in leases:
        rep.leases += 1
        rep.keys_gone += len(lease.gone)
        t = protected_until(lease, gaps)
        if t is None:
            continue
        for g in lease.gone:
            if g.seen < t:
                rep.early += 1
                rep.messages.append(
                    f"lease {lease.id} (ttl {lease.ttl:g} s): {g.key} was gone by {g.seen:.3f}, "
                    f"but the lease was kept alive until at least {t:.3f}")
    return rep


def leases_from_json(raw: dict[str, Any]) -> tuple[list[LeaseRecord], list[tuple[float, float]]]:
    """``{"leases": [...], "leaderless": [[start, end], ...]}`` as saved by the harness."""
    out = []
    for d in raw.get("leases", []):
        d = dict(d)
        d["granted"] = tuple(d["granted"])
        d["keepalives"] = tuple(tuple(k) for k in d.get("keepalives", ()))
        d["gone"] = tuple(KeyGone(**g) for g in d.get("gone", ()))
        out.append(LeaseRecord(**d))
    return out, [(float(s), float(e)) for s, e in raw.get("leaderless", [])]
