"""The handshake's frames, both sides: dialing and greeting a listener, and
answering a dialer.

Every decision about a handshake is made by the pure functions of
:mod:`.handshake` (:func:`~.handshake.check_hello` for the listener,
:func:`~.handshake.check_welcome` for the dialer); this module only moves
their frames (docs/transport.md, "Handshake")::

    dialer -> listener  HELLO or CALLER [magic, version, cluster_id, from, to(, epoch)]
    listener -> dialer  CHALLENGE [node_id, listener_nonce]      (or REFUSE)
    dialer -> listener  PROOF [dialer_nonce, dialer_proof]
    listener -> dialer  WELCOME [version, cluster_id, node_id, listener_proof(, epoch)]
                        (or REFUSE, or REMOVED [epoch, reason, proof] to an older epoch)

Every handshake frame is read with the 4 KiB limit of
:data:`~._frames.MAX_HANDSHAKE_FRAME`: nothing larger is read from a dialer
that has proven nothing (docs/architecture.md, "Trust model").
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import secrets
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from typing import NoReturn

from . import handshake
from ._context import MAX_REASON, NET_ERRORS, small_reads
from ._frames import (
    MAGIC,
    MAX_HANDSHAKE_FRAME,
    PROTOCOL_VERSION,
    Challenge,
    FrameError,
    Hello,
    HelloHead,
    Kind,
    Proof,
    Reason,
    Removed,
    Welcome,
    control,
    parse,
    read_frame,
)
from .epoch import Epoch

# asyncio's StreamReader buffer limit for peer connections.
READ_LIMIT = 256 * 1024

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]

#: Host name and port to the IP addresses to try, in order (raises OSError
#: when the name does not resolve).
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's resolver (``getaddrinfo``: /etc/hosts, then DNS), asked
    afresh on every call: no answer is kept, so a peer whose name now
    points elsewhere (a pod back with a new IP) is found at the next dial."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class StaleEpochError(FrameError):
    """A member of a newer epoch proved that this node is of a history the
    cluster left (docs/transport.md, "Epochs"): it must not take part again."""


class SelfConnectionError(ConnectionRefusedError):
    """A dial that connected to itself (see :meth:`Dialer.connect`): nobody
    listens at the address, as with a refusal."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def _tcp_connect(ip: str, port: int) -> socket.socket:
    """A TCP socket connected to ``ip``:``port``, never to itself.

    Dialing a port of this machine that nobody listens on, with the port in
    the kernel's ephemeral range, the kernel may pick that same port as the
    source: the SYN meets itself (a simultaneous open) and the socket is
    connected to itself.  Closed normally, it would leave a TIME-WAIT that
    keeps the peer that owns the port from binding it for a minute when it
    restarts.  So a self-connection is reset (SO_LINGER 0: an RST, no
    TIME-WAIT) before anything is written on it, TLS included, and reported
    as :class:`SelfConnectionError`: nobody listens there."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (ip, port))
        if sock.getsockname()[:2] == sock.getpeername()[:2]:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise SelfConnectionError(f"connection to {ip}:{port} met itself: nobody listens there")
    except BaseException:
        sock.close()
        raise
    return sock


@dataclasses.dataclass(frozen=True)
class Dialer:
    """This node as a dialer: how it connects and proves who it is."""

    node_id: str
    cluster_id: str
    ssl_client: ssl.SSLContext | None
    secret: bytes | None
    # Mutual TLS: the listener's certificate must name the id it claims.
    cert_ids: bool
    connect_timeout: float
    handshake_timeout: float
    resolver: Resolver = system_resolver
    # Shared with the transport's other parts: said in HELLO, learned from WELCOME.
    epoch: Epoch = dataclasses.field(default_factory=Epoch)

    async def connect(self, host: str, port: int) -> Streams:
        """Open a connection (TLS if ``ssl_client``), within ``connect_timeout``.

        A host name is resolved here, on every dial, never cached
        (docs/transport.md, "Addresses and DNS"); its addresses are tried in
        the resolver's order until one connects.  TLS still checks the
        certificate against the name."""
        # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a
        # cancellation that races with completion, and close() would hang.
        async with asyncio.timeout(self.connect_timeout):
            ips = [host] if _is_ip(host) else await self.resolver(host, port)
            if not ips:
                raise OSError(f"{host} resolves to no address")
            last: OSError | None = None
            for ip in ips:
                try:
                    sock = await _tcp_connect(ip, port)
                    reader, writer = await asyncio.open_connection(
                        sock=sock,
                        ssl=self.ssl_client,
                        server_hostname=host if self.ssl_client else None,
                        ssl_handshake_timeout=self.handshake_timeout if self.ssl_client else None,
                        limit=READ_LIMIT,
                    )
                except ssl.SSLError:
                    raise
                except OSError as exc:
                    last = exc
                    continue
                small_reads(writer)
                return reader, writer
            assert last is not None
            raise last

    async def greet(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: Kind, to: str
    ) -> Welcome:
        """Our side of the handshake as the dialer: HELLO (or CALLER), answer
        the CHALLENGE with our PROOF, check the WELCOME (see
        :mod:`.handshake`).  FrameError if refused or if the listener is not
        who it should be."""
        mine = self.epoch.claim
        writer.write(
            control(kind, Hello(MAGIC, PROTOCOL_VERSION, self.cluster_id, self.node_id, to, mine))
        )
        async with asyncio.timeout(self.handshake_timeout):
            challenge = parse(Challenge, await _listener_frame(reader, Kind.CHALLENGE))
            claim = handshake.Claim(
                MAGIC,
                PROTOCOL_VERSION,
                self.cluster_id,
                self.node_id,
                to,
                caller=kind is Kind.CALLER,
                dialer_nonce=secrets.token_bytes(handshake.NONCE_SIZE),
                listener_nonce=challenge.nonce,
                epoch=mine,
            )
            proof = b""
            if self.secret is not None:
                proof = handshake.prove(self.secret, handshake.DIALER, claim, challenge.node_id)
            writer.write(control(Kind.PROOF, Proof(claim.dialer_nonce, proof)))
            got, body = await _listener_answer(reader)
            if got is Kind.REMOVED:
                self._removed(claim, challenge.node_id, parse(Removed, body), writer)
            w = parse(Welcome, body)
        reason = handshake.check_welcome(
            claim,
            challenge.node_id,
            w.version,
            w.cluster_id,
            w.node_id,
            w.proof,
            self.secret,
            handshake.cert_names(writer.get_extra_info("peercert")),
            self.cert_ids,
        )
        if reason is not None:
            raise FrameError(reason)
        self.epoch.learn(w.epoch)  # an empty node joining takes the cluster's
        return w

    def _removed(
        self, claim: handshake.Claim, listener_id: str, r: Removed, writer: asyncio.StreamWriter
    ) -> NoReturn:
        """A REMOVED from ``listener_id``: if it proves itself (a member of a
        newer epoch said so), this node is stale; an empty node joining
        learns the epoch instead (it has no history to be stale with)."""
        reason = handshake.check_removed(
            claim,
            listener_id,
            r.epoch,
            r.proof,
            self.secret,
            handshake.cert_names(writer.get_extra_info("peercert")),
            self.cert_ids,
        )
        if reason is not None:
            raise FrameError(f"a REMOVED that proves nothing: {reason}")
        if self.epoch.value is None:
            self.epoch.learn(r.epoch)
            raise FrameError(f"{listener_id} is of epoch {r.epoch}: taken; dialing again")
        text = f"{listener_id} (epoch {r.epoch}) answers REMOVED: {r.reason}"
        self.epoch.mark_stale(text)
        raise StaleEpochError(text)


async def _listener_frame(reader: asyncio.StreamReader, want: Kind) -> memoryview:
    """The body of the listener's next handshake frame, which must be ``want``."""
    kind, body = await _read_listener(reader)
    if kind is not want:
        raise FrameError(f"expected {want.name}, got {kind.name}")
    return body


