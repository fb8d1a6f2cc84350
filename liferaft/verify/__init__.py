"""liferaft.verify: check that a recorded history of client operations is
linearizable (Wing & Gong with Lowe's memoization, per key).

    from liferaft.verify import Op, check, Register
    result = check(ops, Register(), budget_per_key=10)
    result.verdict        # "yes", "NO" or "unknown"
    print(result.explain())

``python -m liferaft.verify HISTORY.json [--model register|set]`` checks a
saved history offline.
"""

from .checker import KeyResult, Result, check, check_key
from .history import Op, by_key, from_json, load, save
from .models import MODELS, Model, Register, SetModel

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
]
