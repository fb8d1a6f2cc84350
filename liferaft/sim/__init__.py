"""liferaft.sim: a deterministic cluster simulator and safety checkers.

``python -m liferaft.sim --seeds N`` runs N random fault schedules; a failing
seed prints the command that replays it.  Scenario tests build a
:class:`Cluster` directly.
"""

from .checker import Checker, SafetyViolation
from .cluster import Cluster, NetConfig, TimingConfig
from .runner import SeedResult, run_seed
from .simnode import StateMachine

__all__ = [
    "Checker",
    "Cluster",
    "NetConfig",
    "SafetyViolation",
    "SeedResult",
    "StateMachine",
    "TimingConfig",
    "run_seed",
]
