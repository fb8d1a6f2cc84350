"""Seeds that once failed, replayed forever.

Each entry says what went wrong.  A seed here must run clean; if one fails
again, ``python -m liferaft.sim --seed S`` replays it.
"""

from __future__ import annotations

import pytest

from liferaft.sim import run_seed

REGRESSIONS = {
    # A checker false alarm found by `make sim`: an election for term 11 ended
    # late, after an entry had been committed in term 12, and the checker
    # demanded that entry of the term-11 leader.  Leader Completeness only
    # binds leaders of later terms; the checker now tracks the commit term.
    4315: "late election of an older term",
}


@pytest.mark.parametrize("seed", sorted(REGRESSIONS))
def test_regression_seed_runs_clean(seed: int) -> None:
    r = run_seed(seed, nodes=5, steps=6000)
    assert r.violation is None, f"{REGRESSIONS[seed]}: {r.violation}"
    assert r.liveness_failure is None, f"{REGRESSIONS[seed]}: {r.liveness_failure}"
