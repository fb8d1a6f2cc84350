"""The contracts between the runtime and a transport.

Theory of operation
-------------------
The runtime owns a :class:`Transport` and hands it a :class:`TransportHandler`
(itself) in :meth:`Transport.start`.  From then on traffic flows two ways:

* out: the runtime calls :meth:`Transport.send` for every message of a
  Ready.  ``send`` never blocks and never raises for network trouble: Raft
  tolerates loss, so a message that cannot go out (unknown peer, peer down,
  queue full) is dropped, counted in :meth:`Transport.stats`, and the peer
  is reported through :meth:`TransportHandler.unreachable` so the leader
  slows down to probing (etcd's ``ReportUnreachable``).
* in: every message that arrives, after validation, is handed to
  :meth:`TransportHandler.deliver`.

Snapshots are streamed, never held whole in memory.  To send an
:class:`~liferaft.core.messages.InstallSnapshot`, a transport asks
:meth:`TransportHandler.snapshot_source` for the data in chunks (the
message's own ``snapshot.data`` may be ``b""``: the data lives in storage).
The receiving transport asks its handler for a :class:`SnapshotSink`,
writes the chunks into it, and only after :meth:`SnapshotSink.commit`
delivers the InstallSnapshot message, with ``snapshot.data`` empty.  The
sender learns the outcome through :meth:`TransportHandler.snapshot_status`
(the runtime forwards it to ``RawNode.report_snapshot``).

Calls are a request/response side channel beside the Raft traffic, for
what Raft messages do not carry: a follower forwarding a proposal to the
leader, a brand-new node asking a member to add it.  :meth:`Transport.call`
sends bytes to a known peer and returns the reply bytes;
:meth:`Transport.call_address` does the same to an address whose node id is
unknown (and which may not know us), over a one-off connection that carries
calls only.  The receiving transport runs
:meth:`TransportHandler.handle_call` as its own task and sends back what it
returns, or what it raised.  Unlike ``send``, a call never fails silently:
it returns the reply or raises :class:`CallError` or ``TimeoutError``.

Concurrency rules
-----------------
* Every method of :class:`Transport` must be called from the event loop
  thread that ran :meth:`Transport.start`.
* Handler methods ``deliver``, ``unreachable``, ``snapshot_sink`` and
  ``snapshot_status`` are called on the event loop thread, never
  re-entrantly from inside :meth:`Transport.send`.  ``handle_call`` runs as
  a task of its own on that loop, never inside ``send``, ``call`` or
  ``call_address``.
* The iterator returned by ``snapshot_source`` and the methods of a
  :class:`SnapshotSink` may be called from a worker thread (the TCP
  transport uses :func:`asyncio.to_thread` so disk I/O does not stall the
  loop), but never concurrently: one call at a time, in order.  A sink gets
  writes, then ``commit`` or ``abort``; if ``commit`` raises, ``abort``
  follows.
* Every InstallSnapshot passed to :meth:`Transport.send` gets exactly one
  ``snapshot_status(peer, ok)``, even one dropped before it was streamed,
  so the leader never waits forever for a result.  A closed transport calls
  no handler method at all.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from liferaft.core.messages import InstallSnapshot, Message, NodeId

__all__ = [
    "CallError",
    "CallNotSent",
    "CallNotSentError",
    "SnapshotSink",
    "Transport",
    "TransportHandler",
    "format_address",
    "parse_address",
]


class CallError(Exception):
    """A call could not complete: the peer is unknown or unreachable, the
    connection was lost or refused, the transport closed, the payload is too
    large, or the remote handler raised.  The message says which; a remote
    exception arrives as ``CallError("remote error: <type>: <message>")``.

    After a CallError for a lost connection the remote handler may or may not
    have run.  :class:`CallNotSentError` says it did not.
    """


class CallNotSentError(CallError):
    """The call never left this node (unknown or unreachable peer, full queue,
    closed transport): the remote handler did not run, so a retry is safe."""


# The old name (docs/architecture.md, "Names"): the same class object, kept for
# one release (it goes in 0.2.0).
CallNotSent = CallNotSentError


@runtime_checkable
class SnapshotSink(Protocol):
    """Where a receiving transport streams the chunks of one snapshot."""

    def write(self, chunk: bytes) -> None:
        """Append the next chunk.  Raising aborts the transfer."""

    def commit(self) -> None:
        """All chunks arrived.  After it returns, the transport delivers the
        InstallSnapshot header message (``snapshot.data == b""``).  Raising
        fails the transfer instead, and ``abort`` is called next."""

    def abort(self) -> None:
        """The transfer failed; discard what was written."""


@runtime_checkable
class TransportHandler(Protocol):
    """What a transport calls back into (implemented by the runtime)."""

    def deliver(self, msg: Message) -> None:
        """An incoming message, already validated."""

    def unreachable(self, peer: NodeId) -> None:
        """A send to ``peer`` failed or its connection was lost."""

    def snapshot_source(self, msg: InstallSnapshot) -> Iterator[bytes]:
        """Sender side: the snapshot data for ``msg``, in chunks."""
        ...

    def snapshot_sink(self, msg: InstallSnapshot) -> SnapshotSink:
        """Receiver side: where to write the chunks of ``msg``'s snapshot."""
        ...

    def snapshot_status(self, peer: NodeId, ok: bool) -> None:
        """Sender side: the snapshot streamed to ``peer`` was committed (True) or failed."""

    async def handle_call(self, frm: NodeId, payload: bytes, known_peer: bool) -> bytes:
        """Answer a call from node ``frm``; runs as its own task on the loop.

        ``known_peer`` is False when the caller is not in the peer table (a
        :meth:`Transport.call_address` caller, e.g. a node asking to join).
        What it returns is the reply; whatever it raises goes back to the
        caller as ``CallError("remote error: <type>: <message>")``.  The task
        is cancelled if the caller's connection is lost or the transport closes.
        """
        ...


