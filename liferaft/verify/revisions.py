"""The revision-order checker: the store revision is the witness order
(issue 15, "Proof").

Given a history of :class:`~.rev_history.RevOp` (every ``ok`` response
names a store revision), :func:`check_revisions` replays the acknowledged
writes in revision order and checks:

1. **Each read matches the state at its revision**: a range step's keys,
   values, ``mod_revision`` and lease (and ``create_revision``/``version``
   when recorded) against the replayed store at ``at`` (or the request's
   revision); a key the store holds there must not be missing, nor a
   deleted one present.  Each transaction's branch must be the one its
   compares pick on the state just before its revision (a write that
   changed nothing: the state at its revision), and a delete's count must
   be what was there.
2. **Revision order respects real time**: if A returned before B was
   invoked, rev(B) > rev(A) when B changed something, rev(B) >= rev(A)
   otherwise (a read is served at a revision at or after every write that
   finished before it began, and below every write that began after it
   returned).
3. **One change per revision**: no two requests that changed something
   claim the same revision.

*Which request changed something* comes from its response: a put; a delete
whose count is above 0.  A delete without a count and a lease revoke do not
say whether they changed anything (a revoke's keys may have gone already,
with an expiry or an unseen write that moved them off the lease, at the
same revision the revoke then reports); so their revision, if no other
write claims it, is a gap: the keys they could delete are uncertain there,
and absent once a read sees them so.

*Revisions no acknowledged write claims.*  An indeterminate (``info``)
write is placed only where it is observed: a read (or a watch event, given
as ``seen``) that returns a value at a ``mod_revision`` no ``ok`` write
claims pins the ``info`` write of that key and value, invoked before the
observation, to that revision (values are unique per write in the harness,
so the pin is exact; with repeated values the earliest such write is
taken).  A value at an unclaimed revision that no write could have made is
a violation.  Revisions still unclaimed after that are *gaps*: an
unobserved indeterminate write or a lease expiry took them, so they may
have deleted any key or put a value nobody read; the replayed store treats
the keys they could touch as uncertain until a request is seen to change
them again (:mod:`.rev_model`), and never holds an uncertain fact against
a response.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from .rev_history import KV, RevOp, Step
from .rev_model import Change, Model


@dataclass(frozen=True)
class Seen:
    """A value observed outside the history (a watch event): ``key`` held
    ``value`` at ``revision``, known by time ``by``."""

    key: str
    value: str
    revision: int
    by: float = float("inf")


@dataclass
class RevReport:
    """What :func:`check_revisions` found.  ``changes`` is, per revision the
    history explains, what it did to each key; ``gaps`` the revisions it
    does not (both for the watch checker)."""

    ops: int = 0
    pinned: int = 0
    violations: list[str] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    changes: dict[int, dict[str, Change]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def line(self) -> str:
        return (f"rev_ops={self.ops} rev_pinned={self.pinned} rev_gaps={len(self.gaps)} "
                f"rev_violations={len(self.violations)}")


class _Checker:
    def __init__(self, ops: list[RevOp], seen: Iterable[Seen]) -> None:
        self.rep = RevReport(ops=len(ops))
        self.m = Model(universe=sorted({s.key for o in ops if o.status != "fail"
                                        for s in o.success + o.failure if s.f == "put"}))
        self.ok = [o for o in ops if o.status == "ok"]
        self.info = [o for o in ops if o.status == "info" and o.is_write()]
        self.seen = list(seen)
        self.claims: dict[int, RevOp] = {}
        self.pins: dict[int, tuple[int, bool]] = {}  # info op id -> (revision, branch)
        self.quiet: dict[int, list[RevOp]] = defaultdict(list)
        self.changed: set[int] = set()

    def bad(self, msg: str) -> None:
        self.rep.violations.append(msg)

    def classify(self) -> None:
        for o in self.ok:
            assert o.revision is not None
            br = o.branch
            if any(s.f == "put" for s in br) or any((s.deleted or 0) > 0 for s in br):
                if o.revision in self.claims:
                    p = self.claims[o.revision]
                    self.bad(f"revision {o.revision} claimed by two changes: #{p.id} and #{o.id}")
                else:
                    self.claims[o.revision] = o
            else:
                self.quiet[o.revision].append(o)

    def pin(self) -> None:
        """Place the indeterminate writes that reads (or watches) observed."""
        obs: list[tuple[KV, float, str]] = [
            (kv, o.ret or 0.0, f"#{o.id}") for o in self.ok for s in o.branch
            if s.f == "range" and s.kvs for kv in s.kvs]
        obs += [(KV(s.key, s.value, s.revision), s.by, "a watch") for s in self.seen]
        by_rev: dict[int, RevOp] = {}
        for kv, t, who in sorted(obs, key=lambda x: x[1]):
            m = kv.mod_revision
            if m in self.claims:
                continue
            if m in by_rev and _puts(by_rev[m], kv) is not None:
                continue
            cands = [o for o in self.info if o.call <= t and _puts(o, kv) is not None
                     and self.pins.get(o.id, (m,))[0] == m]
            if not cands:
                self.bad(f"{who} saw {kv.key}={kv.value!r} at mod_revision {m}: no acknowledged "
                         f"write claims {m} and no indeterminate write of that value fits")
                continue
            o = cands[0]
            if m in by_rev:
                self.bad(f"revision {m} claimed by two changes: #{by_rev[m].id} and #{o.id} "
                         f"(both seen by {who})")
                continue
            by_rev[m] = o
            self.pins[o.id] = (m, bool(_puts(o, kv)))
        for m, o in by_rev.items():
            self.claims[m] = o
        self.rep.pinned = len(by_rev)

    def replay(self) -> None:
        revs = {o.revision or 0 for o in self.ok} | set(self.claims)
        for r in range(1, max(revs, default=0) + 1):
            ch = self.claims.get(r)
            if ch is None:
                self.m.gaps.append(r)
            else:
                self.changed.add(ch.id)
                self.run(ch, r, changer=True)
            for o in self.quiet.get(r, []):
                self.run(o, r, changer=False)
        self.rep.gaps = self.m.gaps
        self.rep.changes = self.m.changes

    def run(self, o: RevOp, r: int, changer: bool) -> None:
        """Check (and, for the change at ``r``, apply) one request at revision ``r``."""
        m = self.m
        before = r - 1 if changer else r
        branch = o.succeeded if o.status == "ok" else self.pins[o.id][1]
        held = [m.holds(c, before) for c in o.compare]
        if branch and False in held:
            c = o.compare[held.index(False)]
            self.bad(f"#{o.id} ran its success branch at revision {r}, but "
                     f"{c.key}.{c.target} {c.op} {c.operand!r} was false at {before}")
        elif not branch and held and all(h is True for h in held):
            self.bad(f"#{o.id} ran its failure branch at revision {r}, but every compare "
                     f"held at {before}")
        if o.revoke:
            keys = m.leased(o.revoke, r)
            if m.gaps and m.gaps[-1] == r:
                # It (or an expiry) took r: what held the lease at r - 1 is
                # gone from r on (a key that was uncertain may have left the
                # lease; one that was sure may have been put again at r).
                for k in keys:
                    if not m.uncertain(k, r - 1):
                        m.kill(k, r)
            elif any(not m.uncertain(k, r) for k in keys):
                self.bad(f"#{o.id} revoked lease {o.revoke} at revision {r}, but "
                         f"{sorted(keys)} still held it there")
            return
        for s in o.success if branch else o.failure:
            if s.f == "put" and changer:
                assert s.value is not None
                m.put(s.key, s.value, s.lease, r)
            elif s.f == "delete":
                self.check_delete(o, s, r, changer)
            elif s.f == "range" and s.kvs is not None:
                self.check_range(o, s, s.at or r)

    def check_delete(self, o: RevOp, s: Step, r: int, changer: bool) -> None:
        m = self.m
        keys = m.in_range(s)
        sure = not any(m.uncertain(k, r) for k in keys)
        n = m.delete(keys, r) if changer else sum(m.at(k, r).value is not None for k in keys)
        if not changer and m.gaps and m.gaps[-1] == r:  # a delete without a count took r?
            for k in keys:
                m.learn_absent(k, r)
            return
        if sure and s.deleted is not None and s.deleted != n:
            self.bad(f"#{o.id} deleted {s.deleted} key(s) of {s.key!r} at revision {r}, but the "
                     f"store held {n} there")
        elif sure and not changer and n:
            self.bad(f"#{o.id} changed nothing at revision {r}, but {n} key(s) of {s.key!r} were "
                     f"there to delete")

    def check_range(self, o: RevOp, s: Step, x: int) -> None:
        m = self.m
        got = {kv.key: kv for kv in s.kvs or ()}
        last = max(got) if s.more and got else None
        for k in sorted(set(m.in_range(s)) | set(got)):
            if last is not None and k > last:
                break
            v, kv = m.at(k, x), got.get(k)
            unsure = m.uncertain(k, x)
            if kv is None:
                if v.value is None:
                    continue
                if unsure:
                    m.learn_absent(k, x)
                    continue
                self.bad(f"#{o.id} read {k} as absent at revision {x}, but it held {v.value!r} "
                         f"since {v.rev}")
            elif kv.mod_revision > x:
                self.bad(f"#{o.id} read {k} at revision {x} with a later mod_revision "
                         f"{kv.mod_revision}")
            elif kv.mod_revision < v.rev or (kv.mod_revision == v.rev and v.value is None):
                now = "absent" if v.value is None else repr(v.value)
                self.bad(f"#{o.id} read a stale {k}={kv.value!r} (mod_revision {kv.mod_revision})"
                         f" at revision {x}: it was {now} since {v.rev}")
            elif kv.mod_revision == v.rev:
                self.check_kv(o, kv, x)
            elif kv.mod_revision in self.claims:
                self.bad(f"#{o.id} read {k}={kv.value!r} at mod_revision {kv.mod_revision}, but "
                         f"#{self.claims[kv.mod_revision].id} made that revision without it")

    def check_kv(self, o: RevOp, kv: KV, x: int) -> None:
        v = self.m.at(kv.key, x)
        want = {"value": v.value, "lease": v.lease}
        got: dict[str, object] = {"value": kv.value, "lease": kv.lease}
        if self.m.meta_certain(v):
            for f, a, b in (("create_revision", kv.create_revision, v.create),
                            ("version", kv.version, v.version)):
                if a:
                    got[f], want[f] = a, b
        for f in got:
            if got[f] != want[f]:
                self.bad(f"#{o.id} read {kv.key} at revision {x} with {f} {got[f]!r}; "
                         f"the write at {v.rev} gives {want[f]!r}")

    def floors(self, subjects: list[RevOp]) -> dict[int, RevOp]:
        """Per subject, the ok op of highest revision that returned before it began."""
        done = sorted(self.ok, key=lambda o: o.ret or 0.0)
        out: dict[int, RevOp] = {}
        best: RevOp | None = None
        i = 0
        for b in sorted(subjects, key=lambda o: o.call):
            while i < len(done) and (done[i].ret or 0.0) < b.call:
                if best is None or (done[i].revision or 0) > (best.revision or 0):
                    best = done[i]
                i += 1
            if best is not None:
                out[b.id] = best
        return out

    def real_time(self) -> None:
        """rev(B) > rev(A) (>= when B changed nothing) whenever A returned before B began."""
        pinned = [o for o in self.info if o.id in self.pins]
        floors = self.floors(self.ok + pinned)
        for b in self.ok + pinned:
            a = floors.get(b.id)
            if a is None:
                continue
            ra, rb = a.revision or 0, b.revision if b.status == "ok" else self.pins[b.id][0]
            assert rb is not None
            strict = b.id in self.changed or b.status == "info"
            if rb < ra or (strict and rb == ra):
                self.bad(f"real time: #{a.id} returned at {a.ret:.3f} with revision {ra} "
                         f"before #{b.id} began at {b.call:.3f}, yet #{b.id} has revision {rb}")


def _puts(o: RevOp, kv: KV) -> bool | None:
    """True/False if ``o``'s success/failure branch puts ``kv``'s key and value; else None."""
    for branch, steps in ((True, o.success), (False, o.failure)):
        if any(s.f == "put" and s.key == kv.key and s.value == kv.value for s in steps):
            return branch
    return None


def check_revisions(ops: Iterable[RevOp], seen: Iterable[Seen] = ()) -> RevReport:
    """Check a history against the store-revision order (module docstring)."""
    c = _Checker(list(ops), seen)
    c.classify()
    c.pin()
    c.replay()
    c.real_time()
    return c.rep
