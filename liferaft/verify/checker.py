"""A linearizability checker: Wing & Gong's search with Lowe's memoization,
one key at a time.

Theory of operation
-------------------
A history is linearizable if every operation can be given a point between
its call and its return such that, in the order of those points, the
sequential model accepts every operation with the output it really returned
(Herlihy & Wing 1990).  Per-key histories are independent (a history is
linearizable iff each key's sub-history is: P-compositionality), so each key
is checked alone, with its own time budget.

For one key, the events (calls and returns) sit in a doubly linked list in
time order.  The search (Wing & Gong 1993) walks it: at a call it tries to
linearize that operation now (the model accepts it from the current state);
if so the operation's call and return are lifted out of the list and the walk
restarts from the head.  Reaching a return means that operation had to be
linearized already: backtrack to the last choice and try the next call.
Lowe (2017) made this practical with a cache of (set of linearized
operations, model state): a configuration seen before is never explored
again.

Indeterminate operations (``info``) have no return event: the search may
linearize them anywhere after their call, or never.  Failed operations
(``fail``) certainly did not happen and are dropped.  Past the budget the
answer for a key is ``unknown``, never a guessed ``ok``.

On a violation the checker explains the deepest point the search reached:
the operation that could not be placed, the model state there, what had been
linearized just before, and which operations were still open.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .history import Op, by_key
from .models import Model


class _Event:
    __slots__ = ("op", "bit", "is_call", "match", "prev", "next")

    def __init__(self, op: Op | None, bit: int, is_call: bool) -> None:
        self.op = op
        self.bit = bit
        self.is_call = is_call
        self.match: _Event | None = None
        self.prev: _Event | None = None
        self.next: _Event | None = None


@dataclass
class KeyResult:
    key: str
    verdict: str  # "ok", "fail" or "unknown"
    ops: int
    explanation: str = ""
    seconds: float = 0.0


@dataclass
class Result:
    keys: list[KeyResult] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``yes``, ``NO`` (some key has no linearization) or ``unknown``."""
        vs = {k.verdict for k in self.keys}
        if "fail" in vs:
            return "NO"
        if "unknown" in vs:
            return "unknown"
        return "yes"

    def explain(self) -> str:
        return "\n\n".join(k.explanation for k in self.keys if k.verdict != "ok")


def _build(ops: list[Op]) -> tuple[_Event, int]:
    """The event list (with a head sentinel) and the number of ok ops."""
    events: list[tuple[float, int, _Event]] = []
    for i, o in enumerate(ops):
        c = _Event(o, 1 << i, True)
        events.append((o.call, 0, c))
        if o.status == "ok":
            assert o.ret is not None
            r = _Event(o, 1 << i, False)
            c.match = r
            # At equal times the call sorts first: the ops overlap, which
            # allows more orders (never a false alarm).
            events.append((o.ret, 1, r))
    events.sort(key=lambda t: (t[0], t[1]))
    head = _Event(None, 0, False)
    prev = head
    for _, _, e in events:
        prev.next = e
        e.prev = prev
        prev = e
    return head, sum(1 for o in ops if o.status == "ok")


def _lift(e: _Event) -> None:
    assert e.prev is not None
    e.prev.next = e.next
    if e.next is not None:
        e.next.prev = e.prev
    m = e.match
    if m is not None:
        assert m.prev is not None
        m.prev.next = m.next
        if m.next is not None:
            m.next.prev = m.prev


def _unlift(e: _Event) -> None:
    m = e.match
    if m is not None:
        assert m.prev is not None
        m.prev.next = m
        if m.next is not None:
            m.next.prev = m
    assert e.prev is not None
    e.prev.next = e
    if e.next is not None:
        e.next.prev = e


def check_key(key: str, ops: list[Op], model: Model, budget: float = 10.0) -> KeyResult:
    """Check one key's operations against ``model`` within ``budget`` seconds."""
    t0 = time.monotonic()
    ops = [o for o in ops if o.status != "fail"]
    head, remaining = _build(ops)
    state = model.init()
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[_Event, Any]] = []
    order: list[Op] = []
    best: tuple[int, Op | None, Any, list[Op]] = (-1, None, state, [])
    e = head.next
    steps = 0
    while True:
        if remaining == 0:
            return KeyResult(key, "ok", len(ops), seconds=time.monotonic() - t0)
        steps += 1
        if steps & 1023 == 0 and time.monotonic() - t0 > budget:
            return KeyResult(
                key,
                "unknown",
                len(ops),
                f"key {key!r}: no answer within the {budget:g} s budget "
                f"({len(ops)} ops, {len(cache)} configurations explored)",
                time.monotonic() - t0,
            )
        if e is not None and e.is_call:
            assert e.op is not None
            new = model.step(state, e.op)
            if new is not None:
                bits = linearized | e.bit
                if (bits, new) not in cache:
                    cache.add((bits, new))
                    stack.append((e, state))
                    order.append(e.op)
                    state, linearized = new, bits
                    _lift(e)
                    if e.match is not None:
                        remaining -= 1
                    e = head.next
                    continue
            e = e.next
            continue
        # A return (or the end): its op should have been linearized by now.
        ok_done = len(ops) - remaining
        if e is not None and ok_done > best[0]:
            best = (ok_done, e.op, state, list(order[-4:]))
        if not stack:
            return KeyResult(
                key, "fail", len(ops), _explain(key, model, ops, best), time.monotonic() - t0
            )
        ce, state = stack.pop()
        order.pop()
        linearized &= ~ce.bit
        _unlift(ce)
        if ce.match is not None:
            remaining += 1
        e = ce.next


def _explain(
    key: str, model: Model, ops: list[Op], best: tuple[int, Op | None, Any, list[Op]]
) -> str:
    n, stuck, state, before = best
    lines = [f"NOT LINEARIZABLE: key {key!r} ({len(ops)} ops)"]
    if stuck is None:
        return lines[0]
    lines.append(
        f"  the search placed at most {n} completed ops; then this op could not be placed:"
    )
    lines.append(f"    {stuck.brief()}")
    lines.append(f"  the {model.name} held {model.describe(state)} there, after:")
    lines += [f"    {o.brief()}" for o in before] or ["    (nothing)"]
    assert stuck.ret is not None
    open_ops = [
        o
        for o in ops
        if o is not stuck
        and o.call <= stuck.ret
        and (o.status == "info" or (o.ret is not None and o.ret >= stuck.call))
        and o not in before
    ]
    if open_ops:
        lines.append("  operations concurrent with it:")
        lines += [f"    {o.brief()}" for o in open_ops[:8]]
    return "\n".join(lines)


def check(ops: Iterable[Op], model: Model, budget_per_key: float = 10.0) -> Result:
    """Check a whole history, key by key."""
    res = Result()
    for key, kops in sorted(by_key(ops).items()):
        res.keys.append(check_key(key, kops, model, budget_per_key))
    return res
