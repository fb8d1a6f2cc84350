"""Typed builders for ``POST /v1/txn`` (docs/kv.md, "Transactions") and
its typed result.

    r = await c.txn(
        [Compare.value("cfg") == "old", Compare.version("lock") == 0],
        success=[Op.put("cfg", "new"), Op.delete("lock")],
        failure=[Op.get("cfg")],
    )
    if r.succeeded: ...

A comparison names a key's target (``value``, ``version``,
``create_revision``, ``mod_revision`` or ``lease``) and one of ``== != <
>``; a missing key has 0 for each number and "" for nothing (a value
compare on it fails).  The branch that ran is applied at one revision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from .model import Item, Page, WriteResult, item_of

Target = Literal["value", "version", "create_revision", "mod_revision", "lease"]


@dataclass(frozen=True)
class Cmp:
    """One condition: ``key``'s ``target`` ``op`` ``value``."""

    key: str
    target: Target
    op: Literal["=", "!=", "<", ">"]
    value: str | int

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "target": self.target, "op": self.op, "value": self.value}


class _Side:
    """``Compare.<target>(key)``: compare it with ``== != < >`` to get a :class:`Cmp`."""

    def __init__(self, key: str, target: Target) -> None:
        self.key = key
        self.target = target

    def _cmp(self, op: Literal["=", "!=", "<", ">"], other: object) -> Cmp:
        want = str if self.target == "value" else int
        if not isinstance(other, want) or isinstance(other, bool):
            raise TypeError(f"a {self.target} compare takes a {want.__name__}, not {other!r}")
        return Cmp(self.key, self.target, op, other)

    def __eq__(self, other: object) -> Cmp:  # type: ignore[override]
        return self._cmp("=", other)

    def __ne__(self, other: object) -> Cmp:  # type: ignore[override]
        return self._cmp("!=", other)

    def __lt__(self, other: object) -> Cmp:
        return self._cmp("<", other)

    def __gt__(self, other: object) -> Cmp:
        return self._cmp(">", other)

    __hash__ = None  # type: ignore[assignment]  # == builds a Cmp: not a value


def _target(target: Target) -> Callable[[str], _Side]:
    def side(key: str) -> _Side:
        return _Side(key, target)

    side.__doc__ = f"``key``'s {target}, to compare with == != < >."
    return side


class Compare:
    """Where a condition starts: ``Compare.value("k") == "v"``."""

    value = staticmethod(_target("value"))
    version = staticmethod(_target("version"))
    create_revision = staticmethod(_target("create_revision"))
    mod_revision = staticmethod(_target("mod_revision"))
    lease = staticmethod(_target("lease"))


@dataclass(frozen=True)
class Op:
    """One operation of a branch; build it with :meth:`put`, :meth:`delete`
    or :meth:`get`."""

    kind: Literal["put", "delete", "range"]
    body: dict[str, Any]

    @staticmethod
    def put(key: str, value: str, *, lease: int = 0, prev_kv: bool = False) -> Op:
        return Op("put", {"key": key, "value": value, "lease": lease, "prev_kv": prev_kv})

    @staticmethod
    def delete(
        key: str | None = None, *, prefix: str | None = None, end: str | None = None,
        prev_kv: bool = False,
    ) -> Op:
        """Delete ``key``; or every key under ``prefix``; or ``[key, end)``."""
        return Op("delete", {**span(key, prefix, end), "prev_kv": prev_kv})

    @staticmethod
    def get(
        key: str | None = None, *, prefix: str | None = None, end: str | None = None,
        revision: int = 0, limit: int = 0, keys_only: bool = False, count_only: bool = False,
    ) -> Op:
        """Read ``key``, a ``prefix`` or ``[key, end)`` (one page: ``limit``
        keys at most, 0 for the server's most)."""
        body = {**span(key, prefix, end), "revision": revision, "limit": limit,
                "keys_only": keys_only, "count_only": count_only}  # fmt: skip
        return Op("range", body)

    def to_json(self) -> dict[str, Any]:
        return {self.kind: self.body}


def span(key: str | None, prefix: str | None, end: str | None) -> dict[str, str]:
    """The JSON fields naming a key, a prefix, or ``[key, end)``."""
    if (key is None) == (prefix is None):
        raise ValueError("name a key or a prefix (one of them)")
    if prefix is not None:
        if end is not None:
            raise ValueError("give prefix or end, not both")
        return {"prefix": prefix}
    assert key is not None
    return {"key": key} if end is None else {"start": key, "end": end}


@dataclass(frozen=True)
class Deleted:
    """A delete's result: how many keys it deleted, and them (with ``prev_kv``)."""

    revision: int
    deleted: int
    prev: list[Item]


OpResult = WriteResult | Deleted | Page


@dataclass(frozen=True)
class TxnResult:
    """Which branch ran (``succeeded``: the success branch), the store
    revision after it, and one result per operation of that branch."""

    succeeded: bool
    revision: int
    results: list[OpResult]


def txn_result(d: dict[str, Any]) -> TxnResult:
    out: list[OpResult] = []
    for r in d["results"]:
        if "put" in r:
            p = r["put"]
            prev = p.get("prev")
            out.append(WriteResult(p["revision"], None if prev is None else item_of(prev)))
        elif "delete" in r:
            x = r["delete"]
            prevs = [item_of(i) for i in x.get("prev", [])]
            out.append(Deleted(x["revision"], x["deleted"], prevs))
        else:
            x = r["range"]
            items = [item_of(i) for i in x["items"]]
            out.append(Page(items, x.get("count", 0), x.get("read_revision", 0), x["revision"]))
    return TxnResult(bool(d["succeeded"]), int(d["revision"]), out)


__all__ = ["Cmp", "Compare", "Deleted", "Op", "OpResult", "TxnResult"]
