"""Histories of a revisioned store (issue 15, "Proof"), as the harness records
them from HTTP responses.

Every request is a :class:`RevOp`: an etcd-style transaction (``compare``,
then the ``success`` or the ``failure`` steps) or a lease revoke, with the
revision its response named and, for an ``ok`` request, what it returned.
The simple calls are transactions too (:func:`put`, :func:`get`,
:func:`delete`, :func:`cas`, :func:`scan`): a GET is a transaction of one
range step, a conditional put (``if_value``/``if_revision``) one compare and
one put.

Statuses as in :mod:`.history`: ``ok`` (took effect between call and return,
with this output), ``fail`` (certainly did not; dropped), ``info`` (may have
taken effect after its call, or never; its output and revision are unknown).

``revision`` is the store revision the response named: for a write that
changed something, its own; for anything else (a read, a failed compare, a
delete of nothing) the store's revision when it ran (etcd's header
revision).  A range step's ``at`` (0: the request's revision) is the
revision it read, for a read of the past.

Keys and values are ``str`` (what the JSON API carries).  Strings order
as their UTF-8 bytes do, so ``[key, end)`` ranges mean what the store means.
The JSON form (:func:`rev_from_json`) is a list of objects with these field
names; nested steps, compares and key-values are objects too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .history import STATUSES

TARGETS = ("value", "version", "create_revision", "mod_revision", "lease")
CMP_OPS = ("=", "!=", "<", ">")
STEPS = ("put", "delete", "range")


@dataclass(frozen=True)
class KV:
    """One key as a read returned it.  ``create_revision`` and ``version`` 0
    mean "not recorded" (then they are not checked)."""

    key: str
    value: str
    mod_revision: int
    create_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True)
class Cond:
    """A compare: ``target`` of ``key`` ``op`` ``operand`` (a missing key has
    version, revisions and lease 0, and every value compare on it is false)."""

    key: str
    target: str
    op: str
    operand: str | int

    def __post_init__(self) -> None:
        if self.target not in TARGETS or self.op not in CMP_OPS:
            raise ValueError(f"compare on {self.key!r}: bad target or op {self.target} {self.op}")


@dataclass(frozen=True)
class Step:
    """One operation of a transaction branch.

    ``put``: ``key`` = ``value`` (attached to ``lease``).  ``delete`` and
    ``range``: ``key``, or every key in ``[key, end)`` when ``end`` is set.
    Results (``ok`` requests): a range's ``kvs`` (None: not recorded), and
    ``more`` when a limit cut it (keys after the last one returned are then
    not checked); a delete's ``deleted`` count (None: not recorded)."""

    f: str
    key: str
    end: str | None = None
    value: str | None = None
    lease: int = 0
    kvs: tuple[KV, ...] | None = None
    more: bool = False
    deleted: int | None = None
    at: int = 0

    def __post_init__(self) -> None:
        if self.f not in STEPS:
            raise ValueError(f"step on {self.key!r}: f must be one of {STEPS}, not {self.f!r}")
        if self.f == "put" and self.value is None:
            raise ValueError(f"put of {self.key!r} without a value")

    def covers(self, key: str) -> bool:
        """Whether ``key`` is in this step's key or range."""
        return key == self.key if self.end is None else self.key <= key < self.end


@dataclass(frozen=True)
class RevOp:
    """One request.  ``revoke`` (non-zero) makes it a lease revoke, which
    deletes every key attached to that lease; then it has no steps."""

    id: int
    process: int
    call: float
    ret: float | None
    status: str = "ok"
    revision: int | None = None
    compare: tuple[Cond, ...] = ()
    success: tuple[Step, ...] = ()
    failure: tuple[Step, ...] = ()
    succeeded: bool = True
    revoke: int = 0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"op {self.id}: status must be one of {STATUSES}")
        if self.status == "ok" and (self.ret is None or self.ret < self.call):
            raise ValueError(f"op {self.id}: an ok op needs call <= ret")
        if self.status == "ok" and self.revision is None:
            raise ValueError(f"op {self.id}: an ok op needs the revision its response named")

    @property
    def branch(self) -> tuple[Step, ...]:
        """The steps that ran (an ``ok`` request)."""
        return self.success if self.succeeded else self.failure

    def is_write(self) -> bool:
        return bool(self.revoke) or any(s.f != "range" for s in self.success + self.failure)

    def brief(self) -> str:
        if self.revoke:
            what = f"revoke(lease {self.revoke})"
        else:
            cmp = " & ".join(f"{c.key}.{c.target}{c.op}{c.operand!r}" for c in self.compare)
            steps = "; ".join(_step_brief(s) for s in self.branch if self.status == "ok")
            if self.status != "ok":
                steps = "; ".join(_step_brief(s) for s in self.success)
            what = f"if {cmp}: {steps}" if cmp else steps
            if self.compare and self.status == "ok":
                what += f" -> {'then' if self.succeeded else 'else'}"
        rev = f" @{self.revision}" if self.revision is not None else ""
        end = "inf" if self.ret is None or self.status != "ok" else f"{self.ret:.3f}"
        return f"#{self.id} p{self.process} [{what}]{rev} {self.status} [{self.call:.3f}, {end}]"


