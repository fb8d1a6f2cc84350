"""Every role, term, leader and membership change is logged at INFO with its
reason (docs/operations.md, "Logs"), and the events carry the reason too."""

from __future__ import annotations

import logging

import pytest

from liferaft.runtime import EventType
from tests.runtime.cluster import MemCluster


def _lines(caplog: pytest.LogCaptureFixture, node: str) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records
        if r.name == "liferaft.runtime" and r.levelno == logging.INFO
        and r.getMessage().startswith(f"node {node}: ")
    ]  # fmt: skip


async def test_a_transfer_and_membership_changes_leave_reasoned_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="liferaft.runtime")
    c = MemCluster(3)
    await c.start()
    try:
        ld = await c.leader()
        events = []
        for n in c.nodes.values():
            n.events.on(events.append)
        won = [r for r in _lines(caplog, ld.id) if getattr(r, "role", "") == "leader"]
        assert won and won[-1].reason == "won the election"  # type: ignore[attr-defined]
        assert f"node {ld.id}: became leader in term" in won[-1].getMessage()
        to = next(i for i in c.ids if i != ld.id)
        caplog.clear()
        assert await c.drive(ld.transfer_leadership(to)) == to
        old = [(r.role, r.reason) for r in _lines(caplog, ld.id)]  # type: ignore[attr-defined]
        assert ("follower", f"transfer to {to}: higher term from {to}") in old
        new = [(r.role, r.reason) for r in _lines(caplog, to)]  # type: ignore[attr-defined]
        assert new == [("candidate", f"transfer from {ld.id}"), ("leader", "won the election")]
        term = c.nodes[to].status().term
        assert all(r.term == term for r in _lines(caplog, to))  # type: ignore[attr-defined]
        reasons = {(e.type, e.detail.get("reason")) for e in events}
        assert (EventType.STATE_CHANGE, "won the election") in reasons
        assert (EventType.LEADER_CHANGE, f"heard from leader {to}") in reasons

        caplog.clear()
        gone = ld.id
        await c.drive(c.nodes[to].remove(gone))
        lines = [r.getMessage() for r in _lines(caplog, to)]
        assert any(f"member {gone} removed (conf change at index" in m for m in lines), lines
    finally:
        await c.stop()
