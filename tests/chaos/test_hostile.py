"""The stranger's referee and its peer-port attacks, without node processes.

:class:`liferaft.chaos.hostile.Watch` judges /v1/status and /v1/members
answers: each change a stranger can make is seen, counted once however many
nodes report it, and what the harness itself does (its members, the
operator's ``oops-`` members) is not a change.  The address book belongs to
the membership, so a member's client address moved to the stranger's counts
in ``membership_changed_by_stranger``.

The member-info and transfer attacks run against a real in-process
``TcpTransport`` listener: with the cluster secret the stranger is refused
in the handshake and no call reaches the node; without one, the calls it
sends are the ones the brief names, and a node that serves them is judged a
breach.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from liferaft.chaos.cluster import ChaosCluster
from liferaft.chaos.hostile import (
    FORGED_TERM_STEP,
    HOSTILE,
    STRANGER_CLIENT_ADDR,
    Stranger,
    Watch,
)
from liferaft.chaos.operator_fault import CallsOnly
from liferaft.chaos.soak import SoakResult
from liferaft.runtime import address_book, peer_rpc
from liferaft.transport import TcpTransport


@pytest.fixture
def cluster(tmp_path: Path) -> ChaosCluster:
    return ChaosCluster(["n1", "n2", "n3"], tmp_path / "c")


def status(c: ChaosCluster, term: int = 5, **extra: dict[str, Any]) -> dict[str, Any]:
    members = [
        {"id": m.id, "peer_addr": m.peer, "client_addr": m.client, "voter": True}
        for m in c.members.values()
    ]
    members += list(extra.values())
    return {"term": term, "members": members}


def test_the_harness_own_cluster_is_no_change(cluster: ChaosCluster) -> None:
    w = Watch(cluster)
    st = status(cluster, oops={"id": "oops-3", "peer_addr": "127.0.0.1", "client_addr": ""})
    for nid in cluster.members:
        w.check_status(nid, st)
    st["members"][0]["client_addr"] = ""  # not announced yet
    w.check_status("n1", st)
    assert not w.changes and not w.details


def test_a_stranger_member_counts_once_however_many_nodes_list_it(cluster: ChaosCluster) -> None:
    w = Watch(cluster)
    st = status(cluster, s={"id": "stranger-1", "peer_addr": "127.0.0.1:1", "client_addr": ""})
    for nid in cluster.members:
        w.check_status(nid, st)
    assert w.changes == {"membership": 1}
    assert "stranger-1" in w.details[0]


def test_changed_addresses_and_forged_terms_are_changes(cluster: ChaosCluster) -> None:
    w = Watch(cluster)
    st = status(cluster, term=FORGED_TERM_STEP + 7)
    st["members"][0]["client_addr"] = "203.0.113.66:6666"
    st["members"][1]["peer_addr"] = "203.0.113.66:7000"
    w.check_status("n1", st)
    w.check_status("n2", st)
    assert w.changes == {"term": 2, "membership": 2}


def test_the_cluster_hands_its_nodes_a_private_secret(cluster: ChaosCluster) -> None:
    mode = cluster.secret_file.stat().st_mode & 0o777
    assert mode == 0o600
    assert cluster.secret_file.read_bytes().strip() == cluster.secret
    assert len(cluster.secret) >= 32


def test_unknown_hostile_kinds_are_refused(cluster: ChaosCluster) -> None:
    with pytest.raises(ValueError, match="unknown hostile fault"):
        Stranger(cluster, ["peer-junk", "nope"], random.Random(1), Watch(cluster))
    assert "operator-bad-addr" in HOSTILE


# -- the address book is membership ------------------------------------------------------


def _verdict(w: Watch) -> SoakResult:
    res = SoakResult(seed=1, linearizable="yes")
    res.stranger_changes = dict(w.changes)
    return res


def test_a_client_address_moved_to_the_stranger_in_members_is_a_membership_change(
    cluster: ChaosCluster,
) -> None:
    w = Watch(cluster)
    members = status(cluster)["members"]
    members[2]["client_addr"] = STRANGER_CLIENT_ADDR
    for nid in cluster.members:
        w.check_members(nid, members)  # as /v1/members lists them
    res = _verdict(w)
    assert res.membership_changed_by_stranger == 1
    assert "membership_changed_by_stranger=1" in res.line()
    assert not res.passed
    assert STRANGER_CLIENT_ADDR in w.details[0] and "n3" in w.details[0]


def test_a_leader_client_address_moved_to_the_stranger_in_status_counts_once(
    cluster: ChaosCluster,
) -> None:
    w = Watch(cluster)
    st = status(cluster)
    st["leader"] = "n1"
    st["leader_client_addr"] = STRANGER_CLIENT_ADDR
    w.check_status("n2", st)  # only the leader field shows it
    assert _verdict(w).membership_changed_by_stranger == 1
    st["members"][0]["client_addr"] = STRANGER_CLIENT_ADDR
    w.check_status("n3", st)  # the member list too: the same change
    assert _verdict(w).membership_changed_by_stranger == 1
    st["leader_client_addr"] = cluster.members["n1"].client
    st["members"][0]["client_addr"] = cluster.members["n1"].client
    w2 = Watch(cluster)
    w2.check_status("n2", st)
    assert not w2.changes


async def test_the_sweep_reads_members_as_well_as_status(
    cluster: ChaosCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change only /v1/members shows is still seen."""
    moved = status(cluster)["members"]
    moved[1]["client_addr"] = STRANGER_CLIENT_ADDR
    asked: list[str] = []

    async def fake_status(nid: str) -> dict[str, Any]:
        return status(cluster)

    async def fake_call(nid: str, method: str, path: str, *a: Any, **kw: Any) -> tuple[int, Any]:
        asked.append(path)
        return 200, {"members": moved}

    monkeypatch.setattr(cluster, "status", fake_status)
    monkeypatch.setattr(cluster, "call", fake_call)
    w = Watch(cluster)
    await w.sweep()
    assert set(asked) == {"/v1/members"}
    assert w.changes == {"membership": 1}


