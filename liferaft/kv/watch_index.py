"""Which watchers a key's event goes to, without looking at every watcher.

Watchers are grouped by their exact :class:`KeyRange`, so a thousand
watchers of one prefix are one group and cost one match per event.  The
groups are found by the shape of their range:

- a single key: one dict lookup;
- a prefix: one dict lookup per distinct prefix *length* in use (the
  key's first n characters), so a key's cost does not grow with the number
  of prefixes, only with how many lengths they have (a handful in practice:
  ``/services/``, ``/locks/``...);
- any other ``[start, end)``: a scan of the distinct such ranges (rare; an
  interval tree would replace it if many are ever used).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from .watch_types import KeyRange

__all__ = ["WatchIndex"]

T = TypeVar("T")


class WatchIndex(Generic[T]):
    """Members (the hub's watcher queues) by key range; see the module doc."""

    def __init__(self) -> None:
        self._keys: dict[bytes, set[T]] = {}
        self._prefixes: dict[bytes, set[T]] = {}
        self._prefix_lens: Counter[int] = Counter()
        self._ranges: dict[KeyRange, set[T]] = {}

    def _table(self, r: KeyRange) -> tuple[dict[Any, set[T]], Any]:
        if r.is_single:
            return self._keys, r.start
        if r.is_prefix:
            return self._prefixes, r.start
        return self._ranges, r

    def add(self, r: KeyRange, member: T) -> None:
        """Send ``member`` the events of keys in ``r``."""
        table, k = self._table(r)
        group = table.get(k)
        if group is None:
            group = table[k] = set()
            if table is self._prefixes:
                self._prefix_lens[len(r.start)] += 1
        group.add(member)

    def remove(self, r: KeyRange, member: T) -> None:
        """Stop sending ``member`` anything (a no-op if it was not there)."""
        table, k = self._table(r)
        group = table.get(k)
        if group is None:
            return
        group.discard(member)
        if not group:
            del table[k]
            if table is self._prefixes:
                n = len(r.start)
                self._prefix_lens[n] -= 1
                if not self._prefix_lens[n]:
                    del self._prefix_lens[n]

    def groups(self, key: bytes) -> Iterator[set[T]]:
        """The groups whose range holds ``key``, each once."""
        group = self._keys.get(key)
        if group is not None:
            yield group
        if self._prefixes:
            for n in self._prefix_lens:
                if n <= len(key):
                    group = self._prefixes.get(key[:n])
                    if group is not None:
                        yield group
        for r, group in self._ranges.items():
            if key in r:
                yield group

    def __len__(self) -> int:
        """How many groups (distinct ranges) are watched."""
        return len(self._keys) + len(self._prefixes) + len(self._ranges)
