"""The kv state machine: conditional writes, revisions, legacy request-id
dedup (entries of earlier builds replay alike), listing, and snapshots that
restore exactly.  Client sessions have their own file, test_sessions.py."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liferaft.kv import state as kvs
from liferaft.kv.state import KV, Delete, KVStore, Put, encode_command


def apply(s: KVStore, index: int, cmd: Put | Delete) -> kvs.WriteResult:
    return s.apply(index, encode_command(cmd))


def test_put_get_delete_and_revisions_only_grow() -> None:
    s = KVStore()
    r = apply(s, 5, Put("a", "1"))
    assert r.outcome == "ok" and r.revision == 5 and r.prev is None
    r = apply(s, 6, Put("a", "2"))
    assert r.prev == KV("1", 5) and s.get("a") == KV("2", 6)
    r = apply(s, 7, Delete("a"))
    assert r.outcome == "ok" and r.prev == KV("2", 6) and s.get("a") is None
    assert apply(s, 8, Delete("a")).outcome == "not_found"
    assert s.revision == 7  # a failed write changes nothing


def test_conditions() -> None:
    s = KVStore()
    assert apply(s, 1, Put("k", "v", if_revision=0)).outcome == "ok"  # create only
    r = apply(s, 2, Put("k", "w", if_revision=0))
    assert r.outcome == "precondition_failed" and r.current == KV("v", 1)
    assert apply(s, 3, Put("k", "w", if_value="nope")).outcome == "precondition_failed"
    assert apply(s, 4, Put("k", "w", if_value="v", if_revision=1)).outcome == "ok"
    assert apply(s, 5, Delete("k", if_revision=1)).outcome == "precondition_failed"
    assert apply(s, 6, Delete("k", if_revision=4)).outcome == "ok"
    assert apply(s, 7, Delete("k", if_value="x")).outcome == "precondition_failed"
    assert apply(s, 8, Put("k", "v", if_value="x")).outcome == "precondition_failed"


def test_a_retried_legacy_request_returns_the_first_outcome_and_applies_once() -> None:
    s = KVStore()
    first = apply(s, 1, Put("k", "a", request_id="c1:1"))
    apply(s, 2, Put("k", "b"))
    again = apply(s, 3, Put("k", "a", request_id="c1:1"))
    assert again == first and s.get("k") == KV("b", 2)
    # A failed precondition is an outcome too.
    f = apply(s, 4, Put("k", "z", if_revision=0, request_id="c1:2"))
    apply(s, 5, Delete("k"))
    assert apply(s, 6, Put("k", "z", if_revision=0, request_id="c1:2")) == f
    assert s.get("k") is None


def test_dedup_memory_is_bounded_per_client_and_in_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kvs, "REQUESTS_PER_CLIENT", 3)
    monkeypatch.setattr(kvs, "MAX_CLIENTS", 2)
    s = KVStore()
    for i in range(5):
        apply(s, i + 1, Put("k", str(i), request_id=f"a:{i}"))
    assert list(s.clients["a"]) == ["a:2", "a:3", "a:4"]
    apply(s, 10, Put("k", "b", request_id="b:1"))
    apply(s, 11, Put("k", "a", request_id="a:9"))  # a is now the most recent
    apply(s, 12, Put("k", "c", request_id="c:1"))  # evicts b
    assert list(s.clients) == ["a", "c"]


def test_list_by_prefix_in_order_with_limit() -> None:
    s = KVStore()
    for i, k in enumerate(["b/2", "a", "b/1", "b/3", "c", "b"]):
        apply(s, i + 1, Put(k, k.upper()))
    items, rev = s.list("b/")
    assert [k for k, _ in items] == ["b/1", "b/2", "b/3"] and rev == 6
    assert [k for k, _ in s.list("b", limit=2)[0]] == ["b", "b/1"]
    assert [k for k, _ in s.list()[0]] == ["a", "b", "b/1", "b/2", "b/3", "c"]


def test_garbage_is_refused_without_changing_anything() -> None:
    s = KVStore()
    apply(s, 1, Put("k", "v"))
    with pytest.raises(ValueError, match="not a kv command"):
        s.apply(2, b"\x93garbage")
    assert s.get("k") == KV("v", 1) and s.revision == 1


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "del"]),
        st.sampled_from(["a", "b", "b/c", "ü/ß", "x" * 50]),
        st.text(max_size=20),
        st.one_of(st.none(), st.integers(0, 30)),
        st.one_of(st.none(), st.sampled_from([f"cl{i}:{j}" for i in range(3) for j in range(5)])),
        # A session (the entries at index 1 and 2 open sessions 1 and 2; 3
        # is never opened), seq and lowest_pending, or none.
        st.one_of(
            st.none(),
            st.builds(
                lambda sid, seq, back: kvs.SessionRef(sid, seq, max(1, seq - back)),
                st.integers(1, 3),
                st.integers(1, 12),
                st.integers(0, 4),
            ),
        ),
    ),
    max_size=60,
)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_a_snapshot_restores_exactly_and_replays_alike(seq: list) -> None:  # type: ignore[type-arg]
    s = KVStore()
    s.apply(1, encode_command(kvs.OpenSession()))
    s.apply(2, encode_command(kvs.OpenSession()))
    cmds = []
    for i, (op, k, v, rev, rid, ref) in enumerate(seq):
        c: Put | Delete = (
            Put(k, v, if_revision=rev, request_id=rid, session=ref)
            if op == "put"
            else Delete(k, if_revision=rev, request_id=rid, session=ref)
        )
        cmds.append(c)
        apply(s, i + 3, c)
    snap = s.snapshot()
    chunks = list(snap.chunks())
    snap.release()
    t = KVStore()
    t.restore(chunks)
    assert dict(t.data) == dict(s.data) and t.revision == s.revision
    assert {c: dict(r) for c, r in t.clients.items()} == {c: dict(r) for c, r in s.clients.items()}
    assert [(i, x.floor, dict(x.outcomes)) for i, x in t.sessions.items()] == [
        (i, x.floor, dict(x.outcomes)) for i, x in s.sessions.items()
    ]
    # Both replay the same further commands to the same results.
    rng = random.Random(len(seq))
    for j in range(10):
        c = rng.choice(cmds) if cmds else Put("z", "z")
        assert apply(s, 1000 + j, c) == apply(t, 1000 + j, c)


def test_restore_refuses_a_foreign_or_truncated_snapshot() -> None:
    s = KVStore()
    apply(s, 1, Put("k", "v"))
    chunks = list(s.snapshot().chunks())
    blob = b"".join(chunks)
    with pytest.raises(kvs.SnapshotFormatError):
        KVStore().restore([b"XXXX" + blob[4:]])
    with pytest.raises(kvs.SnapshotFormatError):
        KVStore().restore([blob[:-3]])
    empty = KVStore()
    empty.restore([])
    assert empty.revision == 0 and not empty.data


def test_client_addresses_are_replicated_state_but_not_keys() -> None:
    s = KVStore()
    s.apply(1, encode_command(kvs.SetAddr("n1", "127.0.0.1:8001")))
    apply(s, 2, Put("k", "v"))
    assert s.addrs == {"n1": "127.0.0.1:8001"} and [k for k, _ in s.list()[0]] == ["k"]
    t = KVStore()
    t.restore(list(s.snapshot().chunks()))
    assert t.addrs == s.addrs
