"""The stranger's side of the peer port: real handshake and call frames.

Built with the transport's own frame helpers and the peer RPC's codec, as an
attacker with the source would build them (docs/chaos.md, "Hostile
faults").  The stranger holds no cluster secret, so after the listener's
CHALLENGE it sends a PROOF that is empty or a guess; a node with a secret
must REFUSE it there (docs/architecture.md, "Trust model").  Every answer
is reduced to a short text for the run's report: ``welcome``,
``refused: <reason>``, ``reply ok|error <reply>``, ``closed`` or
``silent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass

import msgspec

from liferaft.runtime import peer_rpc
from liferaft.transport._frames import (
    HEADER,
    MAGIC,
    PROTOCOL_VERSION,
    FrameError,
    Hello,
    Kind,
    Proof,
    call_frame,
    control,
    parse_reply,
)
from liferaft.transport.handshake import NONCE_SIZE, PROOF_SIZE

__all__ = ["IO_TIMEOUT", "CallAnswer", "answer", "call", "greet", "open_conn"]

IO_TIMEOUT = 3.0  # seconds for a connect, or for one answer

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_conn(where: tuple[str, int]) -> Streams:
    """A plain TCP connection to ``where`` (host, port), within :data:`IO_TIMEOUT`."""
    async with asyncio.timeout(IO_TIMEOUT):
        return await asyncio.open_connection(*where)


async def greet(
    where: tuple[str, int], cluster_id: str, kind: Kind, claim: str, to: str, rng: random.Random
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """Open a connection to a peer port and handshake as ``claim`` (a HELLO
    or a CALLER, then a PROOF without the secret: empty, or random bytes);
    returns the streams and what came back (``welcome`` is a breach of a
    node with a secret, checked by the caller's watch through its effects)."""
    reader, writer = await open_conn(where)
    writer.write(control(kind, Hello(MAGIC, PROTOCOL_VERSION, cluster_id, claim, to)))
    await writer.drain()
    first = await answer(reader)
    if first != "challenge":
        return reader, writer, first
    proof = b"" if rng.random() < 0.5 else rng.randbytes(PROOF_SIZE)
    writer.write(control(Kind.PROOF, Proof(rng.randbytes(NONCE_SIZE), proof)))
    await writer.drain()
    return reader, writer, await answer(reader)


@dataclass(frozen=True)
class CallAnswer:
    """What one call got: the text for the report, and the decoded reply
    when the node answered the call at all (None otherwise)."""

    text: str
    reply: peer_rpc.Reply | None = None

    @property
    def served(self) -> bool:
        """The node did what was asked (anything but a refusal)."""
        return self.reply is not None and not isinstance(self.reply, peer_rpc.Refused)


async def call(
    where: tuple[str, int],
    cluster_id: str,
    claim: str,
    request: peer_rpc.Request,
    call_id: int,
    rng: random.Random,
) -> CallAnswer:
    """One peer call on a CALLER connection claiming to be ``claim``."""
    reader, writer, hello = await greet(where, cluster_id, Kind.CALLER, claim, "", rng)
    try:
        if hello != "welcome":
            return CallAnswer(hello)
        writer.writelines(call_frame(call_id, peer_rpc.encode(request)))
        await writer.drain()
        got: list[peer_rpc.Reply] = []
        text = await answer(reader, timeout=5.0, replies=got)
        return CallAnswer(text, got[0] if got else None)
    finally:
        writer.close()


async def answer(
    reader: asyncio.StreamReader,
    timeout: float = IO_TIMEOUT,
    replies: list[peer_rpc.Reply] | None = None,
) -> str:
    """What the node answered on the peer port: ``challenge``, ``welcome``,
    ``refused: ...``, ``reply ok|error ...`` for a call (its decoded reply
    appended to ``replies``), ``closed`` or ``silent``."""
    try:
        async with asyncio.timeout(timeout):
            head = await reader.readexactly(HEADER.size)
            length, kind = HEADER.unpack(head)
            body = await reader.readexactly(min(max(length - 1, 0), 1 << 20))
    except TimeoutError:
        return "silent"
    except (asyncio.IncompleteReadError, OSError):
        return "closed"
    if kind == Kind.CHALLENGE:
        return "challenge"
    if kind == Kind.WELCOME:
        return "welcome"
    if kind == Kind.REFUSE:
        with contextlib.suppress(Exception):
            return f"refused: {msgspec.msgpack.decode(body)[0]}"[:120]
        return "refused"
    if kind == Kind.REPLY:
        return _reply_text(memoryview(body), replies)
    return f"frame kind {kind}"


def _reply_text(body: memoryview, replies: list[peer_rpc.Reply] | None) -> str:
    try:
        _, ok, payload = parse_reply(body)
    except FrameError:
        return f"frame kind {Kind.REPLY} (malformed)"
    raw = bytes(payload)
    if not ok:  # the remote handler raised (e.g. "not a member")
        return f"reply error {raw[:120].decode(errors='replace')}"[:160]
    try:
        rep = peer_rpc.decode_reply(raw)
    except peer_rpc.RpcError:
        return f"reply ok {raw[:60]!r}"[:160]
    if replies is not None:
        replies.append(rep)
    return f"reply ok {rep!r}"[:160]
