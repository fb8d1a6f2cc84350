"""Histories of client operations, as the fault harness records them.

An :class:`Op` is one call: who made it, on which key, what it asked
(``f``, ``input``), when it was invoked and when it returned (both on one
monotonic clock), and how it ended:

- ``ok``: it returned ``output``; it took effect between call and return;
- ``fail``: it certainly did not take effect (e.g. a 503, a 412 is *ok*
  with output False); the checker drops it;
- ``info``: indeterminate (a timeout, a 504, a lost connection on a write):
  it may have taken effect at any point after its call, or never.  Its
  ``ret`` is ignored.

The JSON form is a list of objects with the same field names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATUSES = ("ok", "fail", "info")


@dataclass(frozen=True)
class Op:
    id: int
    process: int
    key: str
    f: str
    input: Any = None
    output: Any = None
    call: float = 0.0
    ret: float | None = None
    status: str = "ok"

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"op {self.id}: status must be one of {STATUSES}")
        if self.status == "ok" and (self.ret is None or self.ret < self.call):
            raise ValueError(f"op {self.id}: an ok op needs call <= ret")

    def brief(self) -> str:
        inp = "" if self.input is None else f"({self.input!r})"
        if self.status == "ok":
            out = f" -> {self.output!r}"
        elif self.status == "info":
            out = " -> ? (indeterminate)"
        else:
            out = " -> failed"
        end = "inf" if self.status == "info" or self.ret is None else f"{self.ret:.6f}"
        return f"#{self.id} p{self.process} {self.f}{inp}{out} [{self.call:.6f}, {end}]"


def _freeze(x: Any) -> Any:
    if isinstance(x, list):
        return tuple(_freeze(v) for v in x)
    return x


def load(path: str | Path) -> list[Op]:
    """Read a history saved with :func:`save`."""
    raw = json.loads(Path(path).read_text())
    return from_json(raw)


def from_json(raw: Iterable[dict[str, Any]]) -> list[Op]:
    ops = []
    for d in raw:
        d = dict(d)
        d["input"] = _freeze(d.get("input"))
        out = d.get("output")
        d["output"] = out if d.get("f") == "read" and isinstance(out, list) else _freeze(out)
        ops.append(Op(**d))
    return ops


def save(ops: Iterable[Op], path: str | Path) -> None:
    Path(path).write_text(json.dumps([asdict(o) for o in ops], default=list))


def by_key(ops: Iterable[Op]) -> dict[str, list[Op]]:
    out: dict[str, list[Op]] = {}
    for o in ops:
        out.setdefault(o.key, []).append(o)
    return out
