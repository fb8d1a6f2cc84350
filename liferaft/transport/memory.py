"""In-memory transport for runtime tests: deterministic, no sockets, no sleeping.

Theory of operation
-------------------
A :class:`MemoryNetwork` connects the :class:`MemoryTransport` of every node
in one event loop.  ``send`` decides a message's fate at once and, if it
travels, schedules its delivery with ``loop.call_soon``: delivery is
asynchronous (never re-entrant into the sender) yet needs no timers, so a
test advances the network with ``await network.settle()`` (or a few
``asyncio.sleep(0)``) and gets the same interleaving every run.

Faults are switches on the network, all reversible with :meth:`heal`:

* :meth:`partition` splits nodes into groups that cannot talk across;
* :meth:`isolate` cuts one node off from everyone;
* :meth:`cut` breaks one directed link (or both directions);
* :meth:`set_loss` drops a fraction of messages, drawn from a seeded
  ``random.Random`` (so a seed replays the same losses);
* :meth:`pause` holds every delivery in order until :meth:`resume`
  (:meth:`step` releases them one at a time).

A message is dropped if its link is down when it is sent *or* when it would
be delivered (a partition also loses what is in flight).  A message
dropped by a broken link or a missing node reports the peer unreachable to
the sender, like a failed TCP connection; random loss does not, like a lost
packet.

Snapshots are streamed as over TCP: every step pulls one chunk from the
sender's ``snapshot_source`` and writes it into the receiver's sink, one
``call_soon`` per chunk; at the end the sink is committed, the header message
(``snapshot.data == b""``) delivered and ``snapshot_status(True)`` reported.
A link that breaks mid-stream aborts the sink and reports ``False``.

Calls travel like messages (scheduled, held by a pause, in order with the
messages) but are never lost at random, as a TCP stream would not lose
them.  A link that is down when the call is made fails it with
:class:`CallError` at once; one that is down when the call or its reply
would arrive fails it then.  The receiver runs ``handle_call`` as a task
(not counted by :meth:`MemoryNetwork.settle`, since a handler may wait for
Raft traffic or timers) and its outcome travels back the same way.  A
reply to a caller that gave up is ignored.  ``call_address`` takes the
target's node id as the address.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from liferaft.core.messages import InstallSnapshot, Message, NodeId

from .base import CallError, CallNotSentError, SnapshotSink, TransportHandler

__all__ = ["MemoryNetwork", "MemoryTransport"]


class MemoryNetwork:
    """The wire between in-process transports, with switches for faults.

    ``seed`` seeds the generator of random loss.  Every method must be called
    on the event loop that runs the transports.
    """

    def __init__(self, seed: int = 0) -> None:
        self._nodes: dict[NodeId, MemoryTransport] = {}
        self._rng = random.Random(seed)
        self._groups: dict[NodeId, int] | None = None
        self._isolated: set[NodeId] = set()
        self._cut: set[tuple[NodeId, NodeId]] = set()
        self._loss = 0.0
        self._drop: Callable[[NodeId, Message], bool] | None = None
        self._paused = False
        self._held: deque[Callable[[], None]] = deque()
        self._scheduled = 0
        self.delivered = 0
        self.dropped = 0

    # -- membership -------------------------------------------------------------------

    def transport(self, node_id: NodeId) -> MemoryTransport:
        """Create the transport of ``node_id`` (replacing a closed one of that id)."""
        old = self._nodes.get(node_id)
        if old is not None and not old.closed:
            raise ValueError(f"node {node_id!r} already has an open transport")
        t = MemoryTransport(self, node_id)
        self._nodes[node_id] = t
        return t

    # -- switches ----------------------------------------------------------------------

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Only nodes in the same group can talk; nodes in no group talk to no one."""
        table: dict[NodeId, int] = {}
        for i, group in enumerate(groups):
            for nid in group:
                if nid in table:
                    raise ValueError(f"node {nid!r} is in two groups")
                table[nid] = i
        self._groups = table

    def isolate(self, node: NodeId) -> None:
        """Cut ``node`` off from every other node."""
        self._isolated.add(node)

    def rejoin(self, node: NodeId) -> None:
        """Undo :meth:`isolate` for ``node``."""
        self._isolated.discard(node)

    def cut(self, frm: NodeId, to: NodeId, both: bool = True) -> None:
        """Break the link ``frm -> to`` (and ``to -> frm`` if ``both``)."""
        self._cut.add((frm, to))
        if both:
            self._cut.add((to, frm))

    def mend(self, frm: NodeId, to: NodeId, both: bool = True) -> None:
        """Undo :meth:`cut`."""
        self._cut.discard((frm, to))
        if both:
            self._cut.discard((to, frm))

    def set_loss(self, rate: float) -> None:
        """Drop each message with probability ``rate`` (0 turns loss off)."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("loss rate must be within [0, 1]")
        self._loss = rate

    def drop_if(self, pred: Callable[[NodeId, Message], bool] | None) -> None:
        """Silently lose every Raft message ``m`` sent by ``frm`` for which
        ``pred(frm, m)`` is true (calls are not affected); None turns it off.
        For schedules that need, say, one leader's appends lost while its
        call replies still arrive."""
        self._drop = pred

    def heal(self) -> None:
        """Undo every partition, isolation, cut, loss and drop_if (not a pause)."""
        self._drop = None
        self._groups = None
        self._isolated.clear()
        self._cut.clear()
        self._loss = 0.0

    def pause(self) -> None:
        """Hold every delivery (and snapshot step) until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Release what :meth:`pause` held, in order, and deliver normally again."""
        self._paused = False
        while self._held:
            self._schedule(self._held.popleft())

    def step(self, n: int = 1) -> int:
        """While paused, release the ``n`` oldest held deliveries; returns how many."""
        released = 0
        while self._held and released < n:
            self._soon(self._held.popleft())
            released += 1
        return released

    @property
    def held(self) -> int:
        """Deliveries held by :meth:`pause`."""
        return len(self._held)

    @property
    def in_flight(self) -> int:
        """Deliveries scheduled on the loop and not yet run."""
        return self._scheduled

    def link_up(self, frm: NodeId, to: NodeId) -> bool:
        """Whether a message ``frm -> to`` can travel now (both nodes running)."""
        dst = self._nodes.get(to)
        src = self._nodes.get(frm)
        if dst is None or src is None or not dst.running or not src.running:
            return False
        if frm in self._isolated or to in self._isolated:
            return False
        if (frm, to) in self._cut:
            return False
        if self._groups is not None:
            g = self._groups.get(frm)
            if g is None or g != self._groups.get(to):
                return False
        return True

    async def settle(self, max_rounds: int = 10_000) -> None:
        """Yield to the loop until nothing is in flight (held messages stay held).

        Messages sent by handlers while settling are delivered too; raises
        ``RuntimeError`` if traffic does not stop within ``max_rounds`` yields.
        """
        for _ in range(max_rounds):
            if not self._scheduled:
                return
            await asyncio.sleep(0)
        raise RuntimeError("the memory network did not settle")

    # -- plumbing ---------------------------------------------------------------------

    def _schedule(self, fn: Callable[[], None]) -> None:
        if self._paused:
            self._held.append(fn)
        else:
            self._soon(fn)

    def _soon(self, fn: Callable[[], None]) -> None:
        """call_soon, counted by :attr:`in_flight` so :meth:`settle` waits for it."""
        self._scheduled += 1

        def run() -> None:
            self._scheduled -= 1
            fn()

        asyncio.get_running_loop().call_soon(run)

    def _route(self, src: MemoryTransport, msg: Message) -> None:
        frm, to = src.node_id, msg.to
        up = self.link_up(frm, to)
        lost = self._drop is not None and self._drop(frm, msg)
        if not up or lost or (self._loss and self._rng.random() < self._loss):
            # A broken link looks like a failed connection; random loss is silent.
            self.dropped += 1
            src._dropped(to, unreachable=not up)
            if isinstance(msg, InstallSnapshot):
                src._snapshot_done(to, False, count=False)
            return
        src._sent(to)
        if isinstance(msg, InstallSnapshot):
            self._schedule(_Stream(self, src, msg).begin)
        else:
            self._schedule(lambda: self._arrive(src, msg))

    def _arrive(self, src: MemoryTransport, msg: Message) -> None:
        if not self.link_up(src.node_id, msg.to):
            self.dropped += 1
            src._dropped(msg.to, unreachable=True)
            return
        self.delivered += 1
        self._nodes[msg.to]._deliver(msg)

    def _call(
        self, src: MemoryTransport, to: NodeId, payload: bytes, fut: asyncio.Future[bytes]
    ) -> None:
        """Send a call; raises :class:`CallError` if the link is down now."""
        if not self.link_up(src.node_id, to):
            raise CallNotSentError(f"node {to} is unreachable from {src.node_id}")
        self._schedule(lambda: self._call_arrive(src, to, payload, fut))

    def _call_arrive(
        self, src: MemoryTransport, to: NodeId, payload: bytes, fut: asyncio.Future[bytes]
    ) -> None:
        # Like a request already on the wire, it runs even if the caller gave up.
        if not self.link_up(src.node_id, to):
            _fail(fut, CallError(f"call to {to} lost: the link went down"))
            return
        self._nodes[to]._serve_call(src, payload, fut)

    def _reply(
        self,
        dst: MemoryTransport,
        src: MemoryTransport,
        fut: asyncio.Future[bytes],
        ok: bool,
        data: bytes,
    ) -> None:
        """Carry a call's outcome from ``dst`` (which served it) back to ``src``."""

        def arrive() -> None:
            if fut.done():  # the caller gave up: a late reply is ignored
                return
            if not self.link_up(dst.node_id, src.node_id):
                _fail(fut, CallError(f"the reply from {dst.node_id} was lost: the link went down"))
            elif ok:
                fut.set_result(data)
            else:
                fut.set_exception(CallError(f"remote error: {data.decode('utf-8', 'replace')}"))

        self._schedule(arrive)

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "dropped": self.dropped,
            "held": len(self._held),
            "in_flight": self._scheduled,
        }


