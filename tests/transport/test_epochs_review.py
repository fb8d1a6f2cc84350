"""Adversarial cases for cluster epochs (docs/transport.md, "Epochs"):
who can make a member stale, what a stale node still does, and frames with
bad epochs."""

from __future__ import annotations

import asyncio
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
    control,
    frame,
    read_frame,
)
from liferaft.transport.base import CallError, parse_address

from .conftest import MakeCluster
from .helpers import wait_until

SECRET = b"0123456789abcdef-the-cluster-secret"
NONCE = b"\x01" * 32


def test_a_certificate_of_a_non_member_cannot_claim_a_newer_epoch() -> None:
    """Mutual TLS alone: the CA's certificate of a non-member (a removed
    member, a client) names its holder, but that is no peer; its claim of a
    newer epoch must be refused as an unknown peer, not make the listener
    stale (which would stop it for good)."""
    me = hs.Local("n2", "c1", {"n1", "n3"}, None, cert_ids=True, epoch=0)
    claim = hs.Claim(
        MAGIC, PROTOCOL_VERSION, "c1", "intruder", "n2", cert=frozenset({"intruder"}),
        dialer_nonce=NONCE, listener_nonce=NONCE, proof=b"", epoch=9,
    )  # fmt: skip
    assert hs.check_hello(claim, me) == "unknown peer 'intruder'"
    # A member's certificate still makes its newer epoch count.
    member = hs.Claim(
        MAGIC, PROTOCOL_VERSION, "c1", "n1", "n2", cert=frozenset({"n1"}),
        dialer_nonce=NONCE, listener_nonce=NONCE, proof=b"", epoch=9,
    )  # fmt: skip
    assert hs.check_hello(member, me) is None and hs.stale_listener(member, me)
    # An older dialer is judged whatever the peer table says (the force dropped it).
    old = hs.Claim(
        MAGIC, PROTOCOL_VERSION, "c1", "gone", "n2", cert=frozenset({"gone"}),
        dialer_nonce=NONCE, listener_nonce=NONCE, proof=b"", epoch=0,
    )  # fmt: skip
    newer = hs.Local("n2", "c1", {"n1"}, None, cert_ids=True, epoch=1)
    assert hs.check_hello(old, newer) is None and hs.stale_dialer(old, newer)


async def _claim_epoch(address: str, frm: str, epoch: int) -> tuple[Kind, bytes]:
    """Dial ``address`` as ``frm`` of ``epoch`` without a secret; the answer to the PROOF."""
    host, port = parse_address(address)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(control(Kind.HELLO, Hello(MAGIC, PROTOCOL_VERSION, "c1", frm, "n2", epoch)))
        got, body = await read_frame(reader, 4096)
        if got is Kind.CHALLENGE:
            writer.write(control(Kind.PROOF, Proof(os.urandom(32), b"")))
            got, body = await read_frame(reader, 4096)
        return got, bytes(body)
    finally:
        writer.close()


async def test_a_stranger_on_an_open_peer_port_cannot_stop_a_member(
    make_cluster: MakeCluster,
) -> None:
    """No secret (loopback): an id that is not in the peer table claiming a
    newer epoch is an unknown peer, as before epochs; it does not stop n2."""
    stale: list[str] = []
    nodes = await make_cluster(["n2"], per_node={"n2": {"on_stale": stale.append}})
    t2, _ = nodes["n2"]
    got, body = await _claim_epoch(t2.address, "intruder", 2**64 - 1)
    assert got is Kind.REFUSE and b"unknown peer 'intruder'" in body
    assert stale == [] and t2.stats()["stale"] is None


