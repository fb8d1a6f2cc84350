"""Automatic compaction (liferaft/kv/compactor.py; docs/kv.md, "Compaction
and retention"): the flags' parsing, etcd's periodic and revision rules on an
injected clock, leader-only proposals, and one cluster where history below
the retention is compacted on every replica."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from liferaft.cli import main
from liferaft.kv.compactor import CompactionPolicy, Compactor, parse_policy
from liferaft.kv.errors import KVUnavailableError
from liferaft.kv.mvcc.ops import CompactedError
from liferaft.kv.serve import ServeOptions
from tests.kv.coord import put
from tests.kv.test_api import Api


@pytest.mark.parametrize(
    "mode,text,want",
    [
        ("periodic", "1h", CompactionPolicy("periodic", 3600)),
        ("periodic", "30m", CompactionPolicy("periodic", 1800)),
        ("periodic", "90s", CompactionPolicy("periodic", 90)),
        ("periodic", "1h30m", CompactionPolicy("periodic", 5400)),
        ("periodic", "2", CompactionPolicy("periodic", 7200)),  # a bare number: hours (etcd)
        ("periodic", "off", CompactionPolicy("periodic", 0)),
        ("periodic", "0", CompactionPolicy("periodic", 0)),
        ("revision", "1000", CompactionPolicy("revision", 1000)),
        ("revision", "0", CompactionPolicy("revision", 0)),
    ],
)
def test_the_retention_flag_reads_as_etcd_does(mode: str, text: str, want: Any) -> None:
    got = parse_policy(mode, text)
    assert got == want and got.enabled is (want.retention > 0)


@pytest.mark.parametrize(
    "mode,text", [("periodic", "1x"), ("periodic", "h"), ("periodic", "0.1s"),
                  ("periodic", "-1h"), ("revision", "1h"), ("revision", "-5"), ("hourly", "1h")],
)  # fmt: skip
def test_a_bad_retention_is_a_one_line_error(mode: str, text: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_policy(mode, text)
    assert "\n" not in str(e.value) and "auto-compaction" in str(e.value)


def run_serve(captured: list[ServeOptions], tmp: Path, *args: str, env: Any = None) -> Any:
    base = ["serve", "--id", "n1", "--data-dir", str(tmp), "--peer-addr", "127.0.0.1:7001",
            "--client-addr", "127.0.0.1:8001"]  # fmt: skip
    return CliRunner().invoke(main, [*base, *args], env=env, auto_envvar_prefix="LIFERAFT")


def test_flags_environment_and_config_file_set_the_policy(
    captured: list[ServeOptions], tmp_path: Path
) -> None:
    r = run_serve(captured, tmp_path)
    assert r.exit_code == 0, r.output
    assert captured[-1].compaction == CompactionPolicy("periodic", 3600)  # the default: 1h
    r = run_serve(captured, tmp_path, "--auto-compaction-mode", "revision",
                  "--auto-compaction-retention", "500")  # fmt: skip
    assert captured[-1].compaction == CompactionPolicy("revision", 500)
    r = run_serve(captured, tmp_path, env={"LIFERAFT_SERVE_AUTO_COMPACTION_RETENTION": "off"})
    assert r.exit_code == 0 and not captured[-1].compaction.enabled
    cfg = tmp_path / "c.toml"
    cfg.write_text('auto-compaction-mode = "periodic"\nauto-compaction-retention = "30m"\n')
    r = run_serve(captured, tmp_path, "--config", str(cfg))
    assert r.exit_code == 0 and captured[-1].compaction == CompactionPolicy("periodic", 1800)
    n = len(captured)
    r = run_serve(captured, tmp_path, "--auto-compaction-mode", "revision",
                  "--auto-compaction-retention", "1h")  # fmt: skip
    assert r.exit_code == 2 and len(captured) == n
    assert "revision mode is a count of revisions" in r.output


class Fake:
    """A store revision, a clock and a leadership the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0
        self.rev = 1
        self.compacted = 0
        self.leader = True
        self.calls: list[int] = []
        self.fail: Exception | None = None

    async def compact(self, rev: int) -> None:
        self.calls.append(rev)
        if self.fail is not None:
            raise self.fail
        self.compacted = rev

    def compactor(self, policy: CompactionPolicy, **kw: Any) -> Compactor:
        return Compactor(policy, revision=lambda: self.rev,
                         compact_revision=lambda: self.compacted,
                         is_leader=lambda: self.leader, compact=self.compact,
                         clock=lambda: self.now, **kw)  # fmt: skip


