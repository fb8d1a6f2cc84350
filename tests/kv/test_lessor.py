"""The lease clock (liferaft/kv/lessor.py): deadlines only on the leader,
keep-alives without entries, expiry proposed as revokes, and a new leader
restarting every lease at its full TTL."""

from __future__ import annotations

import asyncio

import pytest

from liferaft.kv.errors import KVNotFoundError, KVUnavailableError
from liferaft.kv.lessor import REVOKE_RETRY, LeaseKeeper, Lessor, min_ttl


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_follower_keeps_ttls_but_no_clock(clock: Clock) -> None:
    ls = Lessor(clock)
    ls.granted(7, 10)
    assert ls.ttl(7) == 10
    clock.now += 1000
    assert ls.due() == []  # a follower never expires anything
    with pytest.raises(KVUnavailableError):
        ls.keepalive(7)
    with pytest.raises(KVUnavailableError):
        ls.remaining(7)


def test_the_leader_expires_a_lease_not_kept_alive(clock: Clock) -> None:
    ls = Lessor(clock)
    ls.promote()
    ls.granted(1, 5)
    ls.granted(2, 5)
    clock.now += 4
    assert ls.keepalive(1) == 5
    assert ls.remaining(2) == pytest.approx(1.0)
    clock.now += 2
    assert ls.due() == [2]  # 1 was kept alive 2 s ago
    assert ls.due() == []  # its revoke is in flight
    with pytest.raises(KVNotFoundError):
        ls.keepalive(2)  # being revoked: the holder must not think it is alive
    clock.now += REVOKE_RETRY
    assert ls.due() == [2]  # the revoke was lost (say, a leader change): again
    ls.revoked(2)
    clock.now += 10
    assert ls.due() == [1]


def test_keepalive_of_an_unknown_lease_is_not_found(clock: Clock) -> None:
    ls = Lessor(clock)
    ls.promote()
    with pytest.raises(KVNotFoundError) as err:
        ls.keepalive(99)
    assert err.value.code == "lease_not_found"


def test_a_new_leader_restarts_every_lease_at_full_ttl(clock: Clock) -> None:
    # The old leader's deadline for lease 1 was 1 s away.  The new leader
    # never saw that clock: it must give the holder a whole TTL, never
    # expire the lease on a guess of the remaining time.
    ls = Lessor(clock)
    ls.granted(1, 10)
    clock.now += 9
    ls.promote()
    clock.now += 9.5
    assert ls.due() == []
    assert ls.remaining(1) == pytest.approx(0.5)
    ls.demote()
    ls.promote()  # leadership lost and won again: a full TTL once more
    assert ls.remaining(1) == pytest.approx(10.0)


def test_load_replaces_the_table_and_a_leader_restarts_it(clock: Clock) -> None:
    ls = Lessor(clock)
    ls.promote()
    ls.granted(1, 3)
    clock.now += 10
    ls.load([(2, 4)])  # a snapshot replaced the store
    assert ls.ttl(1) is None
    assert ls.due() == []
    assert ls.remaining(2) == pytest.approx(4.0)


def test_min_ttl_covers_an_election() -> None:
    assert min_ttl(1.0) == 2
    assert min_ttl(0.2) == 1
    assert min_ttl(4.0) == 6


class Leadership:
    def __init__(self) -> None:
        self.term: int | None = None
        self.barriers = 0
        self.lose_during_barrier = False

    def __call__(self) -> int | None:
        return self.term

    async def barrier(self) -> None:
        self.barriers += 1
        if self.lose_during_barrier:
            self.term = None


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_keeper_promotes_after_a_barrier_and_proposes_revokes(clock: Clock) -> None:
    ls = Lessor(clock)
    lead = Leadership()
    revoked: list[int] = []

    async def revoke(lid: int) -> None:
        revoked.append(lid)
        ls.revoked(lid)

    k = LeaseKeeper(ls, leadership=lead, barrier=lead.barrier, revoke=revoke)
    ls.granted(1, 5)
    await k.tick()
    assert not ls.leading and lead.barriers == 0
    lead.term = 3
    await k.tick()
    assert ls.leading and lead.barriers == 1
    await k.tick()
    assert lead.barriers == 1  # once per term
    clock.now += 6
    await k.tick()
    await _settle()
    assert revoked == [1]
    assert ls.ttl(1) is None
    lead.term = None
    await k.tick()
    assert not ls.leading


async def test_the_keeper_does_not_promote_if_leadership_is_lost_in_the_barrier(
    clock: Clock,
) -> None:
    ls = Lessor(clock)
    lead = Leadership()
    lead.term = 2
    lead.lose_during_barrier = True

    async def revoke(lid: int) -> None:
        raise AssertionError("no revoke without leadership")

    k = LeaseKeeper(ls, leadership=lead, barrier=lead.barrier, revoke=revoke)
    await k.tick()
    assert not ls.leading


async def test_a_new_term_restarts_the_clock_even_without_a_gap(clock: Clock) -> None:
    # Leader in term 2, then (unseen by a tick in between) leader again in
    # term 4: another node may have led in term 3 and seen other keep-alives.
    ls = Lessor(clock)
    lead = Leadership()

    async def revoke(lid: int) -> None:
        raise AssertionError("lease 1 must not expire early")

    k = LeaseKeeper(ls, leadership=lead, barrier=lead.barrier, revoke=revoke)
    ls.granted(1, 10)
    lead.term = 2
    await k.tick()
    clock.now += 9
    lead.term = 4
    await k.tick()
    clock.now += 9
    await k.tick()
    assert lead.barriers == 2
    assert ls.remaining(1) == pytest.approx(1.0)