# -- the member-info and transfer attacks on a real peer port ----------------------------


class _Recorder(CallsOnly):
    """A node's transport handler that records calls and serves them all,
    as a node with no authentication would."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, peer_rpc.Request, bool]] = []

    async def handle_call(self, frm: str, payload: bytes, known_peer: bool) -> bytes:
        req = peer_rpc.decode_request(payload)
        self.calls.append((frm, req, known_peer))
        if isinstance(req, peer_rpc.TransferLeader):
            return peer_rpc.encode(peer_rpc.Transferred(req.to or "n2"))
        return peer_rpc.encode(peer_rpc.Accepted(7, 3))


@contextlib.asynccontextmanager
async def _listening_n1(cluster: ChaosCluster, secret: bytes | None) -> AsyncIterator[_Recorder]:
    """n1's peer port, a real TcpTransport on an ephemeral port (with the
    cluster's secret, or none), recording what reaches its handler."""
    t = TcpTransport("n1", cluster.cluster_id, "127.0.0.1:0", peer_secret=secret)
    rec = _Recorder()
    await t.start(rec)
    try:
        t.set_peers({n: m.peer for n, m in cluster.members.items() if n != "n1"})
        cluster.members["n1"].peer = t.address
        yield rec
    finally:
        await t.close()


def _stranger(cluster: ChaosCluster, seed: int) -> Stranger:
    s = Stranger(cluster, ["peer-info", "peer-transfer"], random.Random(seed), Watch(cluster))

    async def at_n1() -> str:
        return "n1"

    s._leader_or_any = at_n1  # type: ignore[method-assign]
    return s


async def test_without_the_secret_no_member_info_or_transfer_reaches_a_node(
    cluster: ChaosCluster,
) -> None:
    async with _listening_n1(cluster, cluster.secret) as rec:
        for seed in range(12):
            s = _stranger(cluster, seed)
            s._n = seed
            await s._peer_info(asyncio.Event())
            await s._peer_transfer(asyncio.Event())
            assert not s.watch.changes, s.watch.details
            for outcome in s.outcomes:
                assert "refused: " in outcome and "proof" in outcome, outcome
    assert rec.calls == []


async def test_the_attacks_send_member_info_and_transfers_and_a_served_one_is_a_breach(
    cluster: ChaosCluster,
) -> None:
    """No secret on the node (what the secret prevents): the calls with an
    empty proof arrive as the stranger built them, and serving one fails the
    verdict; those with a guessed proof are refused (this node has none)."""
    async with _listening_n1(cluster, None) as rec:
        claims: set[str] = set()
        for seed in range(40):
            s = _stranger(cluster, seed)
            s._n = seed
            before = len(rec.calls)
            await s._peer_info(asyncio.Event())
            if len(rec.calls) > before:
                frm, req, _ = rec.calls[-1]
                assert isinstance(req, peer_rpc.SetMemberInfo)
                claims.add("member" if frm in cluster.members else "stranger")
                info = json.loads(req.info)
                assert info[address_book.CLIENT_ADDR] == STRANGER_CLIENT_ADDR
                assert s.watch.changes == {"membership": 1}
                assert _verdict(s.watch).membership_changed_by_stranger == 1
            else:
                assert not s.watch.changes
            before = len(rec.calls)
            await s._peer_transfer(asyncio.Event())
            if len(rec.calls) > before:
                assert isinstance(rec.calls[-1][1], peer_rpc.TransferLeader)
                assert s.watch.changes["leader"] == 1 and not _verdict(s.watch).passed
            else:
                assert "leader" not in s.watch.changes
            assert all("refused" in o or "reply ok" in o for o in s.outcomes), s.outcomes
    kinds = {type(req) for _, req, _ in rec.calls}
    assert kinds == {peer_rpc.SetMemberInfo, peer_rpc.TransferLeader}
    assert claims == {"member", "stranger"}
    # A member impersonated naming itself, and naming another member.
    pairs = [
        (frm, r.node_id)
        for frm, r, known in rec.calls
        if known and isinstance(r, peer_rpc.SetMemberInfo)
    ]
    assert any(f == n for f, n in pairs) and any(f != n for f, n in pairs)
