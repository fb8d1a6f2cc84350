"""Planted bugs of the etcd front end and the store under it: TEST ONLY, to
prove the soak and the tests catch them.

A fault harness that cannot fail proves nothing (docs/chaos.md, "Can it
fail?").  Each bug here is a known-wrong variant of one rule of the etcd
front end; ``python -m liferaft.chaos soak --api etcd --bug NAME`` starts
every node with it and the verdict must say so (tests/chaos/
test_soak_etcd.py).  As the simulator's ``--bug`` (liferaft/sim/bugs.py),
they patch the code from outside: the handlers carry no trace of them.

A node plants one only when its environment has ``LIFERAFT_PLANTED_BUG``
set to a name below (nothing reads the variable but the etcd front end; no
flag, no config file sets it).  It logs a warning at start, and an unknown
name refuses to start, so a typo cannot pass for a clean run.

* ``etcd-watch-skip``: a watcher created with a start revision (a client
  resuming a broken watch), or resumed by the server after a slow client,
  loses the first event it would send.
* ``etcd-range-stale``: a linearizable Range skips the read barrier and
  answers from the node's applied state, as a serializable one does.
* ``kv-read-unsettled``: a store read in a thread other than the event
  loop's does not have the loop settle its deferred commit first
  (mvcc/store.py, "Deferred commits"): a Range, which reads in a thread,
  answers from the last commit, without writes already acknowledged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from liferaft.kv.mvcc import store
from liferaft.kv.mvcc.reader import ReadView

from . import kv, watch
from .proto import rpc_pb2 as pb

#: The environment variable a node reads its planted bug from (tests only).
PLANT_ENV = "LIFERAFT_PLANTED_BUG"


class PlantedBugError(Exception):
    """An unknown planted bug was asked for."""


# -- etcd-watch-skip ---------------------------------------------------------------------

_SKIP = "_planted_skip"  # set on a watch (watch._Watch) whose next event is dropped


def _open_marking(orig: Callable[..., Any]) -> Callable[..., Any]:
    def _open(self: watch.WatchStream, w: Any, start: int) -> Any:
        got = orig(self, w, start)
        if start:  # a watch from a given revision: a client's resume, or the server's
            setattr(w, _SKIP, True)
        return got

    return _open


def _events_skipping(orig: Callable[..., Any]) -> Callable[..., Any]:
    def _events(self: watch.WatchStream, w: Any, replaying: bool) -> Any:
        if getattr(w, _SKIP, False) and w.pending:
            setattr(w, _SKIP, False)
            w.pending = w.pending[1:]
        return orig(self, w, replaying)

    return _events


def _plant_watch_skip() -> Callable[[], None]:
    cls = watch.WatchStream
    open_, events = cls._open, cls._events
    cls._open = _open_marking(open_)  # type: ignore[method-assign]
    cls._events = _events_skipping(events)  # type: ignore[method-assign]

    def undo() -> None:
        cls._open = open_  # type: ignore[method-assign]
        cls._events = events  # type: ignore[method-assign]

    return undo


# -- etcd-range-stale --------------------------------------------------------------------


async def _range_without_barrier(ctx: Any, r: pb.RangeRequest) -> pb.RangeResponse:
    stale = pb.RangeRequest()
    stale.CopyFrom(r)
    stale.serializable = True  # the bug: no read barrier, whatever the client asked
    return await kv.range_(ctx, stale)


def _plant_range_stale() -> Callable[[], None]:
    i = next(i for i, c in enumerate(kv.CALLS) if c.method == "Range")
    row = kv.CALLS[i]
    kv.CALLS[i] = dataclasses.replace(row, handler=_range_without_barrier)

    def undo() -> None:
        kv.CALLS[i] = row

    return undo


# -- kv-read-unsettled -------------------------------------------------------------------


def _plant_read_unsettled() -> Callable[[], None]:
    cls = store.MVCCStore
    read = cls.read

    def unsettled(self: store.MVCCStore) -> ReadView:
        o = self._open
        if o is not None and o.owner != threading.get_ident():
            self._acquire()  # the bug: the last commit, not what was applied
            return ReadView(self._env, self._dbs, self._release)
        return read(self)

    cls.read = unsettled  # type: ignore[method-assign]

    def undo() -> None:
        cls.read = read  # type: ignore[method-assign]

    return undo


BUGS: dict[str, Callable[[], Callable[[], None]]] = {
    "etcd-watch-skip": _plant_watch_skip,
    "etcd-range-stale": _plant_range_stale,
    "kv-read-unsettled": _plant_read_unsettled,
}


def plant(name: str) -> Callable[[], None]:
    """Plant ``name`` in this process (before the front end reads its
    call table); returns what takes it out again."""
    make = BUGS.get(name)
    if make is None:
        raise PlantedBugError(
            f"{PLANT_ENV}={name!r} names no planted bug; choose from {', '.join(BUGS)}"
        )
    return make()


def plant_from_env(env: Mapping[str, str]) -> str | None:
    """The bug ``env`` asks for, planted (None: none, the normal case)."""
    name = env.get(PLANT_ENV, "")
    if not name:
        return None
    plant(name)
    return name


@contextlib.contextmanager
def planted(name: str) -> Iterator[None]:
    """``name`` planted for the duration (tests in one process)."""
    undo = plant(name)
    try:
        yield
    finally:
        undo()
