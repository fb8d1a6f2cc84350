"""Client sessions (Raft thesis §6.3): a write names its session and sequence
number, a retry returns the first outcome, and a retry whose outcome or whole
session the cluster no longer holds is answered ``session_expired``, never
applied.  The state machine first, then the HTTP API on three in-process
nodes, then the Python client (against a scripted HTTP server where the test
must control each answer)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from aiohttp import web

from liferaft import client as client_mod
from liferaft.client import AsyncClient, SessionExpiredError
from liferaft.kv import state as kvs
from liferaft.kv.state import KV, Delete, KVStore, OpenSession, Put, SessionRef, encode_command
from tests.kv.test_api import Api

# -- the state machine ------------------------------------------------------------------------


class Log:
    """Applies commands to a store at consecutive indices, like the runtime."""

    def __init__(self, store: KVStore | None = None, index: int = 0) -> None:
        self.s = store if store is not None else KVStore()
        self.index = index

    def apply(self, cmd: Put | Delete | OpenSession) -> Any:
        self.index += 1
        return self.s.apply(self.index, encode_command(cmd))

    def open(self) -> int:
        opened = self.apply(OpenSession())
        assert opened.session == self.index  # the session id is its entry's index
        return int(opened.session)


def put(key: str, value: str, sid: int, seq: int, lowest: int, **kw: Any) -> Put:
    return Put(key, value, session=SessionRef(sid, seq, lowest), **kw)


def test_a_retry_whose_outcome_is_held_returns_the_first_outcome_and_applies_once() -> None:
    log = Log()
    me, other = log.open(), log.open()
    first = log.apply(put("x", "mine", me, 1, 1))
    log.apply(put("x", "other", other, 1, 1))
    assert log.apply(put("x", "mine", me, 1, 1)) == first
    assert log.s.get("x") == KV("other", first.revision + 1)
    # A failed precondition is an outcome too, and is returned again.
    lost = log.apply(put("x", "z", me, 2, 1, if_revision=0))
    assert lost.outcome == "precondition_failed"
    log.apply(Delete("x", session=SessionRef(other, 2, 2)))
    assert log.apply(put("x", "z", me, 2, 1, if_revision=0)) == lost
    assert log.s.get("x") is None


@pytest.mark.parametrize("acked", [False, True], ids=["cap", "acknowledged"])
def test_a_retry_whose_outcome_was_evicted_is_session_expired_and_not_applied(
    acked: bool,
) -> None:
    """The dedup_evict reproduction: more than SESSION_OUTCOMES writes of the
    same session resolve after two applied writes, then both are retried.
    Evicted by the cap (the client never says it has the answers) or because
    the client acknowledged them (``lowest_pending`` moved past): either way
    the retry must not apply again."""
    log = Log()
    me, other = log.open(), log.open()
    assert log.apply(put("lock", "me", me, 1, 1, if_revision=0)).outcome == "ok"
    assert log.apply(put("x", "mine", me, 2, 1)).outcome == "ok"
    newer = log.apply(put("x", "other", other, 1, 1))
    for seq in range(3, 3 + kvs.SESSION_OUTCOMES):
        log.apply(put(f"k{seq}", "v", me, seq, seq if acked else 1))
    lock_before = log.s.get("lock")
    retry_lock = log.apply(put("lock", "me", me, 1, 1, if_revision=0))
    retry_x = log.apply(put("x", "mine", me, 2, 1))
    assert retry_lock.outcome == "session_expired"  # not "precondition_failed": unknown
    assert retry_x.outcome == "session_expired"
    assert log.s.get("x") == KV("other", newer.revision)
    assert log.s.get("lock") == lock_before


def test_a_retry_in_an_evicted_session_is_session_expired_and_not_applied() -> None:
    log = Log()
    me = log.open()
    first = log.apply(put("x", "mine", me, 1, 1))
    log.apply(Put("x", "newer"))  # a plain write, no session
    for _ in range(kvs.MAX_SESSIONS):  # the least recently used session goes first
        log.open()
    assert me not in log.s.sessions
    assert log.apply(put("x", "mine", me, 1, 1)).outcome == "session_expired"
    assert log.apply(put("y", "new", me, 2, 2)).outcome == "session_expired"
    assert log.s.get("x") == KV("newer", first.revision + 1) and log.s.get("y") is None


def test_sessions_are_evicted_by_last_committed_use() -> None:
    log = Log()
    old = log.open()
    log.apply(put("k", "v", old, 1, 1))
    rest = [log.open() for _ in range(kvs.MAX_SESSIONS - 1)]
    log.apply(put("k", "w", old, 2, 2))  # `old` is now the most recently used
    log.open()
    assert old in log.s.sessions and rest[0] not in log.s.sessions


def test_a_session_id_that_was_never_opened_is_session_expired() -> None:
    """A session is live only if its OpenSession entry created it, so any
    other id is provably not live: never applied."""
    log = Log()
    log.apply(Put("a", "1"))
    for sid in (1, 2, 10**9):
        assert log.apply(put("a", "2", sid, 1, 1)).outcome == "session_expired"
    assert log.s.get("a") == KV("1", 1)


def test_an_acknowledged_outcome_below_the_lowest_pending_is_discarded() -> None:
    log = Log()
    me = log.open()
    log.apply(put("a", "1", me, 1, 1))
    log.apply(put("b", "1", me, 3, 1))  # 2 is still pending
    log.apply(put("c", "1", me, 4, 2))  # the client has 1's answer
    assert sorted(log.s.sessions[me].outcomes) == [3, 4]
    # 2 arrives late: not seen, not below what is kept: applied once.
    assert log.apply(put("d", "1", me, 2, 2)).outcome == "ok"
    assert log.apply(put("d", "1", me, 2, 2)).outcome == "ok"  # its retry: held
    assert log.s.get("d") == KV("1", log.index - 1)


def test_writes_without_a_session_are_plain_writes() -> None:
    log = Log()
    log.apply(Put("k", "a"))
    log.apply(Put("k", "a"))
    assert log.s.get("k") == KV("a", 2)  # applied twice: no dedup without a session


def test_session_state_is_in_the_snapshot_and_replays_alike() -> None:
    log = Log()
    a, b = log.open(), log.open()
    for seq in range(1, 5):
        log.apply(put(f"k{seq}", "v", a, seq, 2))
    log.apply(put("x", "1", b, 1, 1))
    snap = log.s.snapshot()
    t = KVStore()
    t.restore(list(snap.chunks()))
    snap.release()
    twin = Log(t, log.index)
    assert list(t.sessions) == list(log.s.sessions)  # the LRU order too
    for cmd in (
        put("k1", "again", a, 1, 2),  # discarded: expired
        put("k3", "again", a, 3, 2),  # held: first outcome
        put("y", "new", a, 9, 3),  # new: applied
        put("x", "again", 12345, 1, 1),  # never opened
        OpenSession(),
    ):
        assert log.apply(cmd) == twin.apply(cmd)
    assert dict(log.s.data) == dict(t.data)


def test_a_version_1_snapshot_still_loads_with_its_request_ids() -> None:
    """Before sessions, snapshots (version 1) held request_id outcomes; they
    still load, and those outcomes still answer retries from the old log."""
    head = msgspec.msgpack.encode(
        {
            "revision": 7,
            "clients": [["c", [["c:1", {"outcome": "ok", "revision": 7}]]]],
            "addrs": {"n1": "127.0.0.1:8001"},
        }
    )
    items = msgspec.msgpack.encode([["k", "v", 7]])
    blob = (
        b"LRKV\x01"
        + len(head).to_bytes(4, "little")
        + head
        + len(items).to_bytes(4, "little")
        + items
    )
    s = KVStore()
    s.restore([blob])
    assert s.get("k") == KV("v", 7) and s.addrs == {"n1": "127.0.0.1:8001"} and not s.sessions
    again = s.apply(8, encode_command(Put("k", "other", request_id="c:1")))
    assert again.outcome == "ok" and again.revision == 7 and s.get("k") == KV("v", 7)


def test_a_snapshot_of_an_unknown_version_is_refused_naming_both() -> None:
    with pytest.raises(kvs.SnapshotFormatError, match=r"version 9.*1 and 2"):
        KVStore().restore([b"LRKV\x09" + b"\x00" * 8])


def test_apply_never_raises_on_odd_session_fields() -> None:
    """Committed entries are trusted data: numbers the API would refuse
    (seq 0, lowest above seq) are answered, not raised."""
    log = Log()
    me = log.open()
    assert log.apply(put("a", "1", me, 0, 0)).outcome == "session_expired"
    r = log.apply(put("a", "1", me, 5, 9))  # lowest clamps to seq
    assert r.outcome == "ok"
    assert log.apply(put("a", "1", me, 5, 9)) == r


def test_a_seq_reused_for_a_different_request_is_refused_not_answered_as_the_first() -> None:
    """Two clients sharing a session (or a client that reuses a seq) send a
    different write under a held seq: answering it with the first write's
    outcome would tell its sender "applied" for a write that never was.  It
    is refused, changes nothing, and a true retry (any lowest_pending) still
    gets the first outcome."""
    log = Log()
    me = log.open()
    first = log.apply(put("a", "mine", me, 1, 1))
    for other in (put("b", "theirs", me, 1, 1), put("a", "theirs", me, 1, 1)):
        r = log.apply(other)
        assert r.outcome == "seq_reused" and r != first
    r = log.apply(Delete("a", session=SessionRef(me, 1, 1)))
    assert r.outcome == "seq_reused"
    assert log.s.get("a") == KV("mine", first.revision) and log.s.get("b") is None
    assert log.apply(put("a", "mine", me, 1, 1)) == first
    log.apply(put("c", "x", me, 2, 1))
    assert log.apply(put("a", "mine", me, 1, 1)) == first
    # It holds across a snapshot, on a replica that restores it.
    replica = KVStore()
    replica.restore(log.s.snapshot().chunks())
    assert Log(replica, log.index).apply(put("b", "theirs", me, 1, 1)).outcome == "seq_reused"


# -- the HTTP API -----------------------------------------------------------------------------


async def open_session(api: Api, nid: str) -> int:
    st, body, _ = await api.call(nid, "POST", "/v1/sessions", {})
    assert st == 200 and isinstance(body["session"], int), body
    return int(body["session"])


def w(value: str, sid: int, seq: int, lowest: int, **kw: Any) -> dict[str, Any]:
    return {"value": value, "session": sid, "seq": seq, "lowest_pending": lowest, **kw}


async def test_http_a_retry_through_another_node_returns_the_first_outcome(api: Api) -> None:
    ld, f = await api.leader_id(), await api.follower_id()
    sid = await open_session(api, f)
    st, first, _ = await api.call(ld, "PUT", "/v1/kv/r", w("a", sid, 1, 1))
    await api.call(ld, "PUT", "/v1/kv/r", {"value": "b"})
    st2, again, _ = await api.call(f, "PUT", "/v1/kv/r", w("a", sid, 1, 1))
    assert (st, st2) == (200, 200) and again == first
    _, got, _ = await api.call(ld, "GET", "/v1/kv/r")
    assert got["value"] == "b"  # the retry did not write "a" again


async def test_http_a_retry_of_a_forgotten_outcome_is_504_session_expired(api: Api) -> None:
    ld = await api.leader_id()
    sid = await open_session(api, ld)
    st, _, _ = await api.call(ld, "PUT", "/v1/kv/x", w("mine", sid, 1, 1))
    assert st == 200
    st, newer, _ = await api.call(ld, "PUT", "/v1/kv/x", {"value": "newer"})
    assert st == 200
    # Write 2 says the client has write 1's answer: its outcome is dropped.
    st, _, _ = await api.call(ld, "PUT", "/v1/kv/y", w("v", sid, 2, 2))
    assert st == 200
    st, body, _ = await api.call(ld, "PUT", "/v1/kv/x", w("mine", sid, 1, 1))
    assert st == 504 and body["error"] == "session_expired" and body["message"]
    st, body, _ = await api.call(ld, "DELETE", "/v1/kv/x", {"session": sid, "seq": 1,
                                                             "lowest_pending": 1})
    assert st == 504 and body["error"] == "session_expired"
    _, got, _ = await api.call(ld, "GET", "/v1/kv/x")
    assert (got["value"], got["revision"]) == ("newer", newer["revision"])


async def test_http_a_write_in_a_session_that_is_not_live_is_504_and_not_applied(
    api: Api,
) -> None:
    f = await api.follower_id()
    st, body, _ = await api.call(f, "PUT", "/v1/kv/k", w("v", 10**9, 1, 1))
    assert st == 504 and body["error"] == "session_expired"
    st, _, _ = await api.call(f, "GET", "/v1/kv/k")
    assert st == 404


@pytest.mark.parametrize(
    "body",
    [
        {"value": "v", "request_id": "c:1"},  # retired: it could not tell forgotten from new
        {"value": "v", "session": 5},  # session fields come together
        {"value": "v", "session": 5, "seq": 1},
        {"value": "v", "seq": 1, "lowest_pending": 1},
        {"value": "v", "session": 5, "seq": 0, "lowest_pending": 0},
        {"value": "v", "session": 5, "seq": 2, "lowest_pending": 3},
        {"value": "v", "session": 0, "seq": 1, "lowest_pending": 1},
        {"value": "v", "session": 5, "seq": 2**64, "lowest_pending": 1},
    ],
)
async def test_http_bad_session_fields_are_400_and_propose_nothing(
    api: Api, body: dict[str, Any]
) -> None:
    ld = await api.leader_id()
    before = api.c.nodes[ld].status().last_log_index
    st, data, _ = await api.call(ld, "PUT", "/v1/kv/k", body)
    assert st == 400 and data["error"] == "bad_request" and data["message"], data
    assert api.c.nodes[ld].status().last_log_index == before


async def test_http_request_id_refusal_names_the_replacement(api: Api) -> None:
    ld = await api.leader_id()
    st, data, _ = await api.call(ld, "PUT", "/v1/kv/k", {"value": "v", "request_id": "c:1"})
    assert st == 400 and "session" in data["message"]


async def test_http_opening_a_session_takes_no_fields(api: Api) -> None:
    f = await api.follower_id()
    for raw in (b"", b" { } "):
        st, body, _ = await api.call(f, "POST", "/v1/sessions", raw=raw)
        assert st == 200 and body["session"] > 0, body
    st, body, _ = await api.call(f, "POST", "/v1/sessions", {"ttl": 5})
    assert st == 400 and body["error"] == "bad_request"


# -- the Python client against a scripted server -----------------------------------------------


Handler = Callable[[dict[str, Any]], Awaitable[web.Response]]


class Scripted:
    """An HTTP server that plays the cluster: it opens sessions (ids 1, 2,
    ...) and hands every PUT to ``on_put``; it records every request."""

    def __init__(self, on_put: Handler) -> None:
        self.on_put = on_put
        self.puts: list[dict[str, Any]] = []
        self.opened = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.runner: web.AppRunner | None = None
        self.addr = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/status", self._status)
        app.router.add_post("/v1/sessions", self._open)
        app.router.add_put("/v1/kv/{key:.+}", self._put)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)  # the OS picks a free port
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.addr = f"127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({"leader_client_addr": self.addr})

    async def _open(self, request: web.Request) -> web.Response:
        self.opened += 1
        return web.json_response({"session": self.opened})

    async def _put(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.puts.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self.on_put(body)
        finally:
            self.in_flight -= 1


def ok() -> web.Response:
    return web.json_response({"revision": 1, "prev": None})


def expired() -> web.Response:
    return web.json_response({"error": "session_expired", "message": "gone"}, status=504)


def timeout() -> web.Response:
    return web.json_response({"error": "timeout", "message": "unknown"}, status=504)


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Handler], Awaitable[Scripted]]]:
    servers: list[Scripted] = []

    async def make(on_put: Handler) -> Scripted:
        s = Scripted(on_put)
        servers.append(s)
        await s.start()
        return s

    try:
        yield make
    finally:
        for s in servers:
            await s.stop()


def test_the_client_window_is_what_the_server_keeps_per_session() -> None:
    assert client_mod.SESSION_WINDOW == kvs.SESSION_OUTCOMES


async def test_concurrent_tasks_never_have_more_unresolved_writes_than_a_session_keeps(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    """Tasks of one AsyncClient share its session.  While its first write
    hangs unresolved, the others complete, but no more than the outcomes the
    cluster keeps per session are ever sent past it: otherwise the first
    write's outcome could be evicted while its task may still retry it."""
    cap = kvs.SESSION_OUTCOMES
    release = asyncio.Event()
    held: list[dict[str, Any]] = []

    async def on_put(body: dict[str, Any]) -> web.Response:
        if not held:
            held.append(body)
            await release.wait()
        return ok()

    srv = await scripted(on_put)
    tasks_n = cap + 44
    async with AsyncClient(srv.addr, timeout=20) as c:
        tasks = [asyncio.create_task(c.put(f"k{i}", "v")) for i in range(tasks_n)]
        for _ in range(500):  # bounded: until the window is full (or overfull)
            if len(srv.puts) >= cap:
                break
            await asyncio.sleep(0.01)
        for _ in range(20):  # and give any write past the window its chance to arrive
            await asyncio.sleep(0.01)
        sent_while_held = len(srv.puts)
        release.set()
        await asyncio.gather(*tasks)
    assert sent_while_held == cap  # the held write and cap - 1 after it
    assert srv.opened == 1 and {p["session"] for p in srv.puts} == {1}
    assert sorted(p["seq"] for p in srv.puts) == list(range(1, tasks_n + 1))
    for p in srv.puts:  # the server can always keep every outcome the client may retry
        assert p["lowest_pending"] <= p["seq"] < p["lowest_pending"] + cap, p


