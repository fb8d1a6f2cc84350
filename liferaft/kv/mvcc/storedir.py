"""The KV machine's data directory: numbered stores and a CURRENT pointer.

A restore replaces the whole store with a received checkpoint, and a crash
at any step must leave the old store or the new one, never a mix or
neither (docs/statemachine.md, "The durable contract").  Renaming one LMDB
directory over another is not atomic (two files, and the directory must be
empty), so the data directory holds:

``store.N/``
    LMDB environments, N = 1, 2, ...: the live one and, during a restore,
    the incoming one;
``CURRENT``
    the name of the live store, one line.  Replaced by write, fsync, rename
    over, fsync of the directory: the rename is the commit point of a
    restore.

A restore receives into ``store.N+1``, checks it whole, then commits by
renaming ``CURRENT``; before the rename every crash leaves ``CURRENT``
naming the old store, after it the new one.  :meth:`StoreDir.open_current`
removes every ``store.*`` that ``CURRENT`` does not name and a stray
``CURRENT.tmp``: the leftovers of a crash on either side.  Nothing else in
the directory is touched.

:func:`crash_point` marks each step for the crash tests (a test child makes
it exit the process at the step it is told to); it does nothing otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from liferaft.kv.mvcc.checkpoint import fsync_dir
from liferaft.kv.mvcc.ops import StoreFormatError

CURRENT = "CURRENT"
_TMP = "CURRENT.tmp"
_STORE = re.compile(r"store\.([0-9]+)")


def crash_point(step: str, /) -> None:
    """A step of a restore (see the module doc): a no-op but for crash tests."""


class StoreDir:
    """The numbered stores under ``root`` and the pointer to the live one."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def open_current(self) -> Path:
        """The live store's directory (created, with ``CURRENT``, for a new
        data dir), after removing a crash's leftovers.  A ``CURRENT`` that
        names no store is a :class:`StoreFormatError`: one line, nothing removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        pointer = self.root / CURRENT
        if not pointer.exists():
            if self._numbers():
                raise StoreFormatError(
                    f"{self.root}: store directories but no {CURRENT} file; "
                    "not removing anything (restore one by hand or empty the directory)"
                )
            self.commit(self.root / "store.1")
        name = pointer.read_text().strip()
        if not _STORE.fullmatch(name) or not (self.root / name).is_dir():
            raise StoreFormatError(f"{pointer} names {name!r}, which is not a store here")
        for n in self._numbers():
            if f"store.{n}" != name:
                shutil.rmtree(self.root / f"store.{n}")
        (self.root / _TMP).unlink(missing_ok=True)
        return self.root / name

    def next_path(self) -> Path:
        """A new store directory, above every existing one (removed if left over)."""
        path = self.root / f"store.{max(self._numbers(), default=0) + 1}"
        shutil.rmtree(path, ignore_errors=True)
        return path

    def commit(self, store: Path) -> None:
        """Make ``store`` the live one, atomically (write, fsync, rename, fsync)."""
        store.mkdir(exist_ok=True)
        fsync_dir(self.root)  # the new store's name, before anything points at it
        tmp = self.root / _TMP
        with open(tmp, "w") as f:
            f.write(store.name + "\n")
            f.flush()
            os.fsync(f.fileno())
        crash_point("pointer-written")
        os.replace(tmp, self.root / CURRENT)
        crash_point("pointer-renamed")
        fsync_dir(self.root)

    def _numbers(self) -> list[int]:
        return sorted(
            int(m.group(1)) for p in self.root.iterdir() if (m := _STORE.fullmatch(p.name))
        )
