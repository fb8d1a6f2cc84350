"""Cluster epochs in the handshake (docs/transport.md, "Epochs"): a member
of a newer epoch (a node forced with --force-new-cluster) tells an old
member back with its old data that it was removed, provably; nobody else
can, and an empty node joining learns the epoch instead of being judged."""

from __future__ import annotations

import asyncio
import dataclasses
import os

import pytest

from liferaft.core.messages import Heartbeat
from liferaft.harness.ports import free_port
from liferaft.transport import handshake as hs
from liferaft.transport._frames import (
    MAGIC,
    PROTOCOL_VERSION,
    Challenge,
    Hello,
    Kind,
    Proof,
    Removed,
    Welcome,
    control,
    parse,
    read_frame,
)
from liferaft.transport.base import parse_address

from .conftest import MakeCluster
from .helpers import wait_until

SECRET = b"0123456789abcdef-the-cluster-secret"


def stale_log(got: list[str]) -> dict[str, object]:
    return {"on_stale": got.append}


async def test_a_forced_member_tells_an_old_member_it_was_removed(
    make_cluster: MakeCluster,
) -> None:
    """n1 (epoch 1, alone after the force) and n2 (epoch 0, back with its
    old peer table): n2 is told REMOVED and turns stale at once; it then
    delivers and sends nothing, though its other peer n3 (also old) still
    welcomes it."""
    stale: list[str] = []
    nodes = await make_cluster(
        ["n1", "n2", "n3"],
        knows={"n1": [], "n2": ["n1", "n3"], "n3": ["n2"]},
        per_node={"n1": {"epoch": 1}, "n2": stale_log(stale)},
        peer_secret=SECRET,
    )
    t2, rec2 = nodes["n2"]
    await wait_until(lambda: stale, what="n2 stale")
    assert len(stale) == 1 and "n1 (epoch 1) answers REMOVED" in stale[0], stale
    assert "n2 is of epoch 0" in stale[0] and "--join" in stale[0]
    assert t2.stats()["stale"] == stale[0] and t2.stats()["epoch"] == 0
    assert nodes["n1"][0].stats()["refused"] >= 1
    # Mute: nothing leaves n2; deaf: what n3 sends is not delivered.
    t3, _ = nodes["n3"]
    before = t3.stats()["received"]
    t2.send(Heartbeat(term=5, frm="n2", to="n3", commit=0))
    t3.send(Heartbeat(term=5, frm="n3", to="n2", commit=0))
    await asyncio.sleep(0.2)
    assert t3.stats()["received"] == before
    assert not [m for m in rec2.delivered if m.frm == "n3"]


@pytest.mark.parametrize("who", ["no secret", "another secret", "an old node"])
async def test_nobody_but_a_member_of_a_newer_epoch_makes_a_node_stale(
    make_cluster: MakeCluster, who: str
) -> None:
    """A listener at n1's address without the secret, with another one, or
    of the same epoch never stops n2: at worst its handshake fails."""
    stale: list[str] = []
    n1 = {
        "no secret": {"peer_secret": None, "epoch": 1},
        "another secret": {"peer_secret": b"x" * 32, "epoch": 1},
        "an old node": {},
    }[who]
    nodes = await make_cluster(
        ["n1", "n2"],
        knows={"n1": [], "n2": ["n1"]},
        per_node={"n1": n1, "n2": stale_log(stale)},
        peer_secret=SECRET,
    )
    t2, _ = nodes["n2"]
    await wait_until(lambda: t2.stats()["peers"]["n1"]["dial_failures"] >= 3, what="redials")
    assert stale == [] and t2.stats()["stale"] is None


