"""The runtime's half of the lazy commit broadcast (NodeConfig.commit_flush_delay).

One write at a time on a three-node cluster: with the commit sent lazily a
follower gets one AppendEntries per write (the next write's entries carry
the previous commit), not two; and with no next write, the loop's flush
timer, which runs on the node's clock like every timeout, still tells the
followers, with no tick needed.  Counts, never timings: the manual clock
does not move during the writes, so no tick sends anything there.
"""

from __future__ import annotations

import asyncio
import math

import pytest

from liferaft.core import AppendEntries, Message
from liferaft.runtime import BadConfigError, Node, NodeConfig
from tests.runtime.cluster import MemCluster

WRITES = 20


async def _appends_per_write(delay: float) -> tuple[float, MemCluster, Node]:
    c = MemCluster(3, tick_interval=0.05, commit_flush_delay=delay)
    await c.start()
    ld = await c.leader()
    await c.run(0.2)  # settle: the no-op committed everywhere
    sent: list[Message] = []

    def count(frm: str, m: Message) -> bool:
        if frm == ld.id and isinstance(m, AppendEntries):
            sent.append(m)
        return False

    c.net.drop_if(count)
    for _ in range(WRITES):
        # Real time, not the manual clock: no tick (and no heartbeat) runs.
        await asyncio.wait_for(c.sms[ld.id].add(1), 5)
    per_write = len(sent) / WRITES / 2  # per follower
    print(f"commit_flush_delay={delay}: {per_write:.2f} AppendEntries per follower per write")
    return per_write, c, ld


async def test_one_message_per_write_and_the_flush_still_comes() -> None:
    lazy, c, ld = await _appends_per_write(0.05)
    try:
        # Writes come back to back, well within the 50 ms bound: the commit
        # rides the next write's entries (a stall may cost a flush or two).
        assert lazy < 1.5, lazy
        # The last write's commit: sent by the flush timer, on the node's
        # (manual) clock; the test below shows no tick is needed.
        last = ld.status().commit_index
        await c.clock.advance(0.05)
        assert all(n.status().commit_index >= last for n in c.nodes.values())
    finally:
        await c.stop()


async def test_zero_delay_sends_the_commit_at_once() -> None:
    eager, c, _ = await _appends_per_write(0.0)
    try:
        assert eager >= 1.9, eager  # entries, then the commit on its own
    finally:
        await c.stop()


async def test_the_flush_timer_runs_on_the_injected_clock() -> None:
    """The flush timer is a timeout like the others: on the node's Clock.
    With a ManualClock that does not move, real time passing flushes
    nothing; moving the clock by the delay (less than a tick) does.  (A
    timer on the event loop's own clock made ManualClock tests depend on
    how fast the machine ran them.)"""
    c = MemCluster(3, tick_interval=0.05, commit_flush_delay=0.02)
    await c.start()
    try:
        ld = await c.leader()
        await c.run(0.2)  # ends on a tick: the next one is 0.05 away
        await asyncio.wait_for(c.sms[ld.id].add(1), 5)
        last = ld.status().commit_index
        followers = [n for n in c.nodes.values() if n is not ld]
        await asyncio.sleep(0.1)  # real time only: five real flush delays
        assert all(n.status().commit_index < last for n in followers)
        await c.clock.advance(0.02)  # the delay, not a tick
        assert all(n.status().commit_index >= last for n in followers)
    finally:
        await c.stop()


def test_the_flush_delay_is_checked_but_never_against_a_fine_tick() -> None:
    """A node configured with a tick under 1 ms must start with the default
    delay (a tick flushes first anyway); a negative or NaN delay is refused."""
    NodeConfig(id="n1", tick_interval=0.0005).validate()  # the default 1 ms delay is fine
    NodeConfig(id="n1", commit_flush_delay=0.0).validate()
    for bad in (-0.001, math.nan):
        with pytest.raises(BadConfigError, match="commit_flush_delay"):
            NodeConfig(id="n1", commit_flush_delay=bad).validate()
