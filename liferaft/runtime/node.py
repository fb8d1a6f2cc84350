"""The running node: a facade over parts that each own one thing.

Theory of operation
-------------------
:class:`Node` builds its parts, wires them, and keeps the public API; it
holds no state of its own beyond its arguments.  The parts, each one owner
with a narrow interface (docs/architecture.md, "Who owns what"):

* :class:`~liferaft.runtime.loop.RaftLoop` owns the Raft core and the store:
  the one task that steps, persists, sends and advances, and runs every
  storage operation (persist, snapshot adoption, compaction) one at a time;
* :class:`~liferaft.runtime.proposals.ProposalTracker`: writes from
  submission to outcome (the queue, waiters by index, deadlines, recent
  results);
* :class:`~liferaft.runtime.router.Router`: the slow path of a write, to the
  leader over the peer RPC, and the wait for the local apply;
* :class:`~liferaft.runtime.reads.ReadBatcher`: ReadIndex rounds shared by
  the readers that arrive together;
* :class:`~liferaft.runtime.membership.Membership`: the member table, its
  changes and the transport's peer table;
* :class:`~liferaft.runtime.applier.Applier`: the state machine: applies
  entries in batches, settles outcomes, restores and takes snapshots.

A proposal resolves with what the state machine's ``apply`` returned for its
index, or fails with :class:`DroppedError` if a different term's entry was
applied there; a follower forwards it to the leader and waits for its *own*
apply of that index (docs/runtime.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from liferaft.core import (
    ConfChange,
    Config,
    InstallSnapshot,
    Message,
    RawNode,
    ReadOnlyOption,
    Role,
)
from liferaft.storage import DiskStorage
from liferaft.transport.base import SnapshotSink, Transport

from . import checkpoint
from .applier import Applier
from .apply_events import ApplyFeed, ApplyStream
from .clock import Clock, SystemClock
from .config import NodeConfig, NodeStatus, PeerInfo
from .errors import (
    BadConfigError,
    NodeError,
    StoppedError,
)
from .events import Event, EventBus, EventType
from .identity import one_identity, one_state_machine
from .leader_calls import LeaderCalls
from .leadership import transfer_leadership
from .loop import Hooks, RaftLoop
from .membership import Membership, check_member
from .metrics import NodeMetrics
from .peer_server import serve_call
from .peer_status import Extra, PeerStatus
from .proposals import ProposalTracker, _Prop
from .reads import ReadBatcher
from .router import Router
from .snapshotter import Snapshotter
from .statemachine import StateMachine
from .store import DiskStore, MemStore, Store

__all__ = ["Node", "NodeConfig", "NodeStatus", "PeerInfo"]

log = logging.getLogger("liferaft.runtime")
T = TypeVar("T")


class Node:
    """A Raft node: drives the core over storage and a transport.

    The node id and cluster id are given once, in ``config``
    (``NodeConfig(id=..., cluster_id=...)``): the node hands them to a
    transport built without them (``TcpTransport(listen_addr=...)``; see
    :func:`~liferaft.runtime.identity.one_identity`).  A transport that has
    its own must agree, or the constructor raises :class:`BadConfigError`
    naming both values, rather than leaving the mismatch to show as refused
    handshakes later.

    ``state_machine`` is one state machine, or a list (or a mapping of
    names) of several: each then gets its own section of the log and of the
    snapshots (:class:`~liferaft.runtime.composite.Composite`).

    ``initial_members`` ({id: peer address}) bootstraps a brand-new cluster
    when the storage is empty and is ignored otherwise.  A node started empty
    without it waits to be added by the cluster (see :meth:`join`).
    """

    def __init__(
        self,
        config: NodeConfig,
        state_machine: StateMachine | Sequence[StateMachine] | Mapping[str, StateMachine],
        transport: Transport,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        store: Store | None = None,
        initial_members: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        registry: Any = None,
    ) -> None:
        if not isinstance(config, NodeConfig):
            raise BadConfigError("config must be a NodeConfig")
        config.validate()
        config = one_identity(config, transport)
        if data_dir is not None and store is not None:
            raise BadConfigError("give data_dir or store, not both")
        sm = one_state_machine(state_machine)
        if initial_members is not None and config.id not in initial_members:
            raise BadConfigError(f"initial_members must include this node ({config.id})")
        self.config = config
        self.id = config.id
        self.sm = sm
        self.transport = transport
        self.clock: Clock = clock or SystemClock()
        self.events = EventBus()
        self._data_dir = data_dir
        self._store_arg = store
        self._initial = dict(initial_members) if initial_members else None
        self._rng = random.Random(config.seed)
        self.loop = RaftLoop(self.id, config, self.clock, transport, self._emit)
        self.proposals = ProposalTracker(self._reroute, config.tick_interval)
        self.router = Router(
            self.loop, self.proposals, transport, self.clock, config, lambda: self.applied
        )
        self.reads = ReadBatcher(self.loop, self.clock)
        self.membership = Membership(
            self.loop, self.router, transport, self.clock, config, self._emit
        )
        self._apply_feed = ApplyFeed()
        self.applier = Applier(
            sm, self.loop, self.proposals, self.membership, self.reads, config,
            self._emit, self._apply_feed,
        )  # fmt: skip
        self.snapshotter = Snapshotter(
            self.applier, self.loop, self.membership, config, self._emit
        )
        self.leader_calls = LeaderCalls(self.loop, transport, self.clock, config)
        self.peer_states = PeerStatus(self.id, self.status, transport)
        #: The runtime's metrics, on ``registry`` (a prometheus_client
        #: CollectorRegistry) when one is given: docs/operations.md, "Metrics".
        self.metrics: NodeMetrics | None = None
        self._loop_hooks: Hooks | None = None
        if registry is not None:
            self.enable_metrics(registry)

    # -- what the parts own, as attributes of the node ----------------------------------

    @property
    def rn(self) -> RawNode | None:
        """The Raft core (owned by the loop; None before :meth:`start`)."""
        return self.loop.rn

    @property
    def store(self) -> Store | None:
        """The storage (owned by the loop; None before :meth:`start`)."""
        return self.loop.store

    @property
    def applied(self) -> int:
        """The last index applied to the state machine."""
        return self.applier.applied

    @property
    def members(self) -> dict[str, dict[str, Any]]:
        """The member table: id -> {"addr": peer address, ...}."""
        return self.membership.members

    @property
    def bad_peer_addresses(self) -> dict[str, str]:
        """Members whose address the transport cannot use: id -> why."""
        return self.membership.bad_peer_addresses

    @property
    def crashed(self) -> asyncio.Event:
        """Set if the node task died of an unexpected error: the node no
        longer runs Raft, and its process should exit (liferaft serve does)."""
        return self.loop.crashed

    @property
    def running(self) -> bool:
        """Started and not stopping."""
        return self.loop.running

    @property
    def data_dir(self) -> str | os.PathLike[str] | None:
        """Where this node keeps its state (None for an in-memory store)."""
        return self._data_dir

    @property
    def is_leader(self) -> bool:
        return self.rn is not None and self.rn.role is Role.LEADER

    @property
    def leader(self) -> str | None:
        return self.rn.leader if self.rn is not None else None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the storage, restore the state machine, join the network."""
        if self.loop.started:
            raise NodeError("node already started")
        if self._initial is not None:
            for nid, addr in self._initial.items():
                check_member(self.transport, nid, addr)
        self.loop.started = True
        store = await self._open_store()
        restarted = not store.is_empty()
        try:
            self.applier.check_durable(store)
            if store.is_empty() and self._initial is not None:
                book = {nid: {"addr": addr} for nid, addr in self._initial.items()}
                self.loop.bootstrap(
                    store, list(self._initial), self.applier.initial_snapshot(book)
                )
            meta = store.snapshot_meta()
            if meta.index:
                self.applier.restore_from(store, meta)
        except BadConfigError:
            if self._store_arg is None:
                store.close()  # ours: opened for nothing
            raise
        cfg = Config(
            id=self.id,
            election_tick=self.config.election_ticks,
            heartbeat_tick=self.config.heartbeat_ticks,
            rng=random.Random(self._rng.random()),
            pre_vote=self.config.pre_vote,
            check_quorum=self.config.check_quorum,
            read_only=ReadOnlyOption.LEASE_BASED
            if self.config.lease_reads
            else ReadOnlyOption.SAFE,
            # The core starts at the snapshot even when a durable state
            # machine holds more: it replays the membership changes after it
            # (the applier hands those entries to membership only).
            applied=self.applier.snap_index,
            # A lease needs every follower's promise kept across its restarts.
            quiet_after_start=self.config.lease_reads and restarted,
        )
        rn = RawNode(cfg, store.reader)
        self._loop_hooks = self._hooks()
        self.loop.attach(rn, store, self._loop_hooks)
        if self.metrics is not None:
            self._attach_metrics()
        self.membership.update_peers()
        attach = getattr(self.sm, "attach", None)
        if callable(attach):
            attach(self)
        await self.transport.start(self)
        self.loop.run()
        log.info("node %s started (term %d, applied %d)", self.id, rn.term, self.applied)

    async def _open_store(self) -> Store:
        if self._store_arg is not None:
            return self._store_arg
        if self._data_dir is None:
            return MemStore()
        path = self._data_dir
        disk = await asyncio.get_running_loop().run_in_executor(
            None, lambda: DiskStorage(path, snapshot_data_in_memory=False)
        )
        return DiskStore(disk)

    def enable_metrics(self, registry: Any) -> NodeMetrics:
        """Export the runtime's metrics on ``registry`` (a prometheus_client
        ``CollectorRegistry``), before or after :meth:`start`; once: a second
        call returns the metrics already kept."""
        if self.metrics is None:
            self.metrics = NodeMetrics(self, registry)
            if self._loop_hooks is not None:
                self._attach_metrics()
        return self.metrics

    def _attach_metrics(self) -> None:
        m, hooks = self.metrics, self._loop_hooks
        assert m is not None and hooks is not None
        m.attach_store()
        self.loop.peer_rtt = m.rtt
        if self.applier.off_loop:
            # The loop only hands batches over: time the state machine's calls.
            self.applier.batch_seconds = m.apply_duration.observe
        else:
            hooks.apply = m.timed_apply(hooks.apply)

    def _hooks(self) -> Hooks:
        tracker, applier, config = self.proposals, self.applier, self.config
        loop, clock, snapshotter = self.loop, self.clock, self.snapshotter

        def propose(rn: RawNode) -> None:
            if tracker.queue:
                tracker.propose_batch(
                    rn,
                    now=clock.wall(),
                    storage_ok=loop.storage_ok,
                    max_batch=config.max_batch,
                    entry_format=applier.entry_format,
                )

        def after_ready(last_index: int) -> None:
            # Only a Ready that applied or installed something (last_index
            # > 0) can move the applier's configuration point; most Readies
            # (acks, heartbeats) do not, and this runs after every one.
            if last_index:
                assert loop.rn is not None
                applier.after_ready(loop.rn, last_index)
            snapshotter.after_ready()

        reads = self.reads

        def tick(now: float) -> None:
            tracker.expire(now)
            reads.tick(now)

        return Hooks(
            propose=propose,
            apply=applier.apply,
            install=applier.install,
            read_states=applier.read_states,
            after_ready=after_ready,
            storage_failed=tracker.fail_queued,
            tick=tick,
            writes_in_flight=tracker.in_flight,
        )

    async def stop(self) -> None:
        """Stop the node: pending operations fail with :class:`StoppedError`."""
        if self.loop.stopping:
            return
        await self.loop.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.applier.close()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.snapshotter.wait()
        with contextlib.suppress(Exception):
            await self.transport.close()
        err = StoppedError(f"node {self.id} stopped")
        self.proposals.stop(self.id)
        self.membership.stop(err)
        self.reads.stop(err)
        self.events.close()
        self.loop.close_store()
        log.info("node %s stopped", self.id)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- proposals ---------------------------------------------------------------------

    async def propose(
        self, data: bytes, *, stamp_time: bool = False, timeout: float | None = None
    ) -> Any:
        """Replicate ``data``; returns what the state machine's ``apply`` returned.

        Works on any node: a follower forwards to the leader.  Raises
        :class:`NotLeaderError` (no leader reachable; nothing proposed),
        :class:`NodeTimeoutError` (outcome unknown), :class:`DroppedError`,
        :class:`StorageFailedError` or :class:`StoppedError`.  ``stamp_time``: the
        leader writes its wall clock into ``data[0:8]`` (see statemachine.py).
        """
        return await self.submit(data, stamp_time=stamp_time, timeout=timeout)

    def submit(
        self, data: bytes, *, stamp_time: bool = False, timeout: float | None = None
    ) -> asyncio.Future[Any]:
        """:meth:`propose` without a coroutine: returns a future of the result
        at once (hashicorp/raft's ``Apply`` returns an ApplyFuture likewise).
        Many writes in flight then cost one future each, and no task.
        Cancelling the future before the entry is proposed withdraws it."""
        if not isinstance(data, bytes | bytearray | memoryview) or not data:
            raise BadConfigError("data must be non-empty bytes")
        if stamp_time and len(data) < 8:
            raise BadConfigError("stamp_time needs at least 8 bytes of data to overwrite")
        loop = self.loop
        if loop.stopping or not loop.started:
            loop.check_running()
        t = self.config.commit_timeout if timeout is None else timeout
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        p = _Prop(bytes(data), stamp_time, fut, self.clock.monotonic() + t)
        rn = loop.rn
        assert rn is not None
        if rn.role is Role.LEADER and loop.storage_ok:
            self.proposals.enqueue(p)
            loop.wake()
        else:
            self._reroute(p)
        return fut

    def _reroute(self, p: _Prop) -> None:
        self.router.reroute(p)

    # -- membership --------------------------------------------------------------------

    async def change_membership(
        self, cc: ConfChange, timeout: float | None = None, *, check: bool = True
    ) -> None:
        """Propose a raw membership change and wait until it is applied here
        (see :meth:`Membership.change_membership`)."""
        await self.membership.change_membership(cc, timeout, check=check)

    async def add_learner(self, node_id: str, addr: str, **info: Any) -> None:
        """Add a non-voting member that receives the log (etcd's learner)."""
        await self.membership.add_learner(node_id, addr, **info)

    async def promote(self, node_id: str) -> None:
        """Make a caught-up learner a voter (refused while it lags)."""
        await self.membership.promote(node_id)

    async def remove(self, node_id: str) -> None:
        """Remove a member (a removed leader steps down once it is applied)."""
        await self.membership.remove(node_id)

    async def add_voter(
        self, node_id: str, addr: str, catch_up_timeout: float = 30.0, **info: Any
    ) -> None:
        """Add a voter safely: as a learner first, promoted once caught up."""
        await self.membership.add_voter(node_id, addr, catch_up_timeout, **info)

    async def replace(
        self, old: str, new: str, addr: str, catch_up_timeout: float = 30.0, **info: Any
    ) -> None:
        """Swap ``old`` for ``new`` in one joint-consensus step (thesis §4.3),
        after ``new`` has caught up as a learner."""
        await self.membership.replace(old, new, addr, catch_up_timeout, **info)

    async def set_member_info(self, timeout: float | None = None, **info: Any) -> None:
        """Record ``info`` (e.g. ``client_addr``) in this node's own address
        book entry, through the leader; returns once applied here."""
        await self.membership.set_member_info(timeout, **info)

    async def join(
        self, contact: str, addr: str, voter: bool = True, timeout: float = 30.0
    ) -> None:
        """Ask a running cluster, through any member's address, to add this
        (empty) node; returns once the cluster has accepted it."""
        await self.membership.join(contact, addr, voter, timeout)

    # -- snapshots ----------------------------------------------------------------------

    async def snapshot(self) -> int:
        """Take a snapshot now (unless one is running); returns its index."""
        self.loop.check_running()
        return await self.snapshotter.snapshot()

    def apply_stream(self, maxlen: int = 1024) -> ApplyStream:
        """Every batch this node applies from now on, in order
        (liferaft/runtime/apply_events.py): :class:`AppliedBatch` items, a
        :class:`Restored` when a snapshot replaced the state, a
        :class:`Lagged` when this subscriber fell ``maxlen`` items behind.
        Ends when the node stops (or the stream is closed)."""
        return self._apply_feed.subscribe(maxlen)

    # -- TransportHandler ---------------------------------------------------------------

    def deliver(self, msg: Message) -> None:
        self.loop.deliver(msg)

    def unreachable(self, peer: str) -> None:
        rn = self.rn
        if rn is not None and not self.loop.stopping:
            self.loop.call(lambda: rn.report_unreachable(peer))

    def snapshot_source(self, msg: InstallSnapshot) -> Iterator[bytes]:
        # The snapshot's own file, not the WAL: streamed while the loop runs.
        # A deferred one (the store is the snapshot) is sent as a copy of
        # the store, made as the follower reads it (liferaft/runtime/checkpoint.py).
        assert self.store is not None
        return checkpoint.outgoing(self.store.snapshot_chunks(msg.snapshot.meta), self.sm)

    def snapshot_sink(self, msg: InstallSnapshot) -> SnapshotSink:
        assert self.store is not None
        return self.store.receive(msg.snapshot.meta)

    def snapshot_status(self, peer: str, ok: bool) -> None:
        rn = self.rn
        if rn is not None and not self.loop.stopping:
            self.loop.call(lambda: rn.report_snapshot(peer, not ok))

    async def handle_call(self, frm: str, payload: bytes, known_peer: bool) -> bytes:
        """Requests from other nodes (liferaft/runtime/peer_server.py):
        forwarded proposals, membership changes and leader calls, and joins."""
        return await serve_call(
            frm, payload, known_peer, self.router, self.membership, self, self.leader_calls,
            self.peer_states,
        )  # fmt: skip

    # -- reads --------------------------------------------------------------------------

    async def read_index(self, timeout: float | None = None, *, lease: bool = False) -> int:
        """A linearizable read index (thesis §6.4), once this node has applied
        it: any read of local state after this returns is linearizable.
        ``lease=True`` accepts an answer from the leader's lease without a
        heartbeat round (§6.4.1; it assumes bounded clock drift), which only
        a cluster configured with ``lease_reads`` gives."""
        self.loop.check_running()
        t = self.config.read_timeout if timeout is None else timeout
        return await self.reads.read_index(t, lease=lease)

    async def read(
        self,
        fn: Callable[[], T],
        *,
        consistency: str = "linearizable",
        timeout: float | None = None,
    ) -> T:
        """Run ``fn`` on local state: ``linearizable`` (after a ReadIndex round),
        ``lease`` (served without the heartbeat round when the cluster allows
        lease reads, ``NodeConfig.lease_reads``, and the lease holds; else the
        same as linearizable) or ``stale`` (right away, from whatever this
        node has applied)."""
        if consistency == "stale":
            self.loop.check_running()
            return fn()
        if consistency not in ("linearizable", "lease"):
            raise BadConfigError(f"unknown consistency {consistency!r}")
        await self.read_index(timeout, lease=consistency == "lease")
        return fn()

    async def wait_applied(self, index: int, timeout: float | None = None) -> None:
        """Wait until this node has applied ``index``."""
        t = self.config.read_timeout if timeout is None else timeout
        await self.reads.wait_applied(index, t, self.applied)

    # -- leader calls -------------------------------------------------------------------

    def on_call(self, name: str, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        """Register ``handler`` as the leader call ``name`` (do it on every
        node, before :meth:`start`: any of them may lead).  See
        liferaft/runtime/leader_calls.py."""
        self.leader_calls.on_call(name, handler)

    async def call_leader(
        self, name: str, payload: bytes, *, timeout: float | None = None
    ) -> bytes:
        """Run the leader's handler ``name`` on ``payload`` (here if this node
        leads, else over the peer RPC); what it returned.  Raises
        :class:`NotLeaderError` (no leader ran it in time), :class:`UnknownCallError`,
        :class:`CallFailedError` (the handler raised) or :class:`NodeTimeoutError`
        (outcome unknown).  ``timeout`` defaults to ``commit_timeout``."""
        return await self.leader_calls.call(name, payload, timeout)

    # -- status of other members (liferaft/runtime/peer_status.py) ----------------------

    def on_status(self, extra: Extra) -> None:
        """Add ``extra()`` (a small map of the application's counters) to
        the state this node reports to :meth:`peer_status` callers."""
        self.peer_states.on_status(extra)

    async def peer_status(self, node_id: str, timeout: float = 1.0) -> dict[str, Any]:
        """Member ``node_id``'s own state, asked over the peer RPC (this
        node's, with its extra, without a call): role, term, leader, the
        indices, ``storage_ok`` and ``extra``.  NodeTimeoutError,
        PeerUnreachableError or UnknownCallError (an older build) if it
        cannot be had."""
        st = await self.peer_states.ask(node_id, timeout)
        return {f: getattr(st, f) for f in st.__struct_fields__}

    # -- leadership ---------------------------------------------------------------------

    async def transfer_leadership(self, to: str | None = None, timeout: float | None = None) -> str:
        """Hand leadership to ``to`` (or the most caught-up voter); returns the
        new leader once it has taken over."""
        return await transfer_leadership(self.loop, to, timeout)

    # -- introspection ------------------------------------------------------------------

    def status(self) -> NodeStatus:
        rn = self.rn
        if rn is None:
            raise StoppedError("node not started")
        st = rn.status()
        peers = {
            nid: PeerInfo(
                p.match, max(0, st.last_index - p.match), p.state.value, p.learner, p.recent_active
            )
            for nid, p in st.progress.items()
        }
        cs = st.conf_state
        return NodeStatus(
            id=self.id,
            role=st.role.value,
            term=st.term,
            leader=st.leader,
            commit_index=st.commit,
            applied_index=self.applied,
            last_log_index=st.last_index,
            snapshot_index=self.applier.snap_index,
            members={k: dict(v) for k, v in self.members.items()},
            voters=sorted(cs.voters | cs.voters_outgoing),
            learners=sorted(cs.learners | cs.learners_next),
            peers=peers,
            storage_ok=self.loop.storage_ok,
            bad_peer_addresses=dict(self.bad_peer_addresses),
        )

    def _emit(self, kind: EventType, value: Any = None, **detail: Any) -> None:
        rn = self.loop.rn
        self.events.emit(Event(kind, value, rn.term if rn is not None else 0, detail))
