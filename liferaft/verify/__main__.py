"""``python -m liferaft.verify HISTORY.json [--model register|set] [--budget S]``."""

from __future__ import annotations

import argparse
import sys

from .checker import check
from .history import load
from .models import MODELS


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m liferaft.verify", description=__doc__)
    p.add_argument("history", help="a JSON history saved by the fault harness")
    p.add_argument("--model", choices=sorted(MODELS), default="register")
    p.add_argument("--budget", type=float, default=10.0, help="seconds per key")
    a = p.parse_args(argv)
    try:
        ops = load(a.history)
    except (OSError, ValueError, TypeError) as exc:
        print(f"error: cannot read {a.history}: {exc}", file=sys.stderr)
        return 2
    res = check(ops, MODELS[a.model], a.budget)
    if res.verdict != "yes":
        print(res.explain())
    print(f"ops={len(ops)} keys={len(res.keys)} linearizable={res.verdict}")
    return {"yes": 0, "NO": 1}.get(res.verdict, 3)


if __name__ == "__main__":
    sys.exit(main())
