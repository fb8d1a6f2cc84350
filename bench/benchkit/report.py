"""The text both bench scripts end with (BENCHMARKS.md quotes it): the
heading, the table, notes, the ratios against their targets, and a
``SUMMARY:`` line; and the ``--json`` dump of every raw figure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

CHECK, CROSS = chr(10003), chr(10007)


def target_met(value: float, target: str) -> bool:
    """``target`` is ``"≥ X"`` or ``"≤ X"``."""
    bound = float(target[1:])
    return value >= bound if target.startswith("≥") else value <= bound


def ratio_lines(ratios: dict[str, float], targets: dict[str, str]) -> list[str]:
    """``- name: 1.23×`` per ratio, with ``(target ≥ 1.0: met|MISSED)`` for
    those that have a target."""
    out = []
    for k, v in ratios.items():
        t = targets.get(k)
        mark = "" if t is None else f" (target {t}: {'met' if target_met(v, t) else 'MISSED'})"
        out.append(f"- {k}: {v:.2f}×{mark}")
    return out


def verdicts_text(verdicts: Sequence[tuple[str, bool]]) -> str:
    """``targets met 2/3 (throughput ✓, latency ✗, ...)``."""
    met = sum(1 for _, ok in verdicts if ok)
    marks = ", ".join(f"{k} {CHECK if ok else CROSS}" for k, ok in verdicts)
    return f"targets met {met}/{len(verdicts)} ({marks})"


def heading(text: str, elapsed: float, partial: bool) -> str:
    """The ``## ...`` line over the table."""
    return f"## {text}; {elapsed:.0f} s" + (" — PARTIAL (interrupted)" if partial else "")


def emit(sections: Sequence[Sequence[str]], profile: str, summary: str) -> None:
    """Print each non-empty section after a blank line, then the profile
    summaries (they start with their own blank line) and the summary."""
    for lines in sections:
        if lines:
            print()
            print("\n".join(lines))
    if profile:
        print(profile)
    print(summary)


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Every raw figure of a run (``--json FILE``)."""
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)
