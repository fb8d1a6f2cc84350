"""Ready-made replicated types: a dict, a counter, a lock and a queue.

Each is a :class:`~liferaft.runtime.commands.Replicated`: pass an instance
to a node as its state machine, then ``await`` its commands from any node::

    locks = ReplicatedLock()
    node = Node(..., state_machine=locks)
    token = await locks.acquire("worker-1", ttl=10.0)   # int, or None if held

Values (dict values, queue items) are any msgspec-encodable value: None,
bool, int, float, str, bytes, and lists and dicts of them.  Every replica
stores them as decoded from the log, so tuples come back as lists and sets
are refused by type-hinted fields.  None is not a storable value: it means
"absent" (``ReplicatedDict.get``, ``cas``) or "empty" (``ReplicatedQueue.pop``).

Values in the state are never mutated in place (snapshots share them with
the live state, see ``Replicated.snapshot_state``), so queries hand out
copies of lists and dicts rather than the stored objects.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec

from .commands import Replicated, command, query

__all__ = ["LockInfo", "ReplicatedCounter", "ReplicatedDict", "ReplicatedLock", "ReplicatedQueue"]

#: A lease length in seconds: positive (checked before proposing).
TTL = Annotated[float, msgspec.Meta(gt=0)]


def _detached(value: Any) -> Any:
    """A copy of ``value`` that the caller may mutate without touching the state."""
    if isinstance(value, list | dict):
        return msgspec.msgpack.decode(msgspec.msgpack.encode(value))
    return value  # None, bool, int, float, str, bytes: immutable


def _refuse_none(what: str, value: Any) -> None:
    if value is None:
        raise ValueError(f"{what} cannot be None (None means absent)")


class ReplicatedDict(Replicated):
    """A replicated mapping of ``str`` keys to values.

    Commands: :meth:`set`, :meth:`delete`, :meth:`cas`.  Queries: :meth:`get`,
    :meth:`items`, :meth:`keys`, :meth:`size`.  Keys keep insertion order,
    identical on every replica.
    """

    __state__ = ("_data",)
    _data: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self._data = {}

    @command
    def set(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key``; return the previous value or None."""
        _refuse_none("a ReplicatedDict value", value)
        previous = self._data.get(key)
        self._data[key] = value
        return previous

    @command
    def delete(self, key: str) -> Any:
        """Remove ``key``; return its value, or None if it was absent."""
        return self._data.pop(key, None)

    @command
    def cas(self, key: str, expected: Any, new: Any) -> bool:
        """Compare and swap: if ``key`` holds ``expected``, store ``new``; True if done.

        ``expected=None`` means "``key`` is absent" (create only) and
        ``new=None`` deletes the key.  Values are compared with ``==``.
        """
        if self._data.get(key) != expected:
            return False
        if new is None:
            self._data.pop(key, None)
        else:
            self._data[key] = new
        return True

    @query
    def get(self, key: str, default: Any = None) -> Any:
        """The value under ``key`` (a copy), or ``default``."""
        return _detached(self._data[key]) if key in self._data else default

    @query
    def items(self) -> list[tuple[str, Any]]:
        """Every ``(key, value)`` pair (copies), in insertion order."""
        return [(k, _detached(v)) for k, v in self._data.items()]

    @query
    def keys(self) -> list[str]:
        """Every key, in insertion order."""
        return list(self._data)

    @query
    def size(self) -> int:
        """How many keys are stored."""
        return len(self._data)


class ReplicatedCounter(Replicated):
    """A replicated integer.  Commands: :meth:`add`, :meth:`set`.  Query: :meth:`get`."""

    __state__ = ("_value",)
    _value: int

    def __init__(self, initial: int = 0) -> None:
        super().__init__()
        self._value = initial

    @command
    def add(self, n: int = 1) -> int:
        """Add ``n`` (may be negative); return the new value."""
        self._value += n
        return self._value

    @command
    def set(self, value: int) -> int:
        """Set the value; return the previous one."""
        previous, self._value = self._value, value
        return previous

    @query
    def get(self) -> int:
        """The current value."""
        return self._value


class LockInfo(msgspec.Struct, frozen=True):
    """Who holds a :class:`ReplicatedLock`: owner, fencing token, lease end (leader time)."""

    owner: str
    token: int
    expires_at: float