async def test_a_removed_answer_must_prove_the_secret_over_both_epochs() -> None:
    """A REMOVED is checked like a WELCOME: by the node dialed, above the
    dialer's epoch, with the proof of this very exchange."""
    claim = hs.Claim(MAGIC, PROTOCOL_VERSION, "c1", "n2", "n1", dialer_nonce=b"d" * 32,
                     listener_nonce=b"l" * 32)  # fmt: skip
    good = hs.prove_removed(SECRET, claim, "n1", 1)
    assert hs.check_removed(claim, "n1", 1, good, SECRET) is None
    assert "epoch 0, not above" in str(hs.check_removed(claim, "n1", 0, good, SECRET))
    assert "expected 'n1'" in str(hs.check_removed(claim, "n9", 1, good, SECRET))
    assert "wrong" in str(hs.check_removed(claim, "n1", 2, good, SECRET))  # epoch not the proven
    other = dataclasses.replace(claim, dialer_nonce=b"e" * 32)  # another connection's
    assert "wrong" in str(hs.check_removed(other, "n1", 1, good, SECRET))
    welcome = hs.prove(SECRET, hs.LISTENER, claim, "n1")  # a WELCOME's proof is no REMOVED's
    assert "wrong" in str(hs.check_removed(claim, "n1", 1, welcome, SECRET))
    assert "has none" in str(hs.check_removed(claim, "n1", 1, good, None))
    assert "no certificate" in str(hs.check_removed(claim, "n1", 1, good, SECRET, None, True))


def test_the_listener_judges_peers_by_epoch_not_callers() -> None:
    local = hs.Local("n1", "c1", frozenset(), SECRET, epoch=1)
    old = hs.Claim(MAGIC, PROTOCOL_VERSION, "c1", "n2", "n1")
    assert hs.stale_dialer(old, local) and not hs.stale_listener(old, local)
    # Not a member any more, yet CHALLENGEd: the verdict is REMOVED, not "unknown peer".
    assert hs.check_hello(old, local) is None
    caller = dataclasses.replace(old, caller=True, to="")  # an empty node asking to join
    assert not hs.stale_dialer(caller, local)
    newer = dataclasses.replace(old, epoch=2)
    assert hs.stale_listener(newer, local) and not hs.stale_dialer(newer, local)
    learning = dataclasses.replace(local, epoch=None)  # judges nobody
    assert not hs.stale_dialer(old, learning) and not hs.stale_listener(newer, learning)
    assert "unknown peer" in str(hs.check_hello(old, learning))
    same = dataclasses.replace(old, epoch=1)
    assert "unknown peer" in str(hs.check_hello(same, local))


def test_epoch_0_frames_are_the_bytes_of_builds_before_epochs() -> None:
    """A cluster never forced sends exactly what older builds send and
    accept (rolling upgrades); an epoch rides as one more field."""
    hello = control(Kind.HELLO, Hello(MAGIC, PROTOCOL_VERSION, "c1", "n2", "n1"))
    assert hello[5:] == b"\x95\xa8liferaft\x02\xa2c1\xa2n2\xa2n1"
    welcome = control(Kind.WELCOME, Welcome(PROTOCOL_VERSION, "c1", "n1", b""))
    assert welcome[5:] == b"\x94\x02\xa2c1\xa2n1\xc4\x00"
    one = control(Kind.HELLO, Hello(MAGIC, PROTOCOL_VERSION, "c1", "n2", "n1", 1))
    assert one[5:] == b"\x96\xa8liferaft\x02\xa2c1\xa2n2\xa2n1\x01"
    assert parse(Hello, memoryview(hello[5:])).epoch == 0
    assert parse(Hello, memoryview(one[5:])).epoch == 1


async def test_an_empty_node_learns_the_epoch_and_is_never_judged(
    make_cluster: MakeCluster,
) -> None:
    """n4 (epoch unknown: an empty node joining) calls n1 (epoch 1) on a
    caller connection: welcomed, it takes epoch 1 (saved first), and its
    peer connection to n1 then goes through."""
    learned: list[int] = []
    stale: list[str] = []
    nodes = await make_cluster(
        ["n1", "n4"],
        knows={"n1": ["n4"], "n4": []},
        per_node={"n1": {"epoch": 1}, "n4": {"epoch": None, "on_epoch": learned.append,
                                             **stale_log(stale)}},  # fmt: skip
        peer_secret=SECRET,
    )
    t1, _ = nodes["n1"]
    t4, _ = nodes["n4"]
    assert await t4.call_address(t1.address, b"join", 5.0) == b"re:join"
    assert learned == [1] and t4.stats()["epoch"] == 1
    t4.set_peers({"n1": t1.address})
    await wait_until(lambda: t4.stats()["peers"]["n1"]["connected"], what="n4 -> n1")
    assert stale == []


