"""What the client's calls answer with: a key's :class:`Item` and a write's
:class:`WriteResult` (docs/kv.md, "HTTP API")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Members = list[dict[str, Any]]  # (an alias: AsyncClient.list shadows the builtin)


@dataclass(frozen=True)
class Item:
    """A key, its value and the revision that last wrote it."""

    key: str
    value: str
    revision: int


@dataclass(frozen=True)
class WriteResult:
    """A write's revision, and the key's value before it (None if absent)."""

    revision: int
    prev: Item | None


def item_or_none(key: str, d: dict[str, Any] | None) -> Item | None:
    """``key``'s Item from its JSON form ``{"value", "revision"}``, or None."""
    return None if d is None else Item(key, d["value"], d["revision"])
