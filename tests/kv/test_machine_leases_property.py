"""Leases against their invariant, by hypothesis: after any sequence of
batches of grants, revokes, puts (with or without a lease), deletes and
txns, every live lease's key set is exactly the live keys that name it, no
live key names a lease that is not live, and the watch events of every
batch replay to the store's current state (docs/kv.md, "The KV state
machine")."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.kv.mvcc import TO_END, Compare, DeleteRange, Put, Txn
from liferaft.kv.mvcc.codec import LeaseGrant, LeaseRevoke, Write
from liferaft.kv.watch_types import EventKind
from tests.kv.machine_log import Log

keys = st.sampled_from([b"a", b"b", b"c", b"d"])
leases = st.sampled_from([0, 0, 1, 2, 3])
puts = st.builds(Put, keys, st.just(b"v"), lease=leases)
deletes = st.one_of(st.builds(DeleteRange, keys), st.just(DeleteRange(b"b", TO_END)))
txns = st.builds(
    Txn,
    st.lists(st.builds(Compare, keys, st.just("lease"), st.sampled_from(["=", "!="]),
                       leases), max_size=1).map(tuple),
    st.lists(st.one_of(puts, deletes), max_size=2).map(tuple),
    st.lists(puts, max_size=1).map(tuple),
)
commands = st.one_of(
    st.builds(LeaseGrant, st.sampled_from([1, 2, 3]), st.integers(1, 5)),
    st.builds(LeaseRevoke, st.sampled_from([1, 2, 3])),
    st.builds(Write, st.one_of(puts, puts, deletes, txns)),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(commands, min_size=1, max_size=5), min_size=1, max_size=6))
def test_lease_key_sets_stay_exact_and_events_replay_to_the_state(batches: list) -> None:  # type: ignore[type-arg]
    d = tempfile.mkdtemp(prefix="machine-leases-")
    log = Log(Path(d) / "m", sync=False)
    try:
        state: dict[bytes, bytes] = {}
        log.batch(LeaseGrant(1, 5), LeaseGrant(2, 5))  # so that most lease puts apply
        for batch in batches:
            log.batch(*batch)
        for done in log.listener.batches:
            for ev in done.events:
                if ev.kind is EventKind.PUT:
                    state[ev.key] = ev.kv.value
                else:
                    state.pop(ev.key, None)
        live = log.everything()
        assert state == {kv.key: kv.value for kv in live}
        live_leases = {lid for lid, _ in log.m.leases()}
        for kv in live:
            assert kv.lease == 0 or kv.lease in live_leases, kv
        for lid in live_leases:
            info = log.m.lease(lid)
            assert info is not None
            assert set(info.keys) == {kv.key for kv in live if kv.lease == lid}
    finally:
        log.m.close()
        shutil.rmtree(d)
