"""What the client's calls answer with: a key's :class:`Item`, a write's
:class:`WriteResult`, a listing's :class:`Page`, a lease's :class:`Lease`
and :class:`LeaseInfo`, and a watch's :class:`Event` (docs/kv.md, "HTTP
API" and "The Python client")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Members = list[dict[str, Any]]  # (an alias: AsyncClient.list shadows the builtin)


@dataclass(frozen=True)
class Item:
    """A key, its value and the store revision that last wrote it
    (``revision``, etcd's mod_revision); ``create_revision`` (the write that
    created this incarnation of the key), ``version`` (writes since then,
    1 for the first) and ``lease`` (0: none) when the server sent them."""

    key: str
    value: str
    revision: int
    create_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True)
class WriteResult:
    """A write's revision, and the key's value before it (None if absent)."""

    revision: int
    prev: Item | None


@dataclass(frozen=True)
class Page:
    """A range read: its ``items`` (empty for ``count_only``; values empty
    for ``keys_only``), ``count`` (every key of the range at
    ``read_revision``), ``read_revision`` (the store revision the listing
    was read at, pinned across pages) and ``revision`` (the store's revision
    when the last page was read)."""

    items: list[Item]
    count: int
    read_revision: int
    revision: int


@dataclass(frozen=True)
class Lease:
    """A granted lease: its id and the TTL in whole seconds the cluster
    granted (it raises a TTL below its minimum, docs/kv.md, "Leases")."""

    id: int
    ttl: int


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as its leader sees it: TTL granted, seconds left, and its keys
    (None unless asked for)."""

    id: int
    ttl: int
    remaining: float
    keys: list[str] | None = None


@dataclass(frozen=True)
class Event(Item):
    """One change a watch saw: ``type`` "put" or "delete" of ``key`` at
    store ``revision``.  For a put, the :class:`Item` fields are the key's
    after it; for a delete, ``value`` is empty and the other numbers 0.
    ``prev`` is the key before the change when the watch asked for
    ``prev_kv`` (None otherwise, or if it did not exist)."""

    type: Literal["put", "delete"] = "put"
    prev: Item | None = None


@dataclass(frozen=True)
class Progress:
    """A watch's progress notification: every event up to ``revision`` was
    delivered (yielded only to a watch asked for ``progress=True``)."""

    revision: int


def item_or_none(key: str, d: dict[str, Any] | None) -> Item | None:
    """``key``'s Item from its JSON form (at least ``{"value", "revision"}``),
    or None."""
    return None if d is None else item_of({"key": key, **d})


def item_of(d: dict[str, Any]) -> Item:
    """An Item from the API's JSON form of a key."""
    return Item(
        d["key"], d.get("value", ""), d["revision"], d.get("create_revision", 0),
        d.get("version", 0), d.get("lease", 0),
    )  # fmt: skip


def event_of(revision: int, d: dict[str, Any]) -> Event:
    """An Event from one entry of a watch line's ``events``."""
    kv = d["kv"]
    prev = d.get("prev_kv")
    return Event(
        kv["key"], kv.get("value", ""), revision, kv.get("create_revision", 0),
        kv.get("version", 0), kv.get("lease", 0), "delete" if d["type"] == "delete" else "put",
        None if prev is None else item_of(prev),
    )  # fmt: skip
