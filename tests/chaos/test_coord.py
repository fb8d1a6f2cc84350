"""The soak's coordination recording, without processes: how answers become
the revisioned history, how NDJSON lines become a watch stream, how gone
times merge into lease records, and when the nemesis opens a leaderless
interval.  (The soak itself runs in tests/chaos/test_soak_short.py.)"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from liferaft.chaos import nemesis as nemesis_mod
from liferaft.chaos.api import HttpApi
from liferaft.chaos.coord import LeaseHolder, RevLog, lease_gone, lease_records
from liferaft.chaos.streams import Watcher
from liferaft.verify import LeaseRecord, check_revisions, check_watches
from liferaft.verify.leases import KeyGone
from liferaft.verify.rev_history import get, put


def test_answers_become_ok_fail_or_info_by_the_contract() -> None:
    log = RevLog()
    ok = log.write(1, 1.0, 200, {"revision": 7, "prev": None}, "put", **put("a", "v1"))
    fail = log.write(1, 2.0, 503, {"error": "no_leader"}, "put", **put("a", "v2"))
    info = log.write(1, 3.0, 504, {"error": "timeout"}, "put", **put("a", "v3"))
    odd = log.write(1, 4.0, 418, {"error": "teapot"}, "put", **put("a", "v4"))
    assert ok is not None and ok.status == "ok" and ok.revision == 7
    assert fail is not None and fail.status == "fail"
    assert info is not None and info.status == "info" and info.ret is None
    assert odd is not None and odd.status == "info"
    assert list(log.unexpected) == ["put 418 {'error': 'teapot'}"]
    log.read(1, 5.0, 200, {"revision": 9, "items": []}, "read", **get("a"))
    log.read(1, 6.0, 503, {}, "read", **get("a"))  # no answer to place: not recorded
    assert [o.status for o in log.history] == ["ok", "fail", "info", "info", "ok"]
    # The recorded shapes are the checker's: a read of "a" as absent at
    # revision 1, where the acknowledged put made it, is a violation.
    log = RevLog()
    log.write(1, 1.0, 200, {"revision": 1}, "put", **put("a", "v1"))
    log.read(1, 2.0, 200, {"revision": 1, "items": []}, "read", **get("a"))
    assert "read a as absent at revision 1" in check_revisions(log.history).violations[0]


def test_lease_gone_is_the_lease_not_found_code_only() -> None:
    assert not lease_gone(400, {"error": "lease_not_found"})  # 404 since the fix
    assert lease_gone(404, {"error": "lease_not_found"})
    assert not lease_gone(404, {"error": "not_found"})
    assert not lease_gone(503, {"error": "lease_not_found"})


def _watcher() -> Watcher:
    return Watcher(None, 1, "x/", random.Random(1))  # type: ignore[arg-type]


def test_ndjson_lines_become_one_stream_across_a_resume() -> None:
    w = _watcher()
    w.line({"created": True, "start_revision": 5, "revision": 4})
    w.line({"revision": 5, "events": [
        {"type": "put", "kv": {"key": "x/a", "value": "1", "revision": 5}},
        {"type": "put", "kv": {"key": "x/b", "value": "2", "revision": 5},
         "prev_kv": {"key": "x/b", "value": "0", "revision": 3}}]})  # fmt: skip
    w.line({"progress": 8})
    url = HttpApi(_FakeCluster("n1")).watch_url("n1", w.key, w.prefix, w.prev_kv, w.last + 1)  # type: ignore[arg-type]
    assert w.last == 8 and "start_revision=9" in url
    w.line({"error": "cut_off", "resume_revision": 9})
    w.line({"created": True, "start_revision": 9, "revision": 9})  # the resume's head
    w.line({"revision": 9, "events": [{"type": "delete", "kv": {"key": "x/a", "value": "",
                                                                "revision": 9}}]})  # fmt: skip
    s = w.stream()
    assert s.start_revision == 5 and s.progress == 8 and s.end == "x0"
    assert [(e.revision, e.kind, e.key, e.value, e.prev_value) for e in s.events] == [
        (5, "put", "x/a", "1", None), (5, "put", "x/b", "2", "0"), (9, "delete", "x/a", None, None)]
    assert list(w.deleted) == ["x/a"] and w.errors == [": cut_off"] and not w.ended
    w.line({"error": "compacted", "compact_revision": 20})
    assert w.ended.startswith("compacted at 20")


def test_a_stream_that_skipped_a_revision_is_a_gap_for_the_checker() -> None:
    log = RevLog()
    for i, rev in enumerate((5, 6, 7)):
        log.write(1, float(i), 200, {"revision": rev}, "put", **put(f"x/{i}", f"v{i}"))
    w = _watcher()
    w.line({"created": True, "start_revision": 5, "revision": 4})
    for rev in (5, 7):  # 6 never came
        i = rev - 5
        w.line({"revision": rev, "events": [
            {"type": "put", "kv": {"key": f"x/{i}", "value": f"v{i}", "revision": rev}}]})
    rep = check_revisions(log.history)
    assert rep.ok
    assert check_watches([w.stream()], rep.changes).gaps == 1


def test_a_key_seen_gone_by_a_watcher_counts_at_the_earliest_time() -> None:
    h = LeaseHolder(None, RevLog(), 1, random.Random(1))  # type: ignore[arg-type]
    h.attached = {"l/a": 9, "l/b": 9, "l/c": 10}
    h.records = [LeaseRecord(9, 3.0, (0.0, 0.1), gone=(KeyGone("l/a", 5.0),))]
    recs = lease_records([h], {"l/a": 4.0, "l/b": 6.0, "l/c": 1.0})
    assert recs[0].gone == (KeyGone("l/a", 4.0), KeyGone("l/b", 6.0))  # l/c is lease 10's


@dataclass
class _M:
    alive: bool = True
    stopped: bool = False
    client: str = "127.0.0.1:1"


@dataclass
class _FakeCluster:
    """The little of ChaosCluster the kill fault uses; ``leader_is`` leads."""

    leader_is: str
    members: dict[str, _M] = field(default_factory=lambda: {n: _M() for n in ("n1", "n2", "n3")})
    killed: list[str] = field(default_factory=list)

    async def leader(self, timeout: float = 0) -> str:
        return self.leader_is

    def kill(self, nid: str) -> None:
        self.killed.append(nid)

    def restart(self, nid: str) -> None:
        pass


@pytest.mark.parametrize("seed", range(6))
def test_a_kill_opens_a_leaderless_interval_only_when_it_hits_the_leader(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def sleep(stop: asyncio.Event, seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:  # the first is run()'s wait before the fault; then one fault
            stop.set()

    monkeypatch.setattr(nemesis_mod, "_sleep", sleep)
    c = _FakeCluster("n2")
    nem = nemesis_mod.Nemesis(c, ["kill"], random.Random(seed))  # type: ignore[arg-type]
    asyncio.run(nem.run(asyncio.Event()))
    assert len(c.killed) == 1, "one fault ran"
    assert len(nem.leaderless) == (1 if c.killed == ["n2"] else 0)
    assert all(s <= e < float("inf") for s, e in nem.leaderless)
