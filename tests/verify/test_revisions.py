"""The revision-order checker on hand-made histories: good ones pass, and each
planted bug (a stale read, a revision against real time, two changes at one
revision, a value nobody wrote, a wrong branch, a wrong count) is caught."""

from __future__ import annotations

from liferaft.verify.rev_history import (
    KV,
    Cond,
    OpMaker,
    RevOp,
    Step,
    cas,
    delete,
    get,
    put,
    rev_from_json,
    rev_to_json,
    scan,
)
from liferaft.verify.revisions import RevReport, Seen, check_revisions


def good_history() -> list[RevOp]:
    """Puts, a CAS both ways, a delete and a delete of nothing, a txn, a
    prefix scan, a read of the past, and reads that overlap writes."""
    op = OpMaker()
    op(1, 0, 1, revision=1, **put("a", "a1"))
    op(2, 0.5, 2, revision=2, **put("b", "b1", lease=7))
    op(3, 2.5, 3, revision=2, **get("a", "a1", 1, create_revision=1, version=1))
    op(1, 3, 4, revision=3, **cas("a", "a1", "a2", True))
    op(2, 4.5, 5, revision=3, **cas("a", "a1", "a3", False))  # 412 at the current revision
    op(3, 5, 6, revision=3, **get("a", "a1", 1, at=1))  # the past
    op(1, 6, 7, revision=4, **delete("b", deleted=1))
    op(2, 7.5, 8, revision=4, **delete("b", deleted=0))
    op(1, 8, 9, revision=5, compare=(Cond("a", "version", "=", 2), Cond("c", "version", "=", 0)),
       success=(Step("put", "c", value="c1"), Step("range", "a", kvs=(KV("a", "a2", 3),))))
    op(3, 8.5, 9.5, revision=4, **get("c"))  # overlaps the txn: before it
    op(2, 10, 11, revision=5, **scan("", [KV("a", "a2", 3, 1, 2), KV("c", "c1", 5, 5, 1)]))
    return op.made


def violations(ops: list[RevOp], seen: list[Seen] | None = None) -> list[str]:
    rep = check_revisions(ops, seen or ())
    assert rep.ok == (not rep.violations)
    return rep.violations


def test_a_good_history_passes_and_reports_what_each_revision_did() -> None:
    rep = check_revisions(good_history())
    assert rep.violations == [] and rep.gaps == [] and rep.ok
    assert {k: c.kind for k, c in rep.changes[4].items()} == {"b": "delete"}
    assert rep.changes[3]["a"].prev == "a1" and rep.changes[5]["c"].value == "c1"
    assert rep.line() == "rev_ops=11 rev_pinned=0 rev_gaps=0 rev_violations=0"


def test_json_round_trip() -> None:
    ops = good_history()
    assert rev_from_json(rev_to_json(ops)) == ops


def k_written_twice() -> OpMaker:
    """k = a at 1, then k = b at 2, one after the other."""
    op = OpMaker()
    op(1, 0, 1, revision=1, **put("k", "a"))
    op(1, 2, 3, revision=2, **put("k", "b"))
    return op


def test_a_stale_read_is_caught() -> None:
    op = k_written_twice()
    op(2, 4, 5, revision=2, **get("k", "a", 1))
    (v,) = violations(op.made)
    assert "#3 read a stale k='a'" in v and "since 2" in v


def test_a_read_served_below_a_finished_write_is_caught() -> None:
    """The read's own result fits its revision; the revision is too old."""
    op = k_written_twice()
    op(2, 4, 5, revision=1, **get("k", "a", 1))
    (v,) = violations(op.made)
    assert v.startswith("real time: #2 returned at 3.000 with revision 2 before #3")


def test_revisions_reordered_against_real_time_are_caught() -> None:
    op = OpMaker()
    op(1, 0, 1, revision=2, **put("x", "a"))
    op(2, 2, 3, revision=1, **put("y", "b"))
    assert any("real time: #1" in v and "#2 has revision 1" in v for v in violations(op.made))
    # Overlapping, either order is fine.
    op = OpMaker()
    op(1, 0, 3, revision=2, **put("x", "a"))
    op(2, 1, 2, revision=1, **put("y", "b"))
    assert violations(op.made) == []


def test_two_changes_at_one_revision_are_caught() -> None:
    op = OpMaker()
    op(1, 0, 1, revision=1, **put("x", "a"))
    op(2, 0, 1, revision=1, **put("y", "b"))
    assert "revision 1 claimed by two changes: #1 and #2" in violations(op.made)


def test_an_indeterminate_write_is_placed_where_it_was_seen() -> None:
    op = OpMaker()
    op(1, 0, 1, revision=1, **put("k", "a"))
    op(2, 2, None, "info", **put("k", "b"))
    op(3, 5, 6, revision=2, **get("k", "b", 2))
    op(3, 7, 8, revision=2, **get("k", "b", 2))
    rep = check_revisions(op.made)
    assert rep.violations == [] and rep.pinned == 1 and rep.changes[2]["k"].value == "b"
    # A value seen before its write was invoked, or one nobody wrote.
    op.made[1] = RevOp(2, 2, 6.5, None, "info", **put("k", "b"))
    v = violations(op.made)
    assert "#3 saw k='b' at mod_revision 2" in v[0] and "no indeterminate write" in v[0]
    # (#4 places it, after #3 returned at revision 2: so it is against real time too.)
    assert v[1:] == ["real time: #3 returned at 6.000 with revision 2 before #2 began at "
                     "6.500, yet #2 has revision 2"]
    op.made[1] = RevOp(2, 2, 2, None, "info", **put("k", "c"))
    assert len(violations(op.made)) == 2  # one per read of 'b' at 2