def _step_brief(s: Step) -> str:
    rng = s.key if s.end is None else f"[{s.key},{s.end})"
    if s.f == "put":
        return f"put {s.key}={s.value!r}" + (f" lease {s.lease}" if s.lease else "")
    if s.f == "delete":
        return f"delete {rng}" + ("" if s.deleted is None else f" -> {s.deleted}")
    got = "?" if s.kvs is None else ",".join(f"{kv.key}={kv.value!r}@{kv.mod_revision}"
                                              for kv in s.kvs)
    return f"range {rng} -> {{{got}}}"


# --- shorthands for the simple calls of the HTTP API ----------------------------


@dataclass
class OpMaker:
    """Numbers ops as it makes them (the harness keeps one per history)."""

    next_id: int = 1
    made: list[RevOp] = field(default_factory=list)

    def __call__(self, process: int, call: float, ret: float | None, status: str = "ok",
                 revision: int | None = None, **kw: Any) -> RevOp:
        o = RevOp(self.next_id, process, call, ret, status, revision, **kw)
        self.next_id += 1
        self.made.append(o)
        return o


def put(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    """``PUT /v1/kv/{key}``: pass as ``**put(...)`` to :class:`OpMaker`."""
    return {"success": (Step("put", key, value=value, lease=lease),)}


def delete(key: str, deleted: int | None = None, end: str | None = None) -> dict[str, Any]:
    return {"success": (Step("delete", key, end, deleted=deleted),)}


def get(
    key: str, value: str | None = None, mod: int = 0, at: int = 0, **meta: int
) -> dict[str, Any]:
    """A read of one key that returned ``value`` at ``mod`` (None: not found)."""
    kvs = () if value is None else (KV(key, value, mod, **meta),)
    return {"success": (Step("range", key, kvs=kvs, at=at),)}


def scan(prefix: str, kvs: Iterable[KV], more: bool = False, at: int = 0) -> dict[str, Any]:
    return {"success": (Step("range", prefix, prefix_end(prefix), kvs=tuple(kvs), more=more,
                             at=at),)}


def cas(key: str, old: str, new: str, wrote: bool) -> dict[str, Any]:
    """``PUT`` with ``if_value``: 200 (``wrote``) or 412."""
    return {"compare": (Cond(key, "value", "=", old),),
            "success": (Step("put", key, value=new),), "succeeded": wrote}


def prefix_end(prefix: str) -> str:
    """The ``end`` of the range of every key that starts with ``prefix``."""
    p = prefix
    while p:
        if ord(p[-1]) < 0x10FFFF:
            return p[:-1] + chr(ord(p[-1]) + 1)
        p = p[:-1]
    return "\U0010ffff" * 2  # above every key the API can carry


# --- JSON ---------------------------------------------------------------------------


def _kv(d: dict[str, Any]) -> KV:
    return KV(**d)


def _step(d: dict[str, Any]) -> Step:
    d = dict(d)
    if d.get("kvs") is not None:
        d["kvs"] = tuple(_kv(x) for x in d["kvs"])
    return Step(**d)


def rev_from_json(raw: Iterable[dict[str, Any]]) -> list[RevOp]:
    """Ops from their JSON form (a ``TypeError``/``ValueError`` names a bad one)."""
    ops = []
    for d in raw:
        d = dict(d)
        d["compare"] = tuple(Cond(**c) for c in d.get("compare", ()))
        d["success"] = tuple(_step(s) for s in d.get("success", ()))
        d["failure"] = tuple(_step(s) for s in d.get("failure", ()))
        ops.append(RevOp(**d))
    return ops


def rev_to_json(ops: Iterable[RevOp]) -> list[dict[str, Any]]:
    return [asdict(o) for o in ops]


def load_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
