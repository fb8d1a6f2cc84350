"""Deferred commits of the MVCC store (mvcc/store.py, "Deferred commits").

Batches written with ``defer=True`` stay in one open write transaction until
``settle()``: their thread reads through it, the applied index and the
synced one count only commits, another thread's read, write, flush or copy
has the owner settle first, a full map runs the open batches again, and a
view of the open transaction must be done with before the next write.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from liferaft.kv.mvcc import TO_END, MVCCEntry, MVCCStore, Put, Range
from liferaft.kv.mvcc.store import StoreWriteError

Request = concurrent.futures.Future[None]


class Owner:
    """The thread that owns the open transaction (the event loop's, in a
    node), driven by hand: requests from other threads queue until
    :meth:`serve` settles them, so a test decides when the owner answers."""

    def __init__(self, store: MVCCStore) -> None:
        self.store = store
        self.requests: queue.Queue[Request] = queue.Queue()
        self.index = 0
        #: Puts that have returned (their answers are out).
        self.answered = 0
        store.settle_request = self.request

    def request(self) -> Request:
        f: Request = concurrent.futures.Future()
        self.requests.put(f)
        return f

    def put(self, key: bytes, value: bytes, *, defer: bool = True) -> Any:
        self.index += 1
        out = self.store.apply_batch([MVCCEntry(self.index, Put(key, value))], defer=defer)[0]
        self.answered += 1
        return out

    def serve(self, timeout: float = 10.0) -> None:
        """Answer one request by settling."""
        f = self.requests.get(timeout=timeout)
        f.set_running_or_notify_cancel()
        try:
            self.store.settle()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            f.set_exception(exc)
        else:
            f.set_result(None)


@pytest.fixture
def owner(tmp_path: Path) -> Iterator[Owner]:
    store = MVCCStore(tmp_path / "db")
    yield Owner(store)
    store.close()


def in_thread(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        return pool.submit(fn)
    finally:
        pool.shutdown(wait=False)


def values(store: MVCCStore) -> dict[bytes, bytes]:
    return {kv.key: kv.value for kv in store.range(Range(b"\x00", TO_END)).kvs}


def test_the_owner_reads_its_open_batches_and_only_commits_count(owner: Owner) -> None:
    store = owner.store
    assert owner.put(b"a", b"committed", defer=False).revision == 2
    r = owner.put(b"b", b"open")
    assert r.revision == 3 and owner.put(b"a", b"again").revision == 4
    # The owner's reads see the open batches; the durable contract does not.
    assert values(store) == {b"a": b"again", b"b": b"open"}
    assert store.revision() == 4
    assert store.applied_index() == 1 and store.synced_applied_index() <= 1
    assert store.settle() == 3 and store.applied_index() == 3
    assert store.settle() == 3, "nothing open: a no-op"


def test_another_threads_read_has_the_owner_settle_first(owner: Owner) -> None:
    store = owner.store
    owner.put(b"k", b"v")
    got = in_thread(lambda: values(store))
    owner.serve()
    assert got.result(timeout=10) == {b"k": b"v"}
    assert store.applied_index() == 1
    # Nothing open: another thread reads at once, asking nobody.
    assert in_thread(lambda: values(store)).result(timeout=10) == {b"k": b"v"}
    assert owner.requests.empty()


@pytest.mark.parametrize("what", ["write", "flush", "copy"])
def test_another_threads_write_flush_or_copy_settles_first(
    owner: Owner, tmp_path: Path, what: str
) -> None:
    store = owner.store
    owner.put(b"k", b"open")
    owner.index += 1
    calls: dict[str, Callable[[], Any]] = {
        "write": lambda: store.apply_batch([MVCCEntry(owner.index, Put(b"w", b"worker"))]),
        "flush": store.flush,
        "copy": lambda: store.copy_to(tmp_path / "copy"),
    }
    done = in_thread(calls[what])
    owner.serve()
    done.result(timeout=10)
    assert store.applied_index() == (2 if what == "write" else 1)
    if what == "flush":
        assert store.synced_applied_index() == 1
    if what == "copy":
        copy = MVCCStore(tmp_path / "copy", readonly=True)
        try:
            assert copy.applied_index() == 1 and values(copy) == {b"k": b"open"}
        finally:
            copy.close()


def test_without_a_way_to_ask_another_thread_is_refused(owner: Owner) -> None:
    owner.store.settle_request = None
    owner.put(b"k", b"v")
    with pytest.raises(RuntimeError, match="nothing can ask it to settle"):
        in_thread(lambda: values(owner.store)).result(timeout=10)


def test_a_settle_the_owner_cannot_make_is_an_error_not_a_stale_read(owner: Owner) -> None:
    store = owner.store
    owner.put(b"k", b"v")
    owner.store.settle_request = lambda: _failed(OSError("the loop is gone"))
    with pytest.raises(OSError, match="the loop is gone"):
        in_thread(lambda: values(store)).result(timeout=10)


def _failed(exc: BaseException) -> Request:
    f: Request = concurrent.futures.Future()
    f.set_exception(exc)
    return f


def test_a_view_of_the_open_transaction_must_end_before_the_next_write(owner: Owner) -> None:
    store = owner.store
    owner.put(b"k", b"1")
    with store.read() as view:
        with pytest.raises(RuntimeError, match="read view"):
            owner.put(b"k", b"2")
        with pytest.raises(RuntimeError, match="read view"):
            store.settle()
        kv = view.get(b"k")
        assert kv is not None and kv.value == b"1"
    owner.index -= 1  # the refused write applied nothing
    owner.put(b"k", b"2")
    assert store.settle() == 2 and values(store) == {b"k": b"2"}


def test_only_the_owner_writes_deferred_or_settles(owner: Owner) -> None:
    store = owner.store
    owner.put(b"k", b"v")
    with pytest.raises(RuntimeError, match="does not own"):
        in_thread(store.settle).result(timeout=10)
    with pytest.raises(RuntimeError, match="does not own"):
        in_thread(
            lambda: store.apply_batch([MVCCEntry(9, Put(b"x", b"y"))], defer=True)
        ).result(timeout=10)
    assert store.settle() == 1


def test_a_full_map_runs_the_open_batches_again(tmp_path: Path) -> None:
    """LMDB aborts a transaction whole when the map fills: the batches
    already in the open one (answered, published) must be in the store
    after the settle all the same, with the revisions they were given."""
    store = MVCCStore(tmp_path / "db", map_size=1 << 20)
    try:
        owner = Owner(store)
        revisions = [owner.put(b"k%03d" % i, bytes([i]) * 30_000).revision for i in range(80)]
        assert revisions == list(range(2, 82))
        assert store._env.info()["map_size"] > 1 << 20, "the map grew while batches were open"
        assert store.settle() == 80
        got = values(store)
        assert got == {b"k%03d" % i: bytes([i]) * 30_000 for i in range(80)}
        assert [kv.mod_revision for kv in store.range(Range(b"\x00", TO_END)).kvs] == revisions
    finally:
        store.close()


def test_a_failed_batch_ends_the_open_transaction_whole(owner: Owner) -> None:
    """A batch that raises (the node then stops) aborts the batches before
    it in the open transaction too: the store stays at its last commit,
    and the log, which still holds them, applies them again."""
    store = owner.store
    owner.put(b"a", b"committed", defer=False)
    owner.put(b"b", b"open")
    with pytest.raises(ValueError, match="at or below"):
        store.apply_batch([MVCCEntry(1, Put(b"c", b"stale index"))], defer=True)
    assert store.applied_index() == 1 and values(store) == {b"a": b"committed"}
    assert in_thread(lambda: values(store)).result(timeout=10) == {b"a": b"committed"}
    owner.index = 1
    owner.put(b"b", b"open")  # the replay
    assert store.settle() == 2 and values(store) == {b"a": b"committed", b"b": b"open"}


def test_close_settles(tmp_path: Path) -> None:
    store = MVCCStore(tmp_path / "db")
    Owner(store).put(b"k", b"v")
    store.close()
    again = MVCCStore(tmp_path / "db")
    try:
        assert again.applied_index() == 1 and values(again) == {b"k": b"v"}
    finally:
        again.close()


def test_threads_read_while_the_owner_writes_and_never_see_less(owner: Owner) -> None:
    """Readers in threads, each noting the owner's last write before it
    reads: the read must hold it (a write's answer goes out before its
    commit, so a later read that missed it would be stale)."""
    store = owner.store
    stop = threading.Event()
    seen: list[tuple[int, int]] = []

    def reader() -> None:
        while not stop.is_set():
            before = owner.answered
            got = values(store)
            seen.append((before, len(got)))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(200):
            owner.put(b"k%03d" % i, b"v")
            while not owner.requests.empty():
                owner.serve()
        stop.set()
        for _ in range(100):
            if all(not t.is_alive() for t in threads):
                break
            while not owner.requests.empty():
                owner.serve()
            threading.Event().wait(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert seen and all(n >= before for before, n in seen), "a read missed an applied write"


def test_another_threads_revision_has_the_owner_settle_first(owner: Owner) -> None:
    """``revision()`` is a read too: from another thread, after a write was
    answered from the open transaction, it must not report the last
    commit's (a client would see the revision go back past its own write)."""
    store = owner.store
    assert owner.put(b"k", b"v").revision == 2
    assert store.revision() == 2  # the owner's: through the open transaction
    got = in_thread(store.revision)
    for _ in range(200):  # answer its request, if it makes one
        if got.done():
            break
        with contextlib.suppress(queue.Empty):
            owner.serve(timeout=0.05)
    assert got.result(timeout=10) == 2
    assert store.applied_index() == 1, "settled"