class _Stream:
    """One snapshot moving chunk by chunk from a source to a sink."""

    def __init__(self, net: MemoryNetwork, src: MemoryTransport, msg: InstallSnapshot) -> None:
        self.net = net
        self.src = src
        self.msg = msg
        self.header = dataclasses.replace(msg, snapshot=dataclasses.replace(msg.snapshot, data=b""))
        self.source: Iterator[bytes] | None = None
        self.sink: SnapshotSink | None = None

    def begin(self) -> None:
        if not self.net.link_up(self.src.node_id, self.msg.to):
            self._fail()
            return
        dst = self.net._nodes[self.msg.to]
        try:
            assert self.src.handler is not None and dst.handler is not None
            self.source = iter(self.src.handler.snapshot_source(self.msg))
            self.sink = dst.handler.snapshot_sink(self.header)
        except Exception:
            self._fail()
            return
        self.net._schedule(self.step)

    def step(self) -> None:
        assert self.source is not None and self.sink is not None
        if not self.net.link_up(self.src.node_id, self.msg.to):
            self._fail()
            return
        try:
            chunk = next(self.source, None)
            if chunk is not None:
                self.sink.write(bytes(chunk))
                self.net._schedule(self.step)
                return
            self.sink.commit()
        except Exception:
            self._fail()
            return
        self.sink = None
        self._close_source()
        self.net.delivered += 1
        self.net._nodes[self.msg.to]._deliver(self.header)
        self.src._snapshot_done(self.msg.to, True)

    def _close_source(self) -> None:
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    def _fail(self) -> None:
        if self.sink is not None:
            sink, self.sink = self.sink, None
            sink.abort()
        if self.source is not None:
            self._close_source()
        self.net.dropped += 1
        self.src._snapshot_done(self.msg.to, False)


