"""No false alarms: histories recorded from a correct store (a tiny reference
store, run sequentially, with overlapping call/return times, indeterminate
writes that did or did not happen, and lease expiries nobody asked for) pass
the revision and watch checkers; and a lost watch event in them is caught."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from liferaft.verify.rev_history import KV, Cond, RevOp, Step
from liferaft.verify.revisions import check_revisions
from liferaft.verify.watches import Stream, WEvent, check_watches

KEYS = ["a", "b", "c", "d"]


class Ref:
    """The store, sequential: key -> KV; one revision per change."""

    def __init__(self) -> None:
        self.kv: dict[str, KV] = {}
        self.rev = 0
        self.events: list[WEvent] = []

    def apply(self, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        out, changed = [], False
        r = self.rev + 1
        for s in steps:
            if s.f == "put":
                assert s.value is not None
                p = self.kv.get(s.key)
                self.kv[s.key] = KV(s.key, s.value, r, p.create_revision if p else r,
                                    p.version + 1 if p else 1, s.lease)
                self.events.append(WEvent(r, "put", s.key, s.value, p.value if p else None))
                out.append(s)
                changed = True
            elif s.f == "delete":
                gone = [k for k in sorted(self.kv) if s.covers(k)]
                for k in gone:
                    self.events.append(WEvent(r, "delete", k, None, self.kv.pop(k).value))
                changed = changed or bool(gone)
                out.append(replace(s, deleted=len(gone)))
            else:
                out.append(replace(s, kvs=tuple(self.kv[k] for k in sorted(self.kv)
                                                if s.covers(k))))
        if changed:
            self.rev = r
        return tuple(out)

    def holds(self, c: Cond) -> bool:
        kv = self.kv.get(c.key)
        return kv is not None and kv.value == c.operand


def random_history(seed: int) -> tuple[list[RevOp], Ref]:
    rng = random.Random(seed)
    ref, ops = Ref(), []
    for i in range(rng.randint(5, 40)):
        t = float(i)
        call, ret = t - rng.uniform(0, 2.5), t + rng.uniform(0, 2.5)
        k, v = rng.choice(KEYS), f"v{i}"
        kind = rng.random()
        if kind < 0.06:  # a lease expiry: the leader's revoke, in no client's history
            ref.apply(tuple(Step("delete", x) for x, kv in list(ref.kv.items()) if kv.lease))
            continue
        if kind < 0.12:
            gone = [x for x, kv in ref.kv.items() if kv.lease == 7]
            ref.apply(tuple(Step("delete", x) for x in gone))
            ops.append(RevOp(i, 1, call, ret, revision=ref.rev, revoke=7))
            continue
        lease = 7 if rng.random() < 0.3 else 0
        steps: tuple[Step, ...]
        compare: tuple[Cond, ...] = ()
        if kind < 0.45:
            steps = (Step("put", k, value=v, lease=lease),)
        elif kind < 0.5:
            steps = (Step("delete", k),)
        elif kind < 0.55:
            steps = (Step("delete", k, "c"),)
        elif kind < 0.7:
            compare = (Cond(k, "value", "=", f"v{rng.randrange(max(i, 1))}"),)
            steps = (Step("put", k, value=v), Step("range", rng.choice(KEYS)))
        elif kind < 0.85:
            steps = (Step("range", k),)
        else:
            steps = (Step("range", "a", "\U0010ffff"),)
        info = kind < 0.7 and rng.random() < 0.2
        if info and rng.random() < 0.5:  # indeterminate, and it never happened
            ops.append(RevOp(i, 1, call, None, "info", compare=compare, success=steps))
            continue
        ok = all(ref.holds(c) for c in compare)
        done = ref.apply(steps if ok else ())
        if info:
            ops.append(RevOp(i, 1, call, None, "info", compare=compare, success=steps))
        else:
            ops.append(RevOp(i, 1, call, ret, revision=ref.rev, compare=compare,
                             success=done if ok else steps, succeeded=ok))
    ops.append(RevOp(99, 2, 50, 51, revision=ref.rev, success=tuple(
        Step("range", k, kvs=(ref.kv[k],) if k in ref.kv else ()) for k in KEYS)))
    return ops, ref


@pytest.mark.parametrize("seed", range(150))
def test_a_correct_store_passes(seed: int) -> None:
    ops, ref = random_history(seed)
    rep = check_revisions(ops)
    assert rep.violations == [], "\n".join(o.brief() for o in ops)
    stream = Stream(1, "", 1, "\U0010ffff", prev_kv=True, events=tuple(ref.events))
    w = check_watches([stream], rep.changes)
    assert w.ok, w.messages
    known = [i for i, e in enumerate(ref.events)
             if (ch := rep.changes.get(e.revision, {}).get(e.key)) is not None and ch.sure]
    if known:  # a lost event at a revision the history explains is a gap
        i = known[seed % len(known)]
        lost = replace(stream, events=stream.events[:i] + stream.events[i + 1:],
                       progress=ref.rev)
        assert check_watches([lost], rep.changes).gaps == 1
