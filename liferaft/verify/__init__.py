"""liferaft.verify: check that a recorded history of client operations is
linearizable (Wing & Gong with Lowe's memoization, per key).

    from liferaft.verify import Op, check, Register
    result = check(ops, Register(), budget_per_key=10)
    result.verdict        # "yes", "NO" or "unknown"
    print(result.explain())

``python -m liferaft.verify HISTORY.json [--model register|set]`` checks a
saved history offline.

Issue 15's proof of the revisioned store (docs/chaos.md, "Revisions,
watches and leases"): :func:`check_revisions` (the store revision is the
witness order), :func:`check_watches` (every watch stream gap-free,
duplicate-free, in order, agreeing with the writes) and
:func:`check_leases` (no key gone while its lease was kept alive);
``python -m liferaft.verify revisions|leases`` re-checks saved files.
"""

from .checker import KeyResult, Result, check, check_key
from .history import Op, by_key, from_json, load, save
from .leases import KeyGone, LeaseRecord, LeaseReport, check_leases
from .models import MODELS, Model, Register, SetModel
from .rev_history import KV, Cond, RevOp, Step
from .revisions import RevReport, Seen, check_revisions
from .watches import Stream, WatchReport, WEvent, check_watches, seen_from

__all__ = [
    "Op",
    "check",
    "check_key",
    "Result",
    "KeyResult",
    "Register",
    "SetModel",
    "Model",
    "MODELS",
    "load",
    "save",
    "from_json",
    "by_key",
    "KV",
    "Cond",
    "RevOp",
    "Step",
    "RevReport",
    "Seen",
    "check_revisions",
    "Stream",
    "WEvent",
    "WatchReport",
    "check_watches",
    "seen_from",
    "KeyGone",
    "LeaseRecord",
    "LeaseReport",
    "check_leases",
]
