"""Sequential specifications for the linearizability checker.

A model is a pure function ``step(state, op) -> new state | None``: ``None``
means the operation, with the output it was observed to return, is
impossible in ``state``.  States must be hashable (the checker memoizes on
them).

- :class:`Register`: one key of liferaft-kv.  ``read`` (output: the value,
  or None for not found), ``write`` (input: value), ``cas`` (input: (old,
  new); output: True if it wrote, False if the precondition failed),
  ``delete`` (output: True if it deleted, False for not found).
- :class:`SetModel`: a grow-only set.  ``add`` (input: element) and ``read``
  (output: the whole set, as a frozenset or a list).
"""

from __future__ import annotations

from typing import Any, Protocol

from .history import Op


class Model(Protocol):
    name: str

    def init(self) -> Any:
        """The state before any operation."""
        ...

    def step(self, state: Any, op: Op) -> Any | None:
        """The state after ``op`` (with its observed output), or None if
        ``op`` could not have returned that output in ``state``.  An
        indeterminate op has no output and must be accepted as applied."""
        ...

    def describe(self, state: Any) -> str: ...


class _Absent:
    """The state of a key that holds nothing (``None`` means "impossible")."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


class Register:
    name = "register"

    def init(self) -> Any:
        return _ABSENT

    def step(self, state: Any, op: Op) -> Any | None:
        f = op.f
        known = op.status == "ok"
        if f == "read":
            if not known:
                return state  # an unanswered read tells nothing
            seen = _ABSENT if op.output is None else op.output
            return state if seen == state else None
        if f == "write":
            return op.input
        if f == "cas":
            old, new = op.input
            old = _ABSENT if old is None else old
            if not known:  # if it took effect, it wrote exactly when it could
                return new if state == old else state
            if op.output:
                return new if state == old else None
            return state if state != old else None
        if f == "delete":
            if not known:
                return _ABSENT
            if op.output:
                return _ABSENT if state is not _ABSENT else None
            return state if state is _ABSENT else None
        raise ValueError(f"register: unknown operation {f!r}")

    def describe(self, state: Any) -> str:
        return "absent" if state is _ABSENT else repr(state)


class SetModel:
    name = "set"

    def init(self) -> Any:
        return frozenset()

    def step(self, state: Any, op: Op) -> Any | None:
        if op.f == "add":
            return state | {op.input}
        if op.f == "read":
            if op.status != "ok":
                return state
            return state if frozenset(op.output) == state else None
        raise ValueError(f"set: unknown operation {op.f!r}")

    def describe(self, state: Any) -> str:
        return "{" + ", ".join(sorted(map(repr, state))) + "}"


MODELS: dict[str, Model] = {"register": Register(), "set": SetModel()}
