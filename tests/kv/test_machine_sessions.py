"""Client sessions in the KV machine (Raft thesis 6.3): the cases of
tests/kv/test_sessions.py that concern dedup, against the LMDB tables.

A retry returns the first outcome; a retry whose outcome or session is
forgotten is ``session_expired`` and never applied; another request under a
held seq is ``seq_reused``; all of it survives a reopen and a checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from liferaft.kv.errors import KVConflictError, KVOutcomeUnknownError
from liferaft.kv.mvcc import (
    Compare,
    DeleteRange,
    LeaseNotFoundError,
    Put,
    PutResult,
    Txn,
    TxnResult,
)
from liferaft.kv.mvcc.codec import LeaseGrant, OpenSession, SessionRef, Write
from liferaft.kv.mvcc.sessions import SESSION_OUTCOMES
from tests.kv.machine_log import Log, sput

MAX = 5  # live sessions in these tests (the machine's max_sessions)


@pytest.fixture
def log(tmp_path: Path):  # type: ignore[no-untyped-def]
    lg = Log(tmp_path / "m", max_sessions=MAX)
    yield lg
    lg.m.close()


def expired(r: object) -> bool:
    return isinstance(r, KVOutcomeUnknownError) and r.code == "session_expired"


def reused(r: object) -> bool:
    return isinstance(r, KVConflictError) and r.code == "seq_reused"


def create_only(key: bytes, value: bytes, sid: int, seq: int, lowest: int) -> Write:
    """A put that holds only if the key is absent (today's if_revision=0)."""
    txn = Txn((Compare(key, "create_revision", "=", 0),), (Put(key, value),))
    return Write(txn, SessionRef(sid, seq, lowest))


def test_open_session_answers_its_entry_index(log: Log) -> None:
    assert log.apply(OpenSession()) == log.index == 1
    assert log.apply(OpenSession()) == 2 and log.m.sessions() == [1, 2]


def test_a_retry_whose_outcome_is_held_returns_the_first_outcome_and_applies_once(
    log: Log,
) -> None:
    me, other = log.apply(OpenSession()), log.apply(OpenSession())
    first = log.apply(sput(b"x", b"mine", me, 1, 1))
    log.apply(sput(b"x", b"other", other, 1, 1))
    assert log.apply(sput(b"x", b"mine", me, 1, 1)) == first
    x = log.get(b"x")
    assert x is not None and (x.value, x.mod_revision) == (b"other", first.revision + 1)
    # A failed condition is an outcome too, and is returned again.
    lost = log.apply(create_only(b"x", b"z", me, 2, 1))
    assert isinstance(lost, TxnResult) and not lost.succeeded
    log.apply(Write(DeleteRange(b"x"), SessionRef(other, 2, 2)))
    assert log.apply(create_only(b"x", b"z", me, 2, 1)) == lost
    assert log.get(b"x") is None


@pytest.mark.parametrize("acked", [False, True], ids=["cap", "acknowledged"])
def test_a_retry_whose_outcome_was_evicted_is_session_expired_and_not_applied(
    log: Log, acked: bool
) -> None:
    me, other = log.apply(OpenSession()), log.apply(OpenSession())
    assert log.apply(create_only(b"lock", b"me", me, 1, 1)).succeeded
    log.apply(sput(b"x", b"mine", me, 2, 1))
    newer = log.apply(sput(b"x", b"other", other, 1, 1))
    seqs = range(3, 3 + SESSION_OUTCOMES)
    log.batch(*(sput(b"k%d" % s, b"v", me, s, s if acked else 1) for s in seqs))
    lock_before = log.get(b"lock")
    assert expired(log.apply(create_only(b"lock", b"me", me, 1, 1)))  # not "failed": unknown
    assert expired(log.apply(sput(b"x", b"mine", me, 2, 1)))
    x = log.get(b"x")
    assert x is not None and x.mod_revision == newer.revision and log.get(b"lock") == lock_before
    floor, held = log.m.session(me)  # type: ignore[misc]
    assert floor == 3 if not acked else floor == 2 + SESSION_OUTCOMES
    assert len(held) <= SESSION_OUTCOMES


def test_a_retry_in_an_evicted_session_is_session_expired_and_not_applied(log: Log) -> None:
    me = log.apply(OpenSession())
    first = log.apply(sput(b"x", b"mine", me, 1, 1))
    log.apply(Write(Put(b"x", b"newer")))  # a plain write, no session
    log.batch(*(OpenSession() for _ in range(MAX)))  # the least recently used goes first
    assert me not in log.m.sessions() and len(log.m.sessions()) == MAX
    assert log.m.session(me) is None  # its outcomes went with it
    assert expired(log.apply(sput(b"x", b"mine", me, 1, 1)))
    assert expired(log.apply(sput(b"y", b"new", me, 2, 2)))
    x = log.get(b"x")
    assert x is not None and x.mod_revision == first.revision + 1 and log.get(b"y") is None


def test_sessions_are_evicted_by_last_committed_use(log: Log) -> None:
    old = log.apply(OpenSession())
    log.apply(sput(b"k", b"v", old, 1, 1))
    rest = [log.apply(OpenSession()) for _ in range(MAX - 1)]
    log.apply(sput(b"k", b"w", old, 2, 2))  # `old` is now the most recently used
    log.apply(OpenSession())
    assert old in log.m.sessions() and rest[0] not in log.m.sessions()
    assert log.m.sessions()[-2:] == [old, log.index]  # LRU order


def test_a_session_id_that_was_never_opened_is_session_expired(log: Log) -> None:
    log.apply(Write(Put(b"a", b"1")))
    for sid in (1, 2, 10**9, 0, -3):
        assert expired(log.apply(sput(b"a", b"2", sid, 1, 1)))
    a = log.get(b"a")
    assert a is not None and a.value == b"1"


def test_an_acknowledged_outcome_below_the_lowest_pending_is_discarded(log: Log) -> None:
    me = log.apply(OpenSession())
    log.apply(sput(b"a", b"1", me, 1, 1))
    log.apply(sput(b"b", b"1", me, 3, 1))  # 2 is still pending
    log.apply(sput(b"c", b"1", me, 4, 2))  # the client has 1's answer
    assert log.m.session(me) == (2, [3, 4])
    # 2 arrives late: not seen, not below what is kept: applied once.
    first = log.apply(sput(b"d", b"1", me, 2, 2))
    assert isinstance(first, PutResult)
    assert log.apply(sput(b"d", b"1", me, 2, 2)) == first  # its retry: held
    d = log.get(b"d")
    assert d is not None and d.version == 1


def test_writes_without_a_session_are_plain_writes(log: Log) -> None:
    log.apply(Write(Put(b"k", b"a")))
    log.apply(Write(Put(b"k", b"a")))
    k = log.get(b"k")
    assert k is not None and k.version == 2  # applied twice: no dedup without a session


def test_apply_never_raises_on_odd_session_fields(log: Log) -> None:
    me = log.apply(OpenSession())
    assert expired(log.apply(sput(b"a", b"1", me, 0, 0)))
    assert expired(log.apply(sput(b"a", b"1", me, -5, -9)))
    r = log.apply(sput(b"a", b"1", me, 5, 9))  # lowest clamps to seq
    assert isinstance(r, PutResult)
    assert log.apply(sput(b"a", b"1", me, 5, 9)) == r
    assert log.m.session(me) == (5, [5])


def test_a_seq_reused_for_a_different_request_is_refused_not_answered_as_the_first(
    log: Log, tmp_path: Path
) -> None:
    me = log.apply(OpenSession())
    first = log.apply(sput(b"a", b"mine", me, 1, 1))
    for other in (sput(b"b", b"theirs", me, 1, 1), sput(b"a", b"theirs", me, 1, 1),
                  Write(DeleteRange(b"a"), SessionRef(me, 1, 1))):
        assert reused(log.apply(other))
    a = log.get(b"a")
    assert a is not None and a.value == b"mine" and log.get(b"b") is None
    assert log.apply(sput(b"a", b"mine", me, 1, 1)) == first
    log.apply(sput(b"c", b"x", me, 2, 1))
    assert log.apply(sput(b"a", b"mine", me, 1, 1)) == first
    # It holds on a replica restored from a checkpoint.
    replica = Log(tmp_path / "replica", max_sessions=MAX)
    replica.m.restore(log.m.checkpoint_chunks())
    assert replica.index == 0 and replica.m.applied_index() == log.index
    replica.index = log.index
    assert reused(replica.apply(sput(b"b", b"theirs", me, 1, 1)))
    replica.m.close()


def test_a_refusal_is_an_outcome_too_and_answers_its_retry(log: Log) -> None:
    """A put naming a missing lease is refused; its retry gets the same
    refusal even if the lease exists by then (the first answer stands)."""
    me = log.apply(OpenSession())
    r = log.apply(sput(b"a", b"1", me, 1, 1, lease=77))
    assert isinstance(r, LeaseNotFoundError) and r.extra == {"lease": 77}
    log.apply(LeaseGrant(77, 10))
    again = log.apply(sput(b"a", b"1", me, 1, 1, lease=77))
    assert type(again) is LeaseNotFoundError and str(again) == str(r) and again.code == r.code
    assert log.get(b"a") is None


def test_sessions_survive_a_reopen_and_replay_alike(log: Log, tmp_path: Path) -> None:
    a, b = log.apply(OpenSession()), log.apply(OpenSession())
    log.batch(*(sput(b"k%d" % s, b"v", a, s, 2) for s in range(1, 5)))
    log.apply(sput(b"x", b"1", b, 1, 1))
    twin = Log(tmp_path / "twin", max_sessions=MAX)
    twin.m.restore(log.m.checkpoint_chunks())
    twin.index = log.index
    log.m.close()
    log.m = Log(tmp_path / "m", max_sessions=MAX).m  # reopened from disk
    assert log.m.sessions() == twin.m.sessions() == [a, b]  # the LRU order too
    for cmd in (
        sput(b"k1", b"again", a, 1, 2),  # discarded: expired
        sput(b"k3", b"again", a, 3, 2),  # held: first outcome
        sput(b"y", b"new", a, 9, 3),  # new: applied
        sput(b"x", b"again", 12345, 1, 1),  # never opened
        OpenSession(),
    ):
        mine, theirs = log.apply(cmd), twin.apply(cmd)
        assert type(mine) is type(theirs) and str(mine) == str(theirs), (cmd, mine, theirs)
    assert log.everything() == twin.everything()
    assert log.m.sessions() == twin.m.sessions()
    twin.m.close()
