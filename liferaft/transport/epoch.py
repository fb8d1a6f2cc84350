"""This node's cluster epoch, and what the handshake learns about it.

``--force-new-cluster`` (liferaft/kv/rebuild.py) starts a new history under
the same cluster id.  Old members that come back with their old data are
a majority of the OLD membership: they would elect a leader among
themselves and take writes beside the forced node, two clusters under one
id.  So each history has a number, the *epoch* (0 for a cluster made with
``--initial-cluster``; the forced node's one more than it had), said in
every handshake (docs/transport.md, "Epochs"):

- a member of a higher epoch answers an older peer REMOVED, with its proof
  of the cluster secret, so only a member can say it;
- a node told so, or that meets a proven peer of a higher epoch, is
  *stale*: its transport delivers and sends nothing more, and
  ``on_stale`` tells its owner (``liferaft serve`` stops for good);
- an empty node joining (epoch None) judges nobody and takes the epoch of
  the first proven member it meets; ``on_learned`` makes it durable first.

A normal lagging member is never stale: every member of a history has its
epoch from the moment it joins it.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Epoch"]


class Epoch:
    """One transport's epoch: known (an int), or None until learned."""

    def __init__(
        self,
        value: int | None = 0,
        on_learned: Callable[[int], None] | None = None,
        on_stale: Callable[[str], None] | None = None,
    ) -> None:
        if value is not None and value < 0:
            raise ValueError("the epoch is a non-negative integer (or None: learn it)")
        self.value = value
        #: Why this node belongs to a history the cluster left, once it does.
        self.stale: str | None = None
        self._on_learned = on_learned
        self._on_stale = on_stale

    @property
    def claim(self) -> int:
        """What the handshake says: the epoch, or 0 while it is unknown."""
        return self.value or 0

    def learn(self, value: int) -> None:
        """Take ``value`` from a proven member if the epoch is not known yet.
        ``on_learned`` runs first: if it raises (the disk refused), the
        epoch stays unknown and the next handshake tries again."""
        if self.value is not None:
            return
        if self._on_learned is not None:
            self._on_learned(value)
        self.value = value

    def mark_stale(self, reason: str) -> None:
        """This node is of an older history than a proven member (the first
        reason is kept; ``on_stale`` is told once)."""
        if self.stale is not None:
            return
        self.stale = reason
        if self._on_stale is not None:
            self._on_stale(reason)
