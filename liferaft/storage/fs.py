"""The file operations storage performs, behind one small interface.

:class:`FileSystem` is the real thing.  :class:`FaultFS` runs on the same
real files but remembers what has been synced, so it can play a crash: each
file written since its last fdatasync keeps only a random prefix of its
unsynced bytes (a torn write; for writes in place into a preallocated file,
the bytes past the cut read as what was there before, zeros, and the cut
falls on a sector boundary), a rename or unlink whose directory was not
fsynced since may be undone, and it can make a write fail with ENOSPC or
EIO after a chosen number of writes, part-way through.  It can also cut the
power at the n-th file operation from now (:meth:`FaultFS.crash_after`), so
a test can crash a multi-step operation at every one of its steps.  Tests
drive the storage through it to check what survives.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
from collections.abc import Callable
from pathlib import Path

# posix_fallocate's answers for "not here": no support, or no room for it all.
#: The unit a disk writes whole: a torn write in place is cut on a multiple.
SECTOR = 512

_NO_PREALLOC = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOSPC, errno.EFBIG})


class PowerCut(Exception):
    """Raised by :class:`FaultFS` at the file operation chosen by
    :meth:`FaultFS.crash_after`: the machine lost power before it ran."""


class FileSystem:
    """Real file operations (what production uses)."""

    def makedirs(self, d: Path) -> None:
        """Create ``d`` and any missing parents, durably.

        A new directory's name lives in its parent, and is only durable once
        the parent is fsynced (the same rule as for a new file); without it
        a crash soon after the first start can lose the whole data directory,
        or its wal/ or snap/ subdirectory, after the node acknowledged writes
        into it."""
        missing: list[Path] = []
        p = d
        while not self.exists(p):
            missing.append(p)
            p = p.parent
        for p in reversed(missing):
            # Another process may have made it meanwhile; its parent is fsynced all the same.
            with contextlib.suppress(FileExistsError):
                self.mkdir(p)
            self.fsync_dir(p.parent)

    def mkdir(self, d: Path) -> None:
        """Create one directory (not yet durable: see :meth:`makedirs`)."""
        d.mkdir()

    def listdir(self, d: Path) -> list[str]:
        return [p.name for p in d.iterdir()]

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def create(self, path: Path, data: bytes) -> None:
        """Write a new file whole and fsync it."""
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def open_append(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_APPEND)

    def open_new(self, path: Path) -> int:
        """Create (or empty) ``path`` for writing; nothing is durable until
        :meth:`fdatasync` and, for its name, :meth:`fsync_dir`."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def open_write(self, path: Path) -> int:
        """Open an existing file for writing in place (:meth:`pwrite`)."""
        return os.open(path, os.O_WRONLY)

    def write(self, fd: int, data: memoryview | bytes) -> int:
        return os.write(fd, data)

    def pwrite(self, fd: int, data: memoryview | bytes, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def pwrite_all(self, fd: int, data: bytes | bytearray, offset: int) -> None:
        """Write all of ``data`` at ``offset``; short writes are retried."""
        view = memoryview(data)
        while view:
            n = self.pwrite(fd, view, offset)
            view = view[n:]
            offset += n

    def preallocate(self, fd: int, size: int) -> bool:
        """Allocate the file's blocks up to ``size`` (zeros), durably.

        Writes inside the allocated size then leave the file size alone, so
        an fdatasync need not commit it.  False where the file system refuses
        (no fallocate, or not enough space for the whole size): the file
        then simply grows as it is written, as before.  Other errors (EIO)
        are raised."""
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in _NO_PREALLOC:
                raise
            return False
        os.fsync(fd)
        return True

    #: Whether callers may run this layer's operations from helper threads
    #: (a :class:`FaultFS` must see them in one deterministic order).
    threads = True

    def write_all(self, fd: int, data: bytes | bytearray) -> None:
        """Write all of ``data``; a short write is not an error, just a retry."""
        view = memoryview(data)
        while view:
            view = view[self.write(fd, view) :]

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def dup(self, fd: int) -> int:
        """A second descriptor of the same open file (for a syncer thread)."""
        return os.dup(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def truncate(self, path: Path, size: int) -> None:
        """Cut a file to ``size`` bytes, durably."""
        with open(path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())

    def unlink(self, path: Path) -> None:
        path.unlink()

    def replace(self, src: Path, dst: Path) -> None:
        """Rename ``src`` over ``dst``; durable once the directory is fsynced."""
        os.replace(src, dst)

    def exists(self, path: Path) -> bool:
        return path.exists()

    def fsync_dir(self, d: Path) -> None:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


REAL = FileSystem()


class FaultFS(FileSystem):
    """Real files plus a model of the page cache and of failing disks."""

    def __init__(self, rng: random.Random, os_sync: bool = True) -> None:
        """``os_sync=False`` skips the kernel's fsyncs: this layer, not the
        kernel, decides what a crash keeps, so a simulation need not wait."""
        self.rng = rng
        self.os_sync = os_sync
        self._paths: dict[int, Path] = {}
        # path -> length known durable (set by fdatasync, create, truncate)
        self.synced: dict[Path, int] = {}
        self.fail_after: int | None = None
        self.fail_errno = errno.ENOSPC
        self.writes = 0
        # Renames not yet made durable by an fsync of their directory:
        # destination -> its content before the rename (None: did not exist).
        self.pending_renames: dict[Path, bytes | None] = {}
        # Unlinks not yet made durable by an fsync of their directory: path ->
        # the durable content it had.  A crash may bring each one back, in any
        # combination (POSIX orders nothing between directory operations).
        self.pending_unlinks: dict[Path, bytes] = {}
        # Operations left before the power cut armed by crash_after().
        self._ops_left: int | None = None
        # Writes in place (pwrite) since the file's last sync, in order:
        # path -> [(offset, the bytes they replaced, length written)].  A crash keeps a prefix
        # of them and puts the old bytes back over the rest.
        self.inplace: dict[Path, list[tuple[int, bytes, int]]] = {}

    threads = False

    def crash_after(self, n: int | None) -> None:
        """Cut the power at the ``n+1``-th file operation from now (``n=0``:
        the next one): it raises :class:`PowerCut` instead of running.  Only
        operations that change something count (create, mkdir, write,
        fdatasync, truncate, unlink, replace, fsync_dir).  Follow with
        :meth:`crash` to lose what was not durable.  ``None`` disarms."""
        self._ops_left = n

    def _op(self, what: str) -> None:
        left = self._ops_left
        if left is None:
            return
        if left <= 0:
            self._ops_left = None
            raise PowerCut(what)
        self._ops_left = left - 1

    def _reborn(self, path: Path) -> None:
        # A new file took this name: an earlier unlink of it no longer matters.
        self.pending_unlinks.pop(path, None)

    def mkdir(self, d: Path) -> None:
        self._op("mkdir")
        super().mkdir(d)

    def create(self, path: Path, data: bytes) -> None:
        self._op("create")
        self._reborn(path)
        if self.os_sync:
            super().create(path, data)
        else:
            path.write_bytes(data)
        self.synced[path] = len(data)

    def open_append(self, path: Path) -> int:
        fd = super().open_append(path)
        self._paths[fd] = path
        self.synced.setdefault(path, path.stat().st_size)
        return fd

    def open_new(self, path: Path) -> int:
        self._op("open_new")
        self._reborn(path)
        fd = super().open_new(path)
        self._paths[fd] = path
        self.synced[path] = 0
        # A new name is only durable once its directory is fsynced.
        self.pending_renames.setdefault(path, None)
        return fd

    def write(self, fd: int, data: memoryview | bytes) -> int:
        self._op("write")
        self._maybe_fail(data, lambda part: os.write(fd, part))
        return super().write(fd, data)

    def _maybe_fail(self, data: memoryview | bytes, land: Callable[[bytes], object]) -> None:
        self.writes += 1
        if self.fail_after is not None:
            if self.fail_after <= 0:
                part = bytes(data[: self.rng.randint(0, len(data))])
                if part:
                    land(part)  # some of it lands before the disk gives up
                raise OSError(self.fail_errno, os.strerror(self.fail_errno))
            self.fail_after -= 1

    def open_write(self, path: Path) -> int:
        fd = super().open_write(path)
        self._paths[fd] = path
        self.synced.setdefault(path, path.stat().st_size)
        return fd

    def pwrite(self, fd: int, data: memoryview | bytes, offset: int) -> int:
        self._op("pwrite")
        path = self._paths[fd]

        def land(part: bytes) -> int:
            with open(path, "rb") as f:
                f.seek(offset)
                old = f.read(len(part))
            n = os.pwrite(fd, part, offset)
            self.inplace.setdefault(path, []).append((offset, old[:n], n))
            return n

        self._maybe_fail(data, land)
        return land(bytes(data))

    def preallocate(self, fd: int, size: int) -> bool:
        self._op("preallocate")
        path = self._paths[fd]
        if self.os_sync:
            done = super().preallocate(fd, size)
        else:
            # The model without the kernel's syncs: zeros up to ``size``.
            done = True
            if path.stat().st_size < size:
                os.truncate(path, size)
        self._synced_now(path)
        return done

    def _synced_now(self, path: Path) -> None:
        self.inplace.pop(path, None)
        self.synced[path] = path.stat().st_size

    def fdatasync(self, fd: int) -> None:
        self._op("fdatasync")
        if self.os_sync:
            super().fdatasync(fd)
        self._synced_now(self._paths[fd])

    def dup(self, fd: int) -> int:
        new = super().dup(fd)
        self._paths[new] = self._paths[fd]
        return new

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        super().close(fd)

    def truncate(self, path: Path, size: int) -> None:
        self._op("truncate")
        super().truncate(path, size)
        self.inplace.pop(path, None)
        self.synced[path] = size

    def unlink(self, path: Path) -> None:
        self._op("unlink")
        if path not in self.pending_renames:  # a name never made durable just goes
            durable = self.synced.get(path)
            data = self._durable_image(path)
            self.pending_unlinks[path] = data if durable is None else data[:durable]
        super().unlink(path)
        self.synced.pop(path, None)
        self.inplace.pop(path, None)

    def replace(self, src: Path, dst: Path) -> None:
        self._op("replace")
        self._reborn(dst)
        if dst not in self.pending_renames:
            self.pending_renames[dst] = dst.read_bytes() if dst.exists() else None
        super().replace(src, dst)
        self.synced[dst] = self.synced.pop(src, dst.stat().st_size)
        moved = self.inplace.pop(src, None)
        if moved is not None:
            self.inplace[dst] = moved

    def fsync_dir(self, d: Path) -> None:
        self._op("fsync_dir")
        if self.os_sync:
            super().fsync_dir(d)
        for dst in [p for p in self.pending_renames if p.parent == d]:
            del self.pending_renames[dst]
        for gone in [p for p in self.pending_unlinks if p.parent == d]:
            del self.pending_unlinks[gone]

    def flip_bit(self, path: Path, offset: int, bit: int) -> None:
        """Flip one bit of a file in place, as a failing disk or cable might."""
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes((byte ^ (1 << bit),)))

    def flip_random_bit(self, path: Path) -> int:
        """Flip a random bit anywhere in ``path``; returns its byte offset."""
        size = path.stat().st_size
        offset = self.rng.randrange(size)
        self.flip_bit(path, offset, self.rng.randrange(8))
        return offset

    def _durable_image(self, path: Path) -> bytes:
        """The file as the platter holds it: unsynced writes in place undone."""
        data = bytearray(path.read_bytes())
        for offset, old, n in reversed(self.inplace.get(path, [])):
            data[offset : offset + n] = old + bytes(n - len(old))
        durable = self.synced.get(path)
        return bytes(data if durable is None else data[:durable])

    def _tear_in_place(self, path: Path) -> int:
        """A crash, for the writes in place since ``path``'s last sync: a
        prefix of them lands, cut on a sector boundary (a disk writes a
        sector whole or not at all), and the rest reads back as the bytes it
        replaced (in a preallocated file, zeros)."""
        writes = self.inplace.pop(path)
        if not path.exists():
            return 0
        keep = self.rng.randint(0, sum(n for _, _, n in writes))
        kept_end = 0
        undo: list[tuple[int, bytes, int]] = []  # (from, old bytes from there, length)
        for offset, old, n in writes:
            if keep >= n:
                keep -= n
                kept_end = max(kept_end, offset + n)
                continue
            # The cut inside this write falls on a sector boundary of the
            # file; every later write is lost whole (keep is 0 by then).
            cut = max(offset, (offset + keep) // SECTOR * SECTOR)
            if keep:
                kept_end = max(kept_end, cut)
            undo.append((cut, old[cut - offset :], offset + n - cut))
            keep = 0
        lost = 0
        with open(path, "r+b") as f:
            for start, old, n in reversed(undo):
                f.seek(start)
                f.write(old + bytes(n - len(old)))  # past the old end: zeros, cut below
                lost += n
            # What the lost writes grew past the durable size goes with them.
            size = max(self.synced.get(path, 0), kept_end)
            if f.seek(0, os.SEEK_END) > size:
                f.truncate(size)
        self.synced[path] = path.stat().st_size
        return lost

    def crash(self) -> int:
        """Lose unsynced bytes: each file keeps a random prefix of them.
        Returns how many bytes were lost in all."""
        lost = 0
        for path in list(self.inplace):
            lost += self._tear_in_place(path)
        for path, durable in list(self.synced.items()):
            if not path.exists():
                continue
            size = path.stat().st_size
            if size > durable:
                keep = durable + self.rng.randint(0, size - durable)
                with open(path, "r+b") as f:
                    f.truncate(keep)
                lost += size - keep
                # What survived a power loss is on the platter now.
                self.synced[path] = keep
        # A rename whose directory was never fsynced may not have happened.
        for dst, old in self.pending_renames.items():
            if self.rng.random() < 0.5:
                if old is None:
                    dst.unlink(missing_ok=True)
                    self.synced.pop(dst, None)
                else:
                    dst.write_bytes(old)
                    self.synced[dst] = len(old)
        self.pending_renames.clear()
        # An unlink whose directory was never fsynced may not have happened.
        # (The random draws happen only when there is such an unlink, so a
        # crash after whole operations draws what it always drew.)
        for gone, data in self.pending_unlinks.items():
            if self.rng.random() < 0.5 and not gone.exists():
                gone.write_bytes(data)
                self.synced[gone] = len(data)
        self.pending_unlinks.clear()
        self._paths.clear()
        self.inplace.clear()
        self.fail_after = None
        self._ops_left = None
        return lost