async def test_an_unknown_epoch_learns_from_a_removed_answer(make_cluster: MakeCluster) -> None:
    """Belt and braces: an empty node that dials a peer before it learned
    the epoch takes it from the REMOVED answer and dials again; it has no
    history to be stale with."""
    learned: list[int] = []
    stale: list[str] = []
    nodes = await make_cluster(
        ["n1", "n4"],
        knows={"n1": ["n4"], "n4": ["n1"]},
        per_node={"n1": {"epoch": 2}, "n4": {"epoch": None, "on_epoch": learned.append,
                                             **stale_log(stale)}},  # fmt: skip
        peer_secret=SECRET,
    )
    t4, _ = nodes["n4"]
    await wait_until(lambda: t4.stats()["peers"]["n1"]["connected"], what="n4 -> n1")
    assert learned == [2] and stale == []


async def test_a_listener_that_meets_a_newer_epoch_is_the_stale_one(
    make_cluster: MakeCluster,
) -> None:
    """n1 (epoch 1) dials the address of n2 (epoch 0): n2 refuses it and
    turns stale itself, once n1 proved the secret.  n1 must be in n2's peer
    table (an old member): n2's own dials to it fail here, so the verdict is
    the listener's."""
    stale: list[str] = []
    nodes = await make_cluster(
        ["n1", "n2"],
        knows={"n1": ["n2"], "n2": []},
        per_node={"n1": {"epoch": 1}, "n2": stale_log(stale)},
        peer_secret=SECRET,
    )
    nodes["n2"][0].set_peers({"n1": f"127.0.0.1:{free_port()}"})
    await wait_until(lambda: stale, what="n2 stale")
    assert "n1 is of epoch 1, after this node's 0" in stale[0]
    assert not nodes["n1"][0].stats()["peers"]["n2"]["connected"]


async def test_a_stranger_claiming_a_newer_epoch_proves_nothing(
    make_cluster: MakeCluster,
) -> None:
    """Without the secret, a dialer's epoch claim is refused with its proof:
    the listener stays as it was."""
    stale: list[str] = []
    nodes = await make_cluster(["n2"], per_node={"n2": stale_log(stale)}, peer_secret=SECRET)
    t2, _ = nodes["n2"]
    t2.set_peers({"n1": f"127.0.0.1:{free_port()}"})  # n1 is an (old) member of n2's
    host, port = parse_address(t2.address)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(control(Kind.HELLO, Hello(MAGIC, PROTOCOL_VERSION, "c1", "n1", "n2", 9)))
        got, body = await read_frame(reader, 4096)
        assert got is Kind.CHALLENGE
        parse(Challenge, body)
        writer.write(control(Kind.PROOF, Proof(os.urandom(32), b"\x00" * 32)))
        got, body = await read_frame(reader, 4096)
        assert got is Kind.REFUSE and b"wrong proof" in bytes(body)
    finally:
        writer.close()
    assert stale == [] and t2.stats()["stale"] is None
    assert Removed(1, "x", b"").epoch == 1


async def test_a_forged_removed_answer_stops_nobody(make_cluster: MakeCluster) -> None:
    """Whoever listens at n1's address without the secret (a stranger on a
    reused address) answers n2's HELLO with a REMOVED: its proof does not
    hold, and n2 only counts a failed dial."""
    stale: list[str] = []
    answered = asyncio.Event()

    async def fake_n1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader, 4096)
        writer.write(control(Kind.CHALLENGE, Challenge("n1", os.urandom(32))))
        await read_frame(reader, 4096)
        writer.write(control(Kind.REMOVED, Removed(7, "you were removed", b"\x01" * 32)))
        await writer.drain()
        answered.set()
        writer.close()

    server = await asyncio.start_server(fake_n1, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        nodes = await make_cluster(["n2"], per_node={"n2": stale_log(stale)}, peer_secret=SECRET)
        t2, _ = nodes["n2"]
        t2.set_peers({"n1": f"127.0.0.1:{port}"})
        await asyncio.wait_for(answered.wait(), 5)
        await wait_until(lambda: t2.stats()["peers"]["n1"]["dial_failures"] >= 1, what="dial")
        assert stale == [] and t2.stats()["stale"] is None
    finally:
        server.close()
