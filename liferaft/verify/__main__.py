"""Check saved histories again offline.

    python -m liferaft.verify HISTORY.json [--model register|set] [--budget S]
    python -m liferaft.verify revisions HISTORY.json [--watches WATCHES.json]
    python -m liferaft.verify leases LEASES.json

Exit status: 0 the history passes, 1 it does not, 2 an input cannot be read,
3 (linearizability only) no answer within the budget.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .checker import check
from .history import load
from .leases import check_leases, leases_from_json
from .models import MODELS
from .rev_history import load_json, rev_from_json
from .revisions import check_revisions
from .watches import check_watches, seen_from, streams_from_json


def _read(path: str, parse: Callable[[Any], Any]) -> Any:
    try:
        return parse(load_json(path))
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SystemExit(f"error: cannot read {path}: {exc}") from None


def _report(lines: list[str], messages: list[str], ok: bool) -> int:
    for m in messages:
        print(m)
    print(" ".join(lines))
    return 0 if ok else 1


def _parser(sub: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"python -m liferaft.verify {sub}",
                                   description=description)


def revisions_main(argv: list[str]) -> int:
    p = _parser("revisions", "Replay a store-revision history (liferaft/verify/revisions.py) "
                "and, with --watches, check the watch streams against it "
                "(liferaft/verify/watches.py).")
    p.add_argument("history", help="a JSON list of revision ops (liferaft/verify/rev_history.py)")
    p.add_argument("--watches", help="a JSON list of watch streams")
    a = p.parse_args(argv)
    ops = _read(a.history, rev_from_json)
    streams = _read(a.watches, streams_from_json) if a.watches else []
    rep = check_revisions(ops, seen_from(streams))
    lines, msgs, ok = [rep.line()], list(rep.violations), rep.ok
    if a.watches:
        w = check_watches(streams, rep.changes)
        lines.append(w.line())
        msgs += w.messages
        ok = ok and w.ok
    return _report(lines, msgs, ok)


def leases_main(argv: list[str]) -> int:
    p = _parser("leases", "Count keys that vanished while their lease was kept alive "
                "(liferaft/verify/leases.py).")
    p.add_argument("leases", help='JSON: {"leases": [...], "leaderless": [[start, end], ...]}')
    a = p.parse_args(argv)
    leases, leaderless = _read(a.leases, leases_from_json)
    rep = check_leases(leases, leaderless)
    return _report([rep.line()], rep.messages, rep.ok)


SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "revisions": revisions_main,
    "leases": leases_main,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        try:
            return SUBCOMMANDS[argv[0]](argv[1:])
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
                return 2
            raise
    p = argparse.ArgumentParser(prog="python -m liferaft.verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