class ReplicatedLock(Replicated):
    """A replicated lease lock with fencing tokens.

    - :meth:`acquire` grants the lock when it is free, expired, or already
      held by the same owner, and then issues a new fencing token: an int
      that grows by one with every grant, whoever the owner.  It returns
      None while another owner's lease runs.
    - :meth:`refresh` extends a live lease, keeping its token.
    - :meth:`release` frees it.  Both refuse (return False) a stale token:
      one that is not the latest, or whose lease has expired.

    Time is the leader's clock stamped on each entry, made monotonic here:
    the lock's clock is the highest leader time it has applied, so a new
    leader whose clock lags never makes a lease run backwards.  A clock that
    jumps *forward* expires leases early; a holder must therefore pass its
    token to every resource it guards, and the resource must refuse any token
    lower than the highest it has seen (see docs/statemachine.md).
    """

    __state__ = ("_owner", "_token", "_expires_at", "_now")
    _owner: str | None
    _token: int
    _expires_at: float
    _now: float

    def __init__(self) -> None:
        super().__init__()
        self._owner = None  # None: free (released, or never acquired)
        self._token = 0  # the latest fencing token issued; 0 before the first grant
        self._expires_at = 0.0  # leader time at which the owner's lease ends
        self._now = 0.0  # the highest leader time applied; never decreases

    def _clock(self) -> float:
        self._now = max(self._now, self.leader_time)
        return self._now

    def _holds(self, owner: str, token: int, now: float) -> bool:
        return self._owner == owner and token == self._token and now < self._expires_at

    @command
    def acquire(self, owner: str, ttl: TTL) -> int | None:
        """Take the lock for ``ttl`` seconds of leader time; the new fencing token, or None.

        None means another owner holds a lease that has not expired at the
        leader time of this entry.  Acquiring a lock one already holds issues
        a new token and makes the old one stale.
        """
        if not math.isfinite(ttl):
            raise ValueError(f"ttl must be finite, not {ttl}")
        now = self._clock()
        if self._owner is not None and self._owner != owner and now < self._expires_at:
            return None
        self._token += 1
        self._owner = owner
        self._expires_at = now + ttl
        return self._token

    @command
    def refresh(self, owner: str, token: int, ttl: TTL) -> bool:
        """Extend a live lease to ``ttl`` seconds from now; False if the token is stale."""
        if not math.isfinite(ttl):
            raise ValueError(f"ttl must be finite, not {ttl}")
        now = self._clock()
        if not self._holds(owner, token, now):
            return False
        self._expires_at = now + ttl
        return True

    @command
    def release(self, owner: str, token: int) -> bool:
        """Free the lock; False if the token is stale (the lease was lost already)."""
        now = self._clock()
        if not self._holds(owner, token, now):
            return False
        self._owner = None
        self._expires_at = 0.0
        return True

    @query
    def holder(self) -> LockInfo | None:
        """The last grant if not released (its lease may have expired since), else None."""
        if self._owner is None:
            return None
        return LockInfo(self._owner, self._token, self._expires_at)

    @query
    def last_token(self) -> int:
        """The latest fencing token issued (0 if none)."""
        return self._token


class ReplicatedQueue(Replicated):
    """A replicated FIFO queue.  Commands: :meth:`put`, :meth:`pop`.

    Queries: :meth:`peek`, :meth:`size`, :meth:`items`.  A pop takes the item
    for whoever proposed it: each item is handed out by exactly one entry.
    """

    # A deque is not msgspec-encodable: snapshots hold the items as a list.
    __state__ = {"items": list[Any]}

    def __init__(self) -> None:
        super().__init__()
        self._items: deque[Any] = deque()

    def snapshot_state(self) -> Mapping[str, Any]:
        """The items as a list (a shallow copy)."""
        return {"items": list(self._items)}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Refill the deque from the snapshot's list."""
        self._items = deque(state["items"])

    @command
    def put(self, item: Any) -> int:
        """Append ``item`` (not None); return the new size."""
        _refuse_none("a ReplicatedQueue item", item)
        self._items.append(item)
        return len(self._items)

    @command
    def pop(self) -> Any:
        """Remove and return the oldest item, or None if the queue is empty."""
        return self._items.popleft() if self._items else None

    @query
    def peek(self) -> Any:
        """The oldest item (a copy), or None if the queue is empty."""
        return _detached(self._items[0]) if self._items else None

    @query
    def size(self) -> int:
        """How many items are queued."""
        return len(self._items)

    @query
    def items(self) -> list[Any]:
        """Every item (copies), oldest first."""
        return [_detached(item) for item in self._items]
