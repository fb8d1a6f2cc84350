"""The Lease handlers ask the leader again while there is no leader's lease
clock (an election, or the moment after one), up to the request timeout,
as etcd waits for a leader instead of failing a keep-alive."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from liferaft.etcd import lease
from liferaft.kv.errors import KVError, KVUnavailableError


def ctx(timeout: float) -> Any:
    return SimpleNamespace(service=SimpleNamespace(timeout=timeout))


async def test_no_leader_is_asked_again_until_one_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lease, "RETRY", 0.001)
    calls = []

    async def fn() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise KVUnavailableError("no_leader", "not yet")
        return 7

    assert await lease._at_leader(ctx(5.0), fn) == 7
    assert len(calls) == 3


async def test_other_failures_and_the_timeout_are_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lease, "RETRY", 0.001)
    calls = []

    async def gone() -> int:
        calls.append(1)
        raise KVError("lease 5 not found", "lease_not_found")

    with pytest.raises(KVError):
        await lease._at_leader(ctx(5.0), gone)
    assert len(calls) == 1

    async def never() -> int:
        calls.append(1)
        raise KVUnavailableError("no_leader", "never")

    with pytest.raises(KVUnavailableError):
        await lease._at_leader(ctx(0.05), never)
    assert 2 < len(calls) < 1000  # bounded by the timeout
