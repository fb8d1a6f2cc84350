"""The watch-stream checker: a good stream passes (across a reconnect, with a
progress notification), and a lost, a duplicated, an out-of-order and a
wrong event are each caught and counted."""

from __future__ import annotations

from dataclasses import asdict, replace

from liferaft.verify.rev_history import KV, OpMaker, RevOp, Step, put, scan
from liferaft.verify.revisions import check_revisions
from liferaft.verify.watches import (
    Stream,
    WatchReport,
    WEvent,
    check_watches,
    seen_from,
    streams_from_json,
)


def history() -> list[RevOp]:
    op = OpMaker()
    op(1, 0, 1, revision=1, **put("app/a", "1"))
    op(1, 2, 3, revision=2, **put("other", "x"))
    op(1, 4, 5, revision=3, success=(Step("put", "app/a", value="2"),
                                     Step("put", "app/b", value="3")))
    op(1, 6, 7, revision=4, success=(Step("delete", "app/a", deleted=1),))
    op(1, 8, 9, revision=5, **put("app/b", "4"))
    return op.made


EVENTS = (
    WEvent(1, "put", "app/a", "1"),
    WEvent(3, "put", "app/a", "2", prev_value="1"),
    WEvent(3, "put", "app/b", "3"),
    # ... the connection drops here; the client resumes from 4 ...
    WEvent(4, "delete", "app/a", prev_value="2"),
    WEvent(5, "put", "app/b", "4", prev_value="3"),
)


def run(*streams: Stream) -> WatchReport:
    rep = check_revisions(history())
    assert rep.ok, rep.violations
    return check_watches(streams, rep.changes)


def good() -> Stream:
    return Stream.prefix(1, "app/", 1, prev_kv=True, events=EVENTS)


def test_a_good_stream_passes() -> None:
    rep = run(good(), Stream(2, "other", 2, events=(WEvent(2, "put", "other", "x"),), progress=5),
              Stream.prefix(3, "app/", 4, events=EVENTS[3:4]))
    assert rep.ok and rep.messages == []
    assert rep.line() == ("watch_streams=3 watch_events=7 watch_gaps=0 watch_dups=0 "
                          "watch_disorder=0 watch_mismatch=0")


def test_a_lost_event_is_a_gap() -> None:
    rep = run(replace(good(), events=EVENTS[:2] + EVENTS[3:]))
    assert (rep.gaps, rep.dups, rep.mismatch) == (1, 0, 0)
    assert rep.messages == ["watch 1 gaps: missed put app/b='3' at revision 3 (it saw up to 5)"]
    # An idle watcher's progress notification promises everything below it.
    rep = run(Stream(2, "other", 1, progress=4))
    assert rep.gaps == 1 and "missed put other='x' at revision 2" in rep.messages[0]
    assert run(Stream(2, "other", 3, progress=4)).ok  # ... from its start only
    assert run(Stream(2, "other", 1, progress=1)).ok  # ... and up to what it covers


def test_a_duplicated_event_after_a_reconnect() -> None:
    rep = run(replace(good(), events=EVENTS[:3] + EVENTS[2:]))
    assert (rep.gaps, rep.dups, rep.disorder) == (0, 1, 0)
    assert rep.messages == ["watch 1 dups: put app/b='3' at revision 3: delivered before"]


def test_an_out_of_order_event() -> None:
    rep = run(replace(good(), events=(EVENTS[0], EVENTS[3], EVENTS[1], EVENTS[2], EVENTS[4])))
    assert (rep.gaps, rep.dups, rep.disorder) == (0, 0, 2)


def test_an_event_that_disagrees_with_the_write() -> None:
    wrong = [WEvent(3, "put", "app/a", "9", prev_value="1"),   # wrong value
             WEvent(3, "delete", "app/a", prev_value="1"),     # wrong kind
             WEvent(3, "put", "app/a", "2", prev_value="0")]   # wrong prev_kv
    for ev in wrong:
        rep = run(replace(good(), events=(EVENTS[0], ev) + EVENTS[2:]))
        assert rep.mismatch == 1 and rep.gaps == 0, ev
    # Revision 2 did not touch app/c.
    rep = run(replace(good(), events=(EVENTS[0], WEvent(2, "put", "app/c", "2")) + EVENTS[1:]))
    assert rep.mismatch == 1 and rep.gaps == 0
    assert rep.messages == ["watch 1 mismatch: put app/c='2' at revision 2: that revision did "
                            "not change the key"]
    rep = run(Stream(1, "app/a", 2, events=(EVENTS[0], EVENTS[1])))
    assert rep.mismatch == 1 and "outside the watch of 'app/a' from 2" in rep.messages[0]


def test_events_at_a_revision_the_history_does_not_explain_must_agree() -> None:
    """Revision 6 is nobody's (a lease expiry): two watchers must see the same."""
    ev = WEvent(6, "delete", "app/b")
    assert run(replace(good(), events=EVENTS + (ev,)),
               Stream.prefix(2, "app/b", 6, events=(ev,))).ok
    rep = run(replace(good(), events=EVENTS + (ev,)),
              Stream.prefix(2, "app/b", 6, events=(WEvent(6, "put", "app/b", "7"),)))
    assert rep.mismatch == 1 and "watch 1 got delete None there" in rep.messages[0]


def test_a_watch_places_an_indeterminate_write_for_the_revision_checker() -> None:
    ops = history() + [RevOp(9, 2, 9, None, "info", **put("app/c", "5")),
                       RevOp(10, 3, 12, 13, revision=6, **scan("app/", [
                           KV("app/b", "4", 5), KV("app/c", "5", 6)]))]
    s = replace(good(), events=EVENTS + (WEvent(6, "put", "app/c", "5", prev_value=None, by=11),))
    rev = check_revisions(ops[:-1], seen_from([s]))
    assert rev.ok and rev.pinned == 1 and rev.gaps == []
    assert check_watches([s], rev.changes).ok
    assert not check_watches([replace(good(), progress=6)], rev.changes).ok


def test_json_round_trip() -> None:
    s = good()
    assert streams_from_json([asdict(s)]) == [s]
