"""Test doubles for the transport contracts, and polling helpers."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

from liferaft.core.messages import InstallSnapshot, Message, NodeId
from liferaft.transport import handshake
from liferaft.transport._frames import (
    MAGIC,
    PROTOCOL_VERSION,
    Challenge,
    Hello,
    Kind,
    Proof,
    Welcome,
    control,
    parse,
    read_frame,
)


class HashSink:
    """A SnapshotSink that keeps only a running sha256 (never the whole data)."""

    def __init__(self, on_write: Callable[[int], None] | None = None) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self.writes = 0
        self.committed = False
        self.aborted = False
        self.fail_commit = False
        self.on_write = on_write
        self.threads: set[str] = set()

    def write(self, chunk: bytes) -> None:
        assert not (self.committed or self.aborted)
        assert isinstance(chunk, bytes)
        self.threads.add(threading.current_thread().name)
        self.sha.update(chunk)
        self.size += len(chunk)
        self.writes += 1
        if self.on_write is not None:
            self.on_write(self.writes)

    def commit(self) -> None:
        assert not (self.committed or self.aborted)
        if self.fail_commit:
            raise OSError("disk full")
        self.committed = True

    def abort(self) -> None:
        assert not self.committed
        self.aborted = True


def pseudo_random_chunks(total: int, chunk: int, seed: int = 1) -> Iterator[bytes]:
    """Deterministic, incompressible-looking chunks totalling ``total`` bytes."""
    block = hashlib.sha256(str(seed).encode()).digest() * (chunk // 32 + 1)
    sent = 0
    i = 0
    while sent < total:
        n = min(chunk, total - sent)
        # Vary each chunk so a reordered or repeated chunk changes the hash.
        data = i.to_bytes(8, "big") + block[: n - 8] if n >= 8 else block[:n]
        yield data
        sent += n
        i += 1


def sha_of(chunks: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


class Recorder:
    """A TransportHandler that records every callback."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.delivered: list[Message] = []
        self.unreachables: list[NodeId] = []
        self.statuses: list[tuple[NodeId, bool]] = []
        self.sinks: list[HashSink] = []
        # snapshot index -> a factory of the chunks the source yields
        self.sources: dict[int, Callable[[], Iterator[bytes]]] = {}
        self.sink_factory: Callable[[], HashSink] = HashSink
        # Every call received, as (frm, payload, known_peer).
        self.calls: list[tuple[NodeId, bytes, bool]] = []
        # How to answer a call; None answers b"re:" + payload.
        self.on_call: Callable[[NodeId, bytes, bool], Awaitable[bytes]] | None = None

    def deliver(self, msg: Message) -> None:
        self.delivered.append(msg)

    def unreachable(self, peer: NodeId) -> None:
        self.unreachables.append(peer)

    def snapshot_source(self, msg: InstallSnapshot) -> Iterator[bytes]:
        return self.sources[msg.snapshot.index]()

    def snapshot_sink(self, msg: InstallSnapshot) -> HashSink:
        assert msg.snapshot.data == b""
        sink = self.sink_factory()
        self.sinks.append(sink)
        return sink

    def snapshot_status(self, peer: NodeId, ok: bool) -> None:
        self.statuses.append((peer, ok))

    async def handle_call(self, frm: NodeId, payload: bytes, known_peer: bool) -> bytes:
        assert isinstance(payload, bytes)
        self.calls.append((frm, payload, known_peer))
        if self.on_call is not None:
            return await self.on_call(frm, payload, known_peer)
        return b"re:" + payload


async def wait_until(pred: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``pred`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or pred}")
        await asyncio.sleep(0.002)


async def greet(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    kind: Kind,
    frm: str,
    to: str,
    cluster_id: str,
    secret: bytes | None,
) -> Welcome:
    """Do a dialer's side of the handshake by hand (HELLO or CALLER, then the
    PROOF); returns the WELCOME, or raises AssertionError on a REFUSE."""
    writer.write(control(kind, Hello(MAGIC, PROTOCOL_VERSION, cluster_id, frm, to)))
    got, body = await read_frame(reader, 4096)
    assert got is Kind.CHALLENGE, (got, bytes(body))
    challenge = parse(Challenge, body)
    claim = handshake.Claim(
        MAGIC,
        PROTOCOL_VERSION,
        cluster_id,
        frm,
        to,
        caller=kind is Kind.CALLER,
        dialer_nonce=os.urandom(handshake.NONCE_SIZE),
        listener_nonce=challenge.nonce,
    )
    proof = (
        b""
        if secret is None
        else handshake.prove(secret, handshake.DIALER, claim, challenge.node_id)
    )
    writer.write(control(Kind.PROOF, Proof(claim.dialer_nonce, proof)))
    got, body = await read_frame(reader, 4096)
    assert got is Kind.WELCOME, (got, bytes(body))
    return parse(Welcome, body)


def opening(
    kind: Kind = Kind.HELLO,
    frm: str = "n3",
    to: str = "n1",
    cluster_id: str = "c1",
    nonce: bytes = b"\x01" * handshake.NONCE_SIZE,
) -> bytes:
    """A dialer's side of the handshake with a node that has no secret, all
    written at once: HELLO (or CALLER), then a PROOF with an empty proof,
    which needs nothing from the CHALLENGE."""
    hello = control(kind, Hello(MAGIC, PROTOCOL_VERSION, cluster_id, frm, to))
    return hello + control(Kind.PROOF, Proof(nonce, b""))


async def welcomed(reader: asyncio.StreamReader) -> None:
    """Read the listener's CHALLENGE and WELCOME (after :func:`opening`)."""
    for want in (Kind.CHALLENGE, Kind.WELCOME):
        got, body = await read_frame(reader, 4096)
        assert got is want, (got, bytes(body))


def hanging(
    started: list[bytes] | None = None, release: asyncio.Event | None = None
) -> Callable[[NodeId, bytes, bool], Awaitable[bytes]]:
    """An on_call handler that waits for ``release`` (forever if None)."""
    gate = release or asyncio.Event()

    async def handle(frm: NodeId, payload: bytes, known: bool) -> bytes:
        if started is not None:
            started.append(payload)
        await gate.wait()
        return b"late:" + payload

    return handle