async def _listener_answer(reader: asyncio.StreamReader) -> tuple[Kind, memoryview]:
    """The listener's answer to the PROOF: WELCOME or REMOVED."""
    kind, body = await _read_listener(reader)
    if kind is not Kind.WELCOME and kind is not Kind.REMOVED:
        raise FrameError(f"expected WELCOME, got {kind.name}")
    return kind, body


async def _read_listener(reader: asyncio.StreamReader) -> tuple[Kind, memoryview]:
    try:
        kind, body = await read_frame(reader, MAX_HANDSHAKE_FRAME)
    except asyncio.IncompleteReadError:
        raise ConnectionResetError("closed by the peer during the handshake") from None
    if kind is Kind.REFUSE:
        raise FrameError(f"refused by the peer: {parse(Reason, body).reason}")
    return kind, body


@dataclasses.dataclass(frozen=True)
class Answer:
    """The listener's verdict on one dialer: what it claimed, and why it was
    refused (None: welcomed)."""

    claim: handshake.Claim
    refusal: str | None


async def answer(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    local: Callable[[], handshake.Local],
    epoch: Epoch | None = None,
) -> Answer:
    """The listener's side: read HELLO or CALLER, CHALLENGE it, read its
    PROOF, and WELCOME or REFUSE it by :func:`.handshake.check_hello`.
    ``local()`` is asked at each decision, since the peer table may change
    during the exchange.  After a refusal the REFUSE frame has been sent.

    A caller need not be in the peer table, and may leave ``to`` empty;
    everything else (cluster id, proof, certificate) is checked all the same.

    A proven peer of an older epoch than ``local().epoch`` is answered
    REMOVED instead of WELCOME; one of a newer epoch is refused, and makes
    ``epoch`` stale (docs/transport.md, "Epochs").
    """
    kind, body = await read_frame(reader, MAX_HANDSHAKE_FRAME)
    if kind is not Kind.HELLO and kind is not Kind.CALLER:
        raise FrameError(f"expected HELLO, got {kind.name}")
    caller = kind is Kind.CALLER
    head = parse(HelloHead, body)
    if head.magic == MAGIC and head.version == PROTOCOL_VERSION:
        hello = parse(Hello, body)
        claim = handshake.Claim(
            hello.magic,
            hello.version,
            hello.cluster_id,
            hello.frm,
            hello.to,
            caller=caller,
            cert=handshake.cert_names(writer.get_extra_info("peercert")),
            epoch=hello.epoch,
        )
    else:  # another version's HELLO: only its magic and version are read
        claim = handshake.Claim(head.magic, head.version, "", "?", "", caller=caller)
    me = local()
    reason = handshake.check_hello(claim, me)
    if reason is None:
        nonce = secrets.token_bytes(handshake.NONCE_SIZE)
        writer.write(control(Kind.CHALLENGE, Challenge(me.node_id, nonce)))
        kind, body = await read_frame(reader, MAX_HANDSHAKE_FRAME)
        if kind is not Kind.PROOF:
            raise FrameError(f"expected PROOF from {claim.frm!r}, got {kind.name}")
        proof = parse(Proof, body)
        claim = dataclasses.replace(
            claim, dialer_nonce=proof.nonce, listener_nonce=nonce, proof=proof.proof
        )
        # The peer table may have changed meanwhile: check it all again.
        me = local()
        reason = handshake.check_hello(claim, me)
        if reason is None and handshake.stale_dialer(claim, me):
            return await _answer_removed(writer, claim, me)
        if reason is None and handshake.stale_listener(claim, me):
            reason = (
                f"{claim.frm} is of epoch {claim.epoch}, after this node's {me.epoch}: this node "
                "is of a history the cluster left (--force-new-cluster) and stops"
            )
            if epoch is not None:
                epoch.mark_stale(reason)
    if reason is not None:
        writer.write(control(Kind.REFUSE, Reason(reason[:MAX_REASON])))
        with contextlib.suppress(*NET_ERRORS):
            await writer.drain()
        return Answer(claim, reason)
    mine = b""
    if me.secret is not None:
        mine = handshake.prove(me.secret, handshake.LISTENER, claim, me.node_id)
    welcome = Welcome(PROTOCOL_VERSION, me.cluster_id, me.node_id, mine, me.epoch or 0)
    writer.write(control(Kind.WELCOME, welcome))
    await writer.drain()
    return Answer(claim, None)


async def _answer_removed(
    writer: asyncio.StreamWriter, claim: handshake.Claim, me: handshake.Local
) -> Answer:
    """Tell a proven peer of an older epoch that it was removed, with this
    node's proof over both epochs; the refusal it is logged as."""
    assert me.epoch is not None
    text = (
        f"{claim.frm} is of epoch {claim.epoch}, a history this cluster left when it was "
        f"forced anew (now epoch {me.epoch}): wipe its data dir and start it with --join"
    )[:MAX_REASON]
    proof = b""
    if me.secret is not None:
        proof = handshake.prove_removed(me.secret, claim, me.node_id, me.epoch)
    writer.write(control(Kind.REMOVED, Removed(me.epoch, text, proof)))
    with contextlib.suppress(*NET_ERRORS):
        await writer.drain()
    return Answer(claim, f"REMOVED: {text}")