def _fail(fut: asyncio.Future[bytes], exc: CallError) -> None:
    if not fut.done():
        fut.set_exception(exc)


@dataclasses.dataclass
class _PeerCounters:
    sent: int = 0
    dropped: int = 0


class MemoryTransport:
    """A :class:`~liferaft.transport.base.Transport` over a :class:`MemoryNetwork`.

    Create it with :meth:`MemoryNetwork.transport`.  Addresses given to
    :meth:`set_peers` are not used; only the ids matter.
    """

    def __init__(self, network: MemoryNetwork, node_id: NodeId) -> None:
        self.network = network
        self.node_id = node_id
        self.handler: TransportHandler | None = None
        self.closed = False
        self._peers: dict[NodeId, str] = {}
        self._counters: dict[NodeId, _PeerCounters] = {}
        self._unknown_dropped = 0
        self._received = 0
        # Calls made here and waiting for a reply.
        self._pending: set[asyncio.Future[bytes]] = set()
        # handle_call tasks running here -> the caller's future.
        self._serving: dict[asyncio.Task[None], asyncio.Future[bytes]] = {}
        self._calls_served = 0

    @property
    def running(self) -> bool:
        return self.handler is not None and not self.closed

    async def start(self, handler: TransportHandler) -> None:
        if self.handler is not None or self.closed:
            raise RuntimeError("transport already started or closed")
        self.handler = handler

    def check_address(self, address: str) -> None:
        """An address here is a node id: any non-empty string."""
        if not isinstance(address, str) or not address:
            raise ValueError(f"not a node id: {address!r}")

    def set_peers(self, peers: Mapping[NodeId, str]) -> None:
        self._peers = {pid: a for pid, a in peers.items() if pid != self.node_id}
        for pid in self._peers:
            self._counters.setdefault(pid, _PeerCounters())

    def send(self, msg: Message) -> None:
        if not self.running:
            self._unknown_dropped += 1
            return
        if msg.to not in self._peers:
            self._unknown_dropped += 1
            self._later(lambda h: h.unreachable(msg.to))
            if isinstance(msg, InstallSnapshot):
                self._snapshot_done(msg.to, False, count=False)
            return
        self.network._route(self, msg)

    async def call(self, peer: NodeId, payload: bytes, timeout: float) -> bytes:
        """Call ``peer`` (in the peer table); see the module docstring."""
        self._check_call()
        if peer not in self._peers:
            raise CallNotSentError(f"unknown peer {peer!r}")
        return await self._call(peer, payload, timeout)

    async def call_address(self, address: str, payload: bytes, timeout: float) -> bytes:
        """Call the node whose id is ``address``, known to us or not."""
        self._check_call()
        return await self._call(address, payload, timeout)

    def _check_call(self) -> None:
        if self.closed:
            raise CallNotSentError("the transport is closed")
        if self.handler is None:
            raise CallNotSentError("the transport is not started")

    async def _call(self, to: NodeId, payload: bytes, timeout: float) -> bytes:
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.network._call(self, to, bytes(payload), fut)
        self._pending.add(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            self._pending.discard(fut)

    def _serve_call(self, src: MemoryTransport, payload: bytes, fut: asyncio.Future[bytes]) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run_call(src, payload, fut), name=f"liferaft-call-{src.node_id}->{self.node_id}"
        )
        self._serving[task] = fut
        task.add_done_callback(lambda t: self._serving.pop(t, None))

    async def _run_call(
        self, src: MemoryTransport, payload: bytes, fut: asyncio.Future[bytes]
    ) -> None:
        assert self.handler is not None
        known = src.node_id in self._peers
        try:
            result = await self.handler.handle_call(src.node_id, payload, known)
            if not isinstance(result, bytes | bytearray | memoryview):
                raise TypeError(f"handle_call returned {type(result).__name__}, not bytes")
            ok, data = True, bytes(result)
        except Exception as e:
            ok, data = False, f"{type(e).__name__}: {e}".encode("utf-8", "replace")
        self._calls_served += 1
        self.network._reply(self, src, fut, ok, data)

    async def close(self) -> None:
        """Stop; pending calls made here, and calls being served here, fail
        with :class:`CallError`."""
        if self.closed:
            return
        self.closed = True
        for fut in list(self._pending):
            _fail(fut, CallError("the transport is closed"))
        tasks = list(self._serving)
        for task, caller in list(self._serving.items()):
            _fail(caller, CallError(f"node {self.node_id} closed while serving the call"))
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def stats(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "peers": {
                pid: {
                    "connected": self.network.link_up(self.node_id, pid),
                    "sent": c.sent,
                    "dropped": c.dropped,
                    "reconnects": 0,
                }
                for pid, c in self._counters.items()
                if pid in self._peers
            },
            "received": self._received,
            "unknown_dropped": self._unknown_dropped,
            "calls_pending": len(self._pending),
            "calls_served": self._calls_served,
        }

    # -- called by the network ------------------------------------------------------------

    def _later(self, fn: Callable[[TransportHandler], object]) -> None:
        """Call the handler soon (never re-entrantly from send), unless closed by then."""

        def run() -> None:
            if self.running:
                assert self.handler is not None
                fn(self.handler)

        self.network._soon(run)

    def _sent(self, to: NodeId) -> None:
        self._counters[to].sent += 1

    def _dropped(self, to: NodeId, unreachable: bool) -> None:
        c = self._counters.get(to)
        if c is not None:
            c.dropped += 1
        if unreachable:
            self._later(lambda h: h.unreachable(to))

    def _snapshot_done(self, to: NodeId, ok: bool, count: bool = True) -> None:
        if not ok and count:
            self._dropped(to, unreachable=False)
        self._later(lambda h: h.snapshot_status(to, ok))

    def _deliver(self, msg: Message) -> None:
        if self.running:
            assert self.handler is not None
            self._received += 1
            self.handler.deliver(msg)

    def __repr__(self) -> str:
        return f"MemoryTransport({self.node_id!r})"
