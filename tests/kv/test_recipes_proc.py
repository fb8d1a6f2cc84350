"""Lock and Election through real ``liferaft serve`` processes: the holder
is a child process that is killed (SIGKILL), and the next contender (this
process) takes over once the cluster expires the dead holder's lease.  The
tests print the measured hand-over; docs/kv.md, "Locks and elections", gives
the expectation: the lease's TTL, plus up to an election if the leader died
too (it does not here).  One cluster serves the module."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from liferaft.client import AsyncClient, Election, Lock
from tests.kv.procs import ProcCluster, proc_cluster

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0  # seconds for a hand-over, far above TTL + an election


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    with proc_cluster(tmp_path_factory.mktemp("recipes")) as c:
        c.start_cluster(3)
        yield c


@pytest.fixture
async def client(cluster: ProcCluster) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(cluster.endpoints(), timeout=10) as c:
        yield c


async def start_holder(*args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    """A child holding the lock (or leading); its announcement's words."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.kv.recipe_child", *args,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    assert line, "the holder exited before it held"
    return proc, line.decode().split()


async def kill_then_wait(proc: asyncio.subprocess.Process, waiting: asyncio.Task[None]) -> float:
    """Kill the holder (SIGKILL); the seconds until ``waiting`` (the next
    contender) got through, within :data:`DEADLINE`."""
    killed = time.monotonic()
    proc.kill()
    await proc.wait()
    async with asyncio.timeout(DEADLINE):
        await waiting
    return time.monotonic() - killed


async def end(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_a_lock_passes_on_when_its_holder_is_killed(
    cluster: ProcCluster, client: AsyncClient
) -> None:
    proc, words = await start_holder("lock", cluster.endpoints(), "locks/job", "1")
    try:
        assert words[0] == "HELD"
        ttl = int(words[2])  # the TTL granted (the cluster raises it to its minimum)
        mine = Lock(client, "locks/job", ttl=1)
        waiting = asyncio.create_task(mine.acquire())
        # While the holder lives and keeps its lease alive, nobody else holds it.
        await asyncio.sleep(2 * ttl + 0.5)
        assert not waiting.done(), "the lock was taken while its holder lived"
        took = await kill_then_wait(proc, waiting)
        print(f"lock hand-over after kill -9: {took:.2f} s (lease TTL {ttl} s)")
        assert mine.lease is not None and not mine.lost.is_set()
        # Ours is now the only key under the lock's name, and release frees it.
        page = await client.range(prefix="locks/job/")
        assert [i.key for i in page.items] == [mine.key]
        await mine.release()
        assert (await client.range(prefix="locks/job/")).items == []
    finally:
        await end(proc)


async def test_leadership_passes_on_when_the_leader_is_killed(
    cluster: ProcCluster, client: AsyncClient
) -> None:
    proc, words = await start_holder("elect", cluster.endpoints(), "elect/svc", "1", "child")
    try:
        assert words[0] == "LEADER"
        ttl = int(words[2])
        me = Election(client, "elect/svc", ttl=1)
        assert await me.leader() == "child"
        seen: list[str] = []

        async def observe() -> None:
            async for v in me.observe():
                seen.append(v)
                if v == "me":
                    return

        watching = asyncio.create_task(observe())
        campaign = asyncio.create_task(me.campaign("me"))
        await asyncio.sleep(2 * ttl + 0.5)
        assert not campaign.done() and await me.leader() == "child"
        took = await kill_then_wait(proc, campaign)
        async with asyncio.timeout(DEADLINE):
            await watching
        print(f"election hand-over after kill -9: {took:.2f} s (lease TTL {ttl} s)")
        assert seen == ["child", "me"]
        assert await me.leader() == "me"
        await me.resign()
        assert await me.leader() is None
    finally:
        await end(proc)