async def test_a_write_refused_as_expired_on_its_first_attempt_reopens_the_session(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    """session_expired for a write that was sent once means it was not
    applied: the client opens a new session and sends it there."""

    async def on_put(body: dict[str, Any]) -> web.Response:
        return expired() if body["session"] == 1 else ok()

    srv = await scripted(on_put)
    async with AsyncClient(srv.addr, timeout=5) as c:
        await c.put("k", "v")
    assert [(p["session"], p["seq"]) for p in srv.puts] == [(1, 1), (2, 1)]


async def test_a_retry_answered_expired_after_an_unknown_outcome_raises_session_expired(
    scripted: Callable[[Handler], Awaitable[Scripted]],
) -> None:
    """After a 504 timeout the first attempt may have applied; if the retry
    finds the session forgotten, the outcome stays unknown: SessionExpiredError
    (a ClientTimeoutError), and the write is not sent again under another session."""
    answers = [timeout(), expired()]

    async def on_put(body: dict[str, Any]) -> web.Response:
        return answers.pop(0) if answers else ok()

    srv = await scripted(on_put)
    async with AsyncClient(srv.addr, timeout=5) as c:
        with pytest.raises(SessionExpiredError) as e:
            await c.put("k", "v")
    assert e.value.status == 504 and e.value.code == "session_expired"
    assert [(p["session"], p["seq"]) for p in srv.puts] == [(1, 1), (1, 1)]


async def test_the_client_reopens_a_session_the_cluster_evicted(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the cluster forgets the client's session (one session
    kept); the client's next write is refused unapplied, reopened, applied
    once."""
    monkeypatch.setattr(kvs, "MAX_SESSIONS", 1)
    ld = await api.leader_id()
    eps = ",".join(u.removeprefix("http://") for u in api.urls.values())
    async with AsyncClient(eps, timeout=5) as c:
        await c.put("k", "1")
        first = c.session_id
        await open_session(api, ld)  # evicts the client's session on every node
        r = await c.put("k", "2")
        assert c.session_id not in (None, first)
    _, got, _ = await api.call(ld, "GET", "/v1/kv/k")
    assert (got["value"], got["revision"]) == ("2", r.revision)


async def test_http_a_different_write_under_a_held_seq_is_409_seq_reused(api: Api) -> None:
    ld = await api.leader_id()
    sid = await open_session(api, ld)
    st, _, _ = await api.call(ld, "PUT", "/v1/kv/a", w("mine", sid, 1, 1))
    assert st == 200
    st, body, _ = await api.call(ld, "PUT", "/v1/kv/b", w("theirs", sid, 1, 1))
    assert st == 409 and body["error"] == "seq_reused", body
    st, _, _ = await api.call(ld, "GET", "/v1/kv/b")
    assert st == 404
