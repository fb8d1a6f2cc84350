"""The lease early-expiry check: a key gone after its lease lapsed (the
holder was killed, stopped keeping it alive, revoked it, or the cluster had
no leader) passes; a key gone while keep-alives kept the lease alive is
counted."""

from __future__ import annotations

from dataclasses import asdict, replace

from liferaft.verify.leases import (
    KeyGone,
    LeaseRecord,
    check_leases,
    leases_from_json,
    protected_until,
)

# ttl 2 s; granted at [0, 0.1]; kept alive every second until 5 (then killed).
HELD = LeaseRecord(1, 2.0, (0.0, 0.1), tuple((t, t + 0.1) for t in (1.0, 2.0, 3.0, 4.0, 5.0)))


def test_protection_runs_from_the_grant_through_each_keepalive_in_time() -> None:
    assert protected_until(HELD) == 7.0  # the last keep-alive's call + ttl
    assert protected_until(replace(HELD, keepalives=())) == 2.0
    # A keep-alive answered after the deadline may have come too late: it ends there.
    late = replace(HELD, keepalives=((1.0, 1.1), (2.5, 3.5), (4.0, 4.1)))
    assert protected_until(late) == 3.0
    assert protected_until(replace(HELD, revoked=3.5)) == 3.5


def test_a_key_gone_after_the_holder_died_is_fine() -> None:
    rep = check_leases([replace(HELD, gone=(KeyGone("lock/a", 7.2), KeyGone("svc/a", 9.0)))])
    assert rep.ok and rep.keys_gone == 2
    assert rep.line() == "leases=1 lease_keys_gone=2 lease_early_expiry=0"


def test_an_early_expiry_is_counted() -> None:
    rep = check_leases([replace(HELD, gone=(KeyGone("lock/a", 6.5),)),
                        replace(HELD, id=2, gone=(KeyGone("k", 1.5), KeyGone("j", 8.0)))])
    assert rep.early == 2 and not rep.ok
    assert rep.messages == [
        "lease 1 (ttl 2 s): lock/a was gone by 6.500, but the lease was kept alive until at "
        "least 7.000",
        "lease 2 (ttl 2 s): k was gone by 1.500, but the lease was kept alive until at least "
        "7.000"]


def test_keepalives_acknowledged_without_a_leader_do_not_count() -> None:
    """A deposed leader may have answered 2.0-4.0; from 1.0 + ttl the lease may be gone."""
    lease = replace(HELD, gone=(KeyGone("lock/a", 3.5),))
    assert check_leases([lease]).early == 1
    rep = check_leases([lease], leaderless=[(1.8, 4.05)])
    assert rep.ok and protected_until(lease, [(1.8, 4.05)]) == 3.0
    # A short leader change between keep-alives changes nothing.
    assert protected_until(lease, [(1.2, 1.9)]) == 7.0
    assert protected_until(lease, [(-1, 10)]) is None
    assert check_leases([lease], [(-1, 10)]).ok


def test_json_round_trip() -> None:
    lease = replace(HELD, gone=(KeyGone("k", 3.0),))
    assert leases_from_json({"leases": [asdict(lease)], "leaderless": [[1, 2]]}) == (
        [lease], [(1.0, 2.0)])