@runtime_checkable
class Transport(Protocol):
    """Moves Raft messages between nodes.  See the module docstring for the rules."""

    async def start(self, handler: TransportHandler) -> None:
        """Begin listening/accepting and connecting; callbacks go to ``handler``."""

    def send(self, msg: Message) -> None:
        """Queue ``msg`` for ``msg.to``.  Never blocks; never raises for network
        trouble.  The per-peer queue is bounded; when it is full, or the peer is
        down or unknown, the message is dropped and counted."""

    def check_address(self, address: str) -> None:
        """Raise ``ValueError`` (with the reason) if this transport could not
        use ``address`` for a peer.  The runtime checks every member address
        with it before proposing one, and before handing one to
        :meth:`set_peers`, so a bad address is refused or reported, never a
        crash."""

    def set_peers(self, peers: Mapping[NodeId, str]) -> None:
        """Replace the peer table: node id -> address ("host:port" for TCP).

        Messages to, and connections from, nodes not in the table are refused.
        The node's own id may appear in the table; it is ignored.
        """

    async def call(self, peer: NodeId, payload: bytes, timeout: float) -> bytes:
        """Send ``payload`` to ``peer`` (in the peer table), return the reply.

        Raises :class:`CallError` (unknown or unreachable peer, a full queue,
        a payload over the frame limit, the connection lost, the transport
        closed, or the remote handler raised) or ``TimeoutError`` after
        ``timeout`` seconds (a reply that comes later is ignored).  Never
        blocks the loop; many calls may be in flight at once.
        """
        ...

    async def call_address(self, address: str, payload: bytes, timeout: float) -> bytes:
        """Like :meth:`call`, to ``address`` (whose node id need not be known,
        and which need not know us) over a one-off connection that carries
        calls only.  For the memory transport the address is the node id."""
        ...

    async def close(self) -> None:
        """Close every connection and cancel every task of the transport.
        Pending calls fail with :class:`CallError`."""

    def stats(self) -> dict[str, Any]:
        """Counters.  ``stats()["peers"][peer]`` holds at least ``connected``,
        ``sent``, ``dropped`` and ``reconnects``."""
        ...


def parse_address(addr: str) -> tuple[str, int]:
    """Split ``"host:port"`` (or ``"[v6]:port"``) into host and port.

    Raises ``ValueError`` for anything else.
    """
    host, sep, port_s = addr.rpartition(":")
    if not sep or not host or not port_s.isdigit():
        raise ValueError(f"not a host:port address: {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"IPv6 addresses need brackets: {addr!r}")
    port = int(port_s)
    if port > 65535:
        raise ValueError(f"port out of range: {addr!r}")
    return host, port


def check_tcp_address(addr: str) -> None:
    """Raise ``ValueError`` unless ``addr`` is a "host:port" a socket can use:
    an IP address (IPv6 in brackets) or a host name the resolver can encode
    (letters, digits, "-", "_" and "." only; labels of at most 63 characters
    once IDNA-encoded), and a port of ASCII digits in 1..65535.  Anything else
    was accepted before and failed only when dialed, on every node ("a..b" or
    a long label is a UnicodeError from the resolver, not an OSError), or
    broke what shows it ("[/]:7000" is rich markup in the CLI)."""
    if not isinstance(addr, str):
        raise ValueError(f"an address must be a string, not {type(addr).__name__}")
    host, port = parse_address(addr)
    if not addr.rpartition(":")[2].isascii():
        raise ValueError(f"the port in {addr!r} is not ASCII digits")
    if addr.startswith("["):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"not an IP address in brackets: {addr!r}") from None
    else:
        try:
            if not all(ch.isalnum() or ch in "-_." for ch in host):
                raise ValueError
            host.encode("idna")
        except ValueError:  # UnicodeError is one
            raise ValueError(
                f"bad host in address {addr!r}: not an IP address or a host name"
            ) from None
    if port == 0:
        raise ValueError(f"port 0 in address {addr!r}: give the port the node listens on")


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def limit_reads(transport: asyncio.BaseTransport, size: int = 64 * 1024) -> None:
    """Make an asyncio connection read at most ``size`` bytes per ``recv``.

    asyncio reads into a fresh 256 KiB bytes object per read, over glibc's
    128 KiB mmap threshold: unless the heap happens to hold a free chunk that
    large, every read costs an mmap, page faults and a munmap (0.1 ms per
    write at 100 writes/s after issue 13; docs/transport.md, "Reads").  The
    TLS transport reads through its SSLProtocol; uvloop reads into its own
    buffer and has no such attribute (left alone).  ``max_size`` is not a
    documented attribute, so it is set only where it exists as an int.
    """
    for reads in (transport, getattr(transport, "_ssl_protocol", None)):
        if isinstance(getattr(reads, "max_size", None), int):
            reads.max_size = size  # type: ignore[union-attr]
