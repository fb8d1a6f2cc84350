"""The simulator's newer checkers can fail, and do not fail on what is fine.

Each case feeds a Checker the facts of a tiny history directly: the same
hooks the simulator calls after every step.
"""

from __future__ import annotations

import pytest

from liferaft.sim import SafetyViolation
from liferaft.sim.checker import Checker


def test_a_read_older_than_an_earlier_answered_read_is_caught() -> None:
    """Linearizability orders reads among themselves too: once a read has
    shown the state at index 12, a read that *begins* afterwards must not be
    answered from an older index, even if no write was acknowledged since."""
    chk = Checker()
    chk.on_read("n1", index=10, floor=0, served=12)
    assert chk.max_read == 12
    floor = max(chk.max_acked, chk.max_read)  # what the simulator records at the start
    with pytest.raises(SafetyViolation, match="read index 11, but index 12"):
        chk.on_read("n2", index=11, floor=floor, served=11)


def test_reads_that_overlap_may_be_answered_in_any_order() -> None:
    chk = Checker()
    early_floor = chk.max_read  # read A begins
    chk.on_read("n1", index=12, floor=0, served=12)  # read B begins and ends
    chk.on_read("n2", index=10, floor=early_floor, served=10)  # A began before B ended
    assert chk.violations == []


def test_a_vote_forgotten_in_a_crash_is_caught() -> None:
    chk = Checker()
    chk.on_restart("n3", term=5, vote="n1", promised=(5, "n1"))
    chk.on_restart("n3", term=6, vote=None, promised=(5, "n1"))  # moved on: fine
    with pytest.raises(SafetyViolation, match="granted its vote in term 5 to n1"):
        chk.on_restart("n3", term=5, vote=None, promised=(5, "n1"))
    with pytest.raises(SafetyViolation, match="restarted with term 4"):
        chk.on_restart("n3", term=4, vote="n1", promised=(5, "n1"))


def test_a_snapshot_at_or_below_the_commit_index_is_caught() -> None:
    chk = Checker()
    chk.on_install("n2", index=21, commit=20)
    with pytest.raises(SafetyViolation, match="at or below its commit index 20"):
        chk.on_install("n2", index=20, commit=20)


def test_one_node_leading_one_term_in_two_lives_is_caught() -> None:
    """A node restarts with its term on disk, so it can never lead a term it
    led before it crashed: if it does, its term did not reach the disk first."""

    class Leader:
        def __init__(self, term: int) -> None:
            self.id, self.term = "n1", term
            self.raft = type("R", (), {"log": _EmptyLog()})()

    chk = Checker()
    chk.on_leader(Leader(4), now=0, life=1)  # type: ignore[arg-type]
    chk.on_leader(Leader(4), now=1, life=1)  # the same life: fine
    chk.on_leader(Leader(5), now=2, life=2)  # a new term after a restart: fine
    with pytest.raises(SafetyViolation, match="leads term 4 again after a restart"):
        chk.on_leader(Leader(4), now=3, life=2)  # type: ignore[arg-type]


class _EmptyLog:
    def first_index(self) -> int:
        return 1

    def last_index(self) -> int:
        return 0

    def term_or_zero(self, i: int) -> int:
        return 0