def test_a_map_that_cannot_grow_leaves_the_store_at_its_last_commit(tmp_path: Path) -> None:
    """The map fills while batches are open and cannot grow: the error goes
    up (the node stops) and the store is at its last commit, with nothing
    left open: another thread reads it at once, asking nobody."""
    store = MVCCStore(tmp_path / "db", map_size=1 << 20)
    real = store._env

    class NoGrowth:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def set_mapsize(self, size: int) -> None:
            raise lmdb.Error("mdb_env_set_mapsize: cannot grow")

    try:
        owner = Owner(store)
        owner.put(b"a", b"committed", defer=False)
        store._env = NoGrowth()  # type: ignore[assignment]
        with pytest.raises(StoreWriteError, match="cannot grow"):
            for i in range(80):
                owner.put(b"k%03d" % i, bytes([i]) * 30_000)
        store._env = real
        got = in_thread(lambda: values(store)).result(timeout=5)
        assert got == {b"a": b"committed"} and owner.requests.empty()
        assert store.applied_index() == 1
    finally:
        store._env = real
        store.close()


def _fill(owner: Owner, n: int = 80, *, defer: bool = True) -> None:
    for i in range(n):
        owner.put(b"k%03d" % i, bytes([i]) * 30_000, defer=defer)


@pytest.mark.parametrize("defer", [True, False], ids=["deferred", "committed"])
def test_the_map_grows_only_once_no_read_view_is_open(tmp_path: Path, defer: bool) -> None:
    """LMDB remaps the file to grow it: a read view open in another thread
    at that moment was invalidated (py-lmdb), or crashed the process inside
    LMDB.  The growth now waits for it to end, and it reads on unharmed."""
    store = MVCCStore(tmp_path / "db", map_size=1 << 20)
    try:
        owner = Owner(store)
        owner.put(b"a", b"before", defer=False)
        opened, seen = threading.Event(), []

        def reader() -> None:
            with store.read() as view:
                opened.set()
                threading.Event().wait(0.5)  # the owner fills the map meanwhile
                kv = view.get(b"a")
                seen.append(None if kv is None else kv.value)

        t = threading.Thread(target=reader)
        t.start()
        try:
            assert opened.wait(10)
            _fill(owner, defer=defer)
        finally:
            t.join(timeout=10)
        assert seen == [b"before"]
        store.settle()
        assert len(values(store)) == 81
    finally:
        store.close()


