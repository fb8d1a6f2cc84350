"""Exactly once, in revision order, per watcher, under random interleavings
(docs/kv.md, "Watch (hub)").

Hypothesis interleaves writes to a fake store, publishes of what it applied
(in batches, late, so the store is often ahead of the hub as with an
off-loop apply), watchers created at random start revisions (past: replay;
now; future), partial reads, and small queues that cut watchers off.  A
cut-off watcher is watched again from the revision its error names.  Every
logical watcher must end with exactly the store's events of its range from
its start revision: no gap at the replay-to-live seam or across a resume,
no duplicate, in order.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from liferaft.kv.watch import Watcher, WatchHub
from liferaft.kv.watch_types import KeyRange, WatchCutOffError, WatchEvent
from tests.kv.test_watch_fake import FakeStore

KEYS = [b"a", b"a/1", b"a/2", b"b", b"b/x", b"c"]
RANGES = [
    KeyRange.single(b"a"),
    KeyRange.prefix(b"a/"),
    KeyRange.prefix(b""),
    KeyRange.between(b"a/2", b"c"),
    KeyRange.single(b"b/x"),
]

write = st.tuples(
    st.just("write"),
    st.lists(st.tuples(st.sampled_from(KEYS), st.booleans()), min_size=1, max_size=3,
             unique_by=lambda kd: kd[0]),
)
publish = st.tuples(st.just("publish"), st.integers(1, 3))
watch = st.tuples(
    st.just("watch"), st.integers(0, len(RANGES) - 1), st.sampled_from([None, 0, 1, 2, 4, 7, -1]),
    st.booleans(), st.booleans(),
)
take = st.tuples(st.just("take"), st.integers(0, 7), st.integers(1, 4))
ops = st.lists(st.one_of(write, publish, watch, take, write), min_size=8, max_size=60)


@dataclass
class Logical:
    """One client's watch, across the resumes its cut-offs ask for."""

    key_range: KeyRange
    start: int
    prev_kv: bool
    small: bool
    w: Watcher
    got: list[WatchEvent] = field(default_factory=list)
    resumes: int = 0

    def take(self, hub: WatchHub, n: int) -> bool:
        """Read up to ``n`` items, or resume after a cut-off; False if
        nothing was ready."""
        try:
            items = self.w.ready(n)
        except WatchCutOffError as e:
            last = self.got[-1].revision if self.got else self.start - 1
            assert e.resume_revision > last
            self.resumes += 1
            self.w = hub.watch(
                self.key_range, start_revision=e.resume_revision, prev_kv=self.prev_kv,
                max_events=2 if self.small else None,
            )
            return True
        self.got += [i for i in items if isinstance(i, WatchEvent)]
        return bool(items)


async def run(program: list[tuple[Any, ...]]) -> None:
    store = FakeStore()
    hub = WatchHub(store, 0)
    pending: list[list[WatchEvent]] = []  # applied by the store, not yet published
    watchers: list[Logical] = []

    def do_publish(k: int) -> None:
        batch = pending[:k]
        del pending[:k]
        hub.publish([e for evs in batch for e in evs])

    for op in program:
        if op[0] == "write":
            value = f"v{store.revision}".encode()
            pending.append(store.write([(k, None if d else value) for k, d in op[1]]))
        elif op[0] == "publish":
            do_publish(op[1])
        elif op[0] == "watch":
            _, ri, back, prev_kv, small = op
            start = None if back is None else max(1, hub.revision + 1 - back)
            w = hub.watch(
                RANGES[ri], start_revision=start, prev_kv=prev_kv,
                max_events=2 if small else None,
            )
            if w.replaying:
                event("a watcher replays")
            watchers.append(Logical(RANGES[ri], w.start_revision, prev_kv, small, w))
        elif watchers:
            watchers[op[1] % len(watchers)].take(hub, op[2])
    while pending:
        do_publish(len(pending))
    for lw in watchers:
        for _ in range(10_000):  # bounded: each round delivers or resumes
            if not lw.take(hub, 64):
                break
        want = store.expected(lw.start, lw.key_range, lw.prev_kv)
        assert [(e.revision, e.key) for e in lw.got] == [(e.revision, e.key) for e in want]
        assert lw.got == want
        assert lw.resumes == 0 or lw.small
        if lw.resumes:
            event("a watcher resumed after a cut-off")


@settings(max_examples=200, deadline=None)
@given(ops)
def test_every_event_once_in_order_per_watcher(program: list[tuple[Any, ...]]) -> None:
    asyncio.run(run(program))