def test_a_watch_event_can_place_an_indeterminate_write() -> None:
    op = OpMaker()
    op(2, 2, None, "info", **put("k", "b"))
    op(1, 3, 4, revision=2, **put("j", "x"))
    op(3, 5, 6, revision=2, **get("k"))  # ... absent at 2: the watch saw a delete? No: a bug
    assert violations(op.made, [Seen("k", "b", 1)]) == [
        "#3 read k as absent at revision 2, but it held 'b' since 1"]
    assert violations(op.made[:2], [Seen("k", "b", 1)]) == []


def test_a_gap_makes_a_key_uncertain_not_wrong() -> None:
    """Revision 2 is nobody's (a lease expiry, or an unseen write): k may be gone."""
    op = OpMaker()
    op(1, 0, 1, revision=1, **put("k", "a", lease=9))
    op(1, 2, 3, revision=3, **put("j", "x"))
    op(2, 4, 5, revision=3, **get("k"))
    op(2, 6, 7, revision=3, **get("k", "a", 1))  # ... but once seen gone, it stays gone
    rep = check_revisions(op.made)
    assert rep.gaps == [2]
    assert rep.violations == ["#4 read a stale k='a' (mod_revision 1) at revision 3: it was "
                              "absent since 1"]
    # Without a gap the missing key is a lost write.
    op.made[1] = RevOp(2, 1, 2, 3, revision=2, **put("j", "x"))
    op.made[2] = RevOp(3, 2, 4, 5, revision=2, **get("k"))
    assert "#3 read k as absent at revision 2, but it held 'a' since 1" in violations(op.made[:3])


def test_a_branch_the_compares_do_not_pick_is_caught() -> None:
    op = OpMaker()
    op(1, 0, 1, revision=1, **put("k", "a"))
    op(1, 2, 3, revision=2, **cas("k", "z", "b", True))
    op(1, 4, 5, revision=2, **cas("k", "b", "c", False))
    v = violations(op.made)
    assert v[0] == "#2 ran its success branch at revision 2, but k.value = 'z' was false at 1"
    assert v[1] == "#3 ran its failure branch at revision 2, but every compare held at 2"


def test_a_wrong_delete_count_and_a_wrong_version_are_caught() -> None:
    op = k_written_twice()
    op(1, 4, 5, revision=2, **delete("j", deleted=0))
    op(1, 6, 7, revision=2, **get("k", "b", 2, create_revision=1, version=1))
    op(1, 8, 9, revision=3, **delete("", deleted=2, end="z"))
    v = violations(op.made)
    assert v == ["#4 read k at revision 2 with version 1; the write at 2 gives 2",
                 "#5 deleted 2 key(s) of '' at revision 3, but the store held 1 there"]


def test_a_lease_revoke_deletes_its_keys_at_one_revision() -> None:
    """A revoke does not say whether it deleted anything (an expiry may have
    taken the keys first), so its revision is a gap; but its keys are gone
    from there on."""
    op = OpMaker()
    op(1, 0, 1, revision=1, success=(Step("put", "a", value="1", lease=5),
                                     Step("put", "b", value="2", lease=5)))
    op(1, 2, 3, revision=2, revoke=5)
    op(2, 4, 5, revision=2, **scan("", []))
    rep = check_revisions(op.made)
    assert rep.violations == [] and rep.gaps == [2]
    op(2, 6, 7, revision=2, **get("a", "1", 1))
    assert check_revisions(op.made).violations == [
        "#4 read a stale a='1' (mod_revision 1) at revision 2: it was absent since 1"]
    # A revoke that reports a revision another write took, with its keys still there.
    op.made[1] = RevOp(2, 1, 2, 3, revision=2, revoke=5)
    op.made[2] = RevOp(3, 2, 1.5, 2.5, revision=2, **put("c", "x"))
    v = violations(op.made[:3])
    assert v == ["#2 revoked lease 5 at revision 2, but ['a', 'b'] still held it there"]


def test_a_read_past_a_limit_checks_only_what_it_returned() -> None:
    op = OpMaker()
    op(1, 0, 1, revision=1, **put("a", "1"))
    op(1, 2, 3, revision=2, **put("b", "2"))
    op(2, 4, 5, revision=2, **scan("", [KV("a", "1", 1)], more=True))
    assert violations(op.made) == []
    op.made[2] = RevOp(3, 2, 4, 5, revision=2, **scan("", [KV("a", "1", 1)]))
    assert violations(op.made) == ["#3 read b as absent at revision 2, but it held '2' since 2"]


def test_an_empty_history() -> None:
    assert check_revisions([]) == RevReport()