async def test_periodic_keeps_the_retention_and_compacts_every_step() -> None:
    f = Fake()
    c = f.compactor(CompactionPolicy("periodic", 100.0))  # samples every 10 s
    assert c.interval == 10
    samples: dict[float, int] = {}
    for _ in range(31):  # 10 writes per 10 s, up to 300 s
        samples[f.now] = f.rev
        await c.check()
        f.now += 10
        f.rev += 10
    # Nothing before 100 s; then at the revision of 100 s before, every 100 s.
    assert f.calls == [samples[0.0], samples[100.0], samples[200.0]]
    # Nothing younger than the retention was ever compacted away.
    assert all(rev <= samples[t] for t, rev in zip((100.0, 200.0, 300.0), f.calls, strict=False))


async def test_periodic_over_an_hour_compacts_hourly_at_the_revision_of_the_retention_ago() -> None:
    f = Fake()
    c = f.compactor(CompactionPolicy("periodic", 3 * 3600.0))
    assert c.interval == 360  # an hour / 10
    at: dict[float, int] = {}
    while f.now <= 5 * 3600:
        at[f.now] = f.rev
        await c.check()
        f.now += 360
        f.rev += 1
    assert f.calls == [at[0.0], at[3600.0], at[7200.0]]  # at 3 h, 4 h, 5 h


async def test_revision_mode_keeps_the_last_n_revisions() -> None:
    f = Fake()
    c = f.compactor(CompactionPolicy("revision", 50, revision_check=1.0))
    f.rev = 40
    assert await c.check() is None  # fewer than N revisions: nothing
    f.rev = 130
    assert await c.check() == 80
    assert await c.check() is None  # already there
    f.rev = 131
    assert await c.check() == 81 and f.calls == [80, 81]


async def test_only_the_leader_proposes_and_a_failure_is_retried() -> None:
    f = Fake()
    c = f.compactor(CompactionPolicy("revision", 10, revision_check=1.0))
    f.rev, f.leader = 100, False
    assert await c.check() is None and f.calls == []
    f.leader = True
    f.fail = KVUnavailableError("no_leader", "no leader")
    assert await c.check() is None and f.calls == [90]
    f.fail = CompactedError(90, 95)  # someone compacted past it: done
    assert await c.check() == 90
    f.fail = None
    assert await c.check() == 90 and f.compacted == 90


@pytest.mark.parametrize("mode", ["periodic", "revision"])
async def test_a_disabled_policy_never_runs(mode: Any) -> None:
    f = Fake()
    c = f.compactor(CompactionPolicy(mode, 0, revision_check=0.01))
    f.rev = 1000
    await asyncio.wait_for(c.run(), 1)  # returns at once
    f.now += 1e6
    assert await c.check() is None and f.calls == []


async def test_a_cluster_compacts_itself_and_reads_below_get_compacted(tmp_path: Path) -> None:
    # Checked often (the default is etcd's 5 minutes).
    policy = CompactionPolicy("revision", 5, revision_check=0.05)
    api = Api(tmp_path, timeout=2.0, compaction=policy)
    await api.start()
    try:
        ld = await api.leader_id()
        first = await put(api, ld, "ac/k", "0")
        last = first
        for i in range(1, 12):
            last = await put(api, ld, "ac/k", str(i))
        for nid in api.c.ids:  # every replica compacts, no further than N back
            for _ in range(200):
                if api.c.sms[nid].compact_revision() >= last - 5:
                    break
                await asyncio.sleep(0.02)
            assert last - 5 <= api.c.sms[nid].compact_revision() <= last
        st, body, _ = await api.call(ld, "GET", f"/v1/kv/ac/k?revision={first}")
        assert st == 400 and body["error"] == "compacted"
        st, body, _ = await api.call(ld, "GET", f"/v1/kv/ac/k?revision={last}")
        assert st == 200 and body["value"] == "11"
    finally:
        await api.stop()