def test_a_read_view_that_stays_open_fails_the_growth_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A view open longer than GROW_WAIT (a checkpoint being streamed, say):
    the batch fails with a clear error (the node stops) and the store stays
    at its last commit; once the view ends, the map grows."""
    from liferaft.kv.mvcc import store as store_mod

    monkeypatch.setattr(store_mod, "GROW_WAIT", 0.3)
    store = MVCCStore(tmp_path / "db", map_size=1 << 20)
    try:
        owner = Owner(store)
        owner.put(b"a", b"committed", defer=False)
        view = in_thread(store.read).result(timeout=10)
        try:
            with pytest.raises(StoreWriteError, match="read view.*stayed open"):
                _fill(owner)
        finally:
            view.close()
        assert store.applied_index() == 1
        owner.index = 1
        _fill(owner)
        assert store.settle() == 81
    finally:
        store.close()


def _until(cond: Callable[[], bool], tries: int = 400) -> bool:
    """Poll ``cond`` a bounded number of times (never a timing assertion)."""
    for _ in range(tries):
        if cond():
            return True
        threading.Event().wait(0.005)
    return False


def test_close_during_a_growth_that_waits_for_a_view_does_not_deadlock(tmp_path: Path) -> None:
    """A batch fills the map while a read view is open in another thread, so
    the growth waits for it; the node stops meanwhile (close()).  close()
    once flushed holding the users' lock: it waited for the writer (the
    growing batch) while the growth, and the view's close, waited for that
    lock: all three stuck for good (GROW_WAIT cannot end a wait that must
    take the lock back)."""
    store = MVCCStore(tmp_path / "db", map_size=1 << 20)
    owner = Owner(store)
    owner.put(b"a", b"committed", defer=False)
    view = store.read()

    def daemon(fn: Callable[[], Any]) -> threading.Thread:
        t = threading.Thread(target=fn, daemon=True)  # a stuck one must not hang the run
        t.start()
        return t

    def fill() -> None:
        # Stopped by the close once the growing batch is in (later ones find
        # the store closed: not what this test is about).
        with contextlib.suppress(Exception):
            _fill(owner, defer=False)

    writer = daemon(fill)
    assert _until(lambda: store._growing), "the growth waits for the view"
    closer = daemon(store.close)
    # The closer takes the users' lock, if it ever holds it across the flush.
    _until(lambda: store._users_lock.locked(), tries=100)
    viewer = daemon(view.close)
    for t in (viewer, writer, closer):
        t.join(timeout=20)
    assert not viewer.is_alive() and not writer.is_alive() and not closer.is_alive(), (
        "deadlocked: close() held the users' lock while waiting for the growing writer"
    )