async def test_a_stale_node_flushes_nothing_it_queued_before(make_cluster: MakeCluster) -> None:
    """Messages queued for a peer whose connection is still being dialed
    when the node turns stale are never written: nothing leaves a stale node."""
    nodes = await make_cluster(["n2", "n3"], knows={"n2": [], "n3": ["n2"]})
    t2, _ = nodes["n2"]
    t3, _ = nodes["n3"]
    t2.set_peers({"n3": t3.address})
    t2.send(Heartbeat(term=5, frm="n2", to="n3", commit=0))  # queued: n3 not connected yet
    t2._ctx.epoch.mark_stale("test: told REMOVED")
    await wait_until(lambda: t2.stats()["peers"]["n3"]["connected"], what="n2 -> n3")
    await asyncio.sleep(0.1)
    assert t3.stats()["received"] == 0


async def test_a_stale_node_answers_no_calls(make_cluster: MakeCluster) -> None:
    """A stale node's call handler (joins, forwarded proposals) is never run."""
    nodes = await make_cluster(["n2", "n3"])
    t2, rec2 = nodes["n2"]
    t3, _ = nodes["n3"]
    assert await t3.call("n2", b"before", timeout=5) == b"re:before"
    t2._ctx.epoch.mark_stale("test: told REMOVED")
    with pytest.raises(CallError, match="stale"):
        await t3.call("n2", b"after", timeout=5)
    assert [p for _, p, _ in rec2.calls] == [b"before"]


async def test_a_listener_whose_stale_record_fails_still_refuses_and_survives(
    make_cluster: MakeCluster,
) -> None:
    """on_stale raising (the disk refused removed.json) on the listener side:
    the dialer is refused, the node is stale all the same, its listener keeps
    running (no exception escapes the connection task)."""

    def disk_full(reason: str) -> None:
        raise OSError(28, "No space left on device")

    nodes = await make_cluster(
        ["n1", "n2"],
        knows={"n1": ["n2"], "n2": []},
        per_node={"n1": {"epoch": 1}, "n2": {"on_stale": disk_full}},
    )
    t2, _ = nodes["n2"]
    t2.set_peers({"n1": f"127.0.0.1:{free_port()}"})  # a member, whose own dials fail
    await wait_until(lambda: t2.stats()["stale"] is not None, what="n2 stale")
    got, body = await _claim_epoch(t2.address, "n9", 0)
    assert got is Kind.REFUSE  # still answering handshakes


@pytest.mark.parametrize(
    "welcome",
    [
        b"\x95\x02\xa2c1\xa2n2\xc4\x00\xff",  # epoch -1
        b"\x95\x02\xa2c1\xa2n2\xc4\x00\xa11",  # epoch "1"
        b"\x95\x02\xa2c1\xa2n2\xc4\x00\xc3",  # epoch true
        b"\x96\x02\xa2c1\xa2n2\xc4\x00\x01\x01",  # one field too many
    ],
)
async def test_a_malformed_epoch_in_a_welcome_is_a_failed_dial(
    make_cluster: MakeCluster, welcome: bytes
) -> None:
    """Bad epochs in a WELCOME: the dial fails, nothing is learned, nobody crashes."""
    answered = asyncio.Event()

    async def fake_n2(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_frame(reader, 4096)
        writer.write(control(Kind.CHALLENGE, Challenge("n2", os.urandom(32))))
        await read_frame(reader, 4096)
        writer.write(frame(Kind.WELCOME, welcome))
        await writer.drain()
        answered.set()
        writer.close()

    server = await asyncio.start_server(fake_n2, "127.0.0.1", 0)
    learned: list[int] = []
    try:
        port = server.sockets[0].getsockname()[1]
        joining = {"epoch": None, "on_epoch": learned.append}
        nodes = await make_cluster(["n1"], per_node={"n1": joining})
        t1, _ = nodes["n1"]
        t1.set_peers({"n2": f"127.0.0.1:{port}"})
        await asyncio.wait_for(answered.wait(), 5)
        await wait_until(lambda: t1.stats()["peers"]["n2"]["dial_failures"] >= 1, what="dial")
        assert learned == [] and t1.stats()["epoch"] is None and t1.stats()["stale"] is None
    finally:
        server.close()
