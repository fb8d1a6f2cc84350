"""Small statistics for the benchmarks: one definition each, so that the
two bench scripts and the node processes report alike (docs/bench.md)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

Med = tuple[float, float, float]  # (median, min, max)


def summarize(lat: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p99/max of latencies in seconds, reported in milliseconds
    (nearest rank: p99 of 100 samples is the 99th smallest)."""
    if not lat:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    s = sorted(lat)

    def rank(q: float) -> float:
        i = max(0, min(len(s) - 1, math.ceil(q * len(s) - 1e-9) - 1))
        return s[i] * 1e3

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": s[-1] * 1e3}


def med(xs: Sequence[float | None]) -> Med | None:
    """(median, min, max) of the figures that exist; None if none does."""
    v = [x for x in xs if x is not None]
    if not v:
        return None
    return statistics.median(v), min(v), max(v)


def fmt(m: Med | None, f: Callable[[float], str], n: int | None = None) -> str:
    """``median (min–max)``, or the median alone when the range is empty or
    stands for ``n`` <= 1 samples; ``n/a`` for no figure."""
    if m is None:
        return "n/a"
    if (n is not None and n <= 1) or m[1] == m[2]:
        return f(m[0])
    return f"{f(m[0])} ({f(m[1])}–{f(m[2])})"


def nice(x: float) -> float:
    """Round a rate to 2 significant digits (5,500 not 5,437.5)."""
    if x <= 0:
        return 0.0
    mag = 10 ** max(0, int(math.floor(math.log10(x))) - 1)
    return float(round(x / mag) * mag)
