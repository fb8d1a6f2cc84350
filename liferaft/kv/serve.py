"""Run one liferaft-kv node: the Raft node, its peer transport and the HTTP
API, until SIGTERM or SIGINT.  ``liferaft serve`` (liferaft/cli/serve.py)
parses the flags into :class:`ServeOptions` and calls :func:`serve`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from liferaft.runtime import Node, NodeConfig, NodeError
from liferaft.transport import TcpTransport
from liferaft.transport.base import CallError, parse_address

from . import adopt
from .advertise import is_wildcard, same_address
from .compactor import CompactionPolicy
from .identity import IdentityError, adopted_id, check_identity, record_identity
from .listener import (
    ClientLimits,
    ClientListener,
    connection_cap,
    raise_nofile_limit,
    start_client_listener,
)
from .logs import NodeContext, setup_logging
from .machine import KVMachine
from .metrics import new_registry
from .mvcc import StoreFormatError
from .rebuild import EpochKeeper, RebuildError, check_data_dir, force_new_cluster
from .server import FrontEnd, KVServer
from .service import (
    DEFAULT_MAX_LIST_BYTES,
    DEFAULT_MAX_VALUE,
    DEFAULT_PROGRESS_INTERVAL,
    KVService,
)

log = logging.getLogger("liferaft.kv")


class ServeError(Exception):
    """A startup problem, reported as one line (never a traceback)."""


@dataclass
class ServeOptions:
    """What ``liferaft serve`` runs with.  ``peer_addr`` and ``client_addr``
    are the *advertised* addresses (what others dial, what the address book
    and status hold); the ``listen_*`` ones are what the sockets bind, the
    advertised ones when empty (docs/deploy.md, "Listen and advertise
    addresses")."""

    id: str
    data_dir: Path
    peer_addr: str
    client_addr: str
    #: The --id given, when the node runs under another id: one etcd's
    #: MemberAdd made up for it (liferaft/kv/adopt.py).  Set by serve().
    name: str = ""
    listen_peer_addr: str = ""
    listen_client_addr: str = ""
    grpc_addr: str = ""  # etcd's gRPC API, advertised ("": not served; docs/etcd.md)
    listen_grpc_addr: str = ""
    initial_cluster: dict[str, str] = field(default_factory=dict)
    join: list[str] = field(default_factory=list)  # client URLs of running members
    #: Make this node the only member, keeping its data (kv/rebuild.py).
    force_new_cluster: bool = False
    cluster_id: str = "liferaft"
    token: str | None = None
    election_timeout: float = 1.0
    heartbeat_interval: float = 0.1
    snapshot_entries: int = 10_000
    settle_delay: float = 0.1  # NodeConfig.settle_delay (--settle-delay, in ms)
    lease_reads: bool = False  # as NodeConfig: one decision, docs/runtime.md "Lease reads"
    max_value: int = DEFAULT_MAX_VALUE
    request_timeout: float = 5.0
    peer_secret: bytes | None = None  # the cluster secret peers prove (--peer-secret-file)
    peer_ssl_server: ssl.SSLContext | None = None
    peer_ssl_client: ssl.SSLContext | None = None
    client_ssl: ssl.SSLContext | None = None
    # The same certificate, key and CA as files: gRPC (etcd's API) takes PEM
    # bytes, not an SSLContext, and serves TLS exactly when the client port does.
    client_tls_files: tuple[str, str, str | None] | None = None
    client_limits: ClientLimits = field(default_factory=ClientLimits)
    max_list_bytes: int = DEFAULT_MAX_LIST_BYTES
    watch_progress_interval: float = DEFAULT_PROGRESS_INTERVAL  # docs/kv.md, Watch
    access_log: bool = False  # one log line per client request (docs/operations.md, "Logs")
    compaction: CompactionPolicy = field(default_factory=CompactionPolicy)  # docs/kv.md

    @property
    def peer_listen(self) -> str:
        return self.listen_peer_addr or self.peer_addr

    @property
    def grpc_listen(self) -> str:
        return self.listen_grpc_addr or self.grpc_addr

    @property
    def client_listen(self) -> str:
        return self.listen_client_addr or self.client_addr


def has_data(data_dir: Path) -> bool:
    """True if ``data_dir`` already holds a node's state."""
    if (data_dir / "hardstate").exists():
        return True
    for sub in ("wal", "snap"):
        d = data_dir / sub
        if d.is_dir() and any(d.iterdir()):
            return True
    return False


def open_machine(data_dir: Path, fresh: bool, ours: bool = False) -> KVMachine:
    """The node's store, in ``DATA_DIR/kv``.  A data dir with Raft state but
    no store was written by a build with the in-memory store (refused, since
    its entries and snapshots are in a format this build does not apply), or
    lost its store: ``ours`` (the dir's identity was recorded by this build,
    :mod:`.identity`) tells which."""
    kv_dir = data_dir / "kv"
    if not fresh and not kv_dir.exists() and ours:
        raise ServeError(
            f"{kv_dir}/ (this node's store) is missing: deleted or moved (this build "
            "does not rebuild it from the Raft log); put it back, or remove the member "
            "and rejoin it on an empty --data-dir "
            '(docs/kv.md, "The data dir")'
        )
    if not fresh and not kv_dir.exists():
        raise ServeError(
            f"{data_dir} holds a node of an earlier liferaft-kv (the in-memory store), "
            "which this build cannot open, or one whose kv/ store was deleted: copy the "
            'keys into a new cluster (docs/kv.md, "Upgrading from the in-memory store")'
        )
    try:
        return KVMachine(kv_dir)
    except StoreFormatError as exc:
        raise ServeError(str(exc)) from exc


def node_config(o: ServeOptions) -> NodeConfig:
    """Timing flags into ticks: a tick of half the heartbeat, at most 50 ms."""
    tick = min(0.05, o.heartbeat_interval / 2)
    hb = max(1, round(o.heartbeat_interval / tick))
    election = max(hb + 1, round(o.election_timeout / tick))
    return NodeConfig(
        id=o.id,
        cluster_id=o.cluster_id,
        tick_interval=tick,
        election_ticks=election,
        heartbeat_ticks=hb,
        snapshot_entries=o.snapshot_entries,
        settle_delay=o.settle_delay,
        lease_reads=o.lease_reads,
        commit_timeout=o.request_timeout,
        read_timeout=o.request_timeout,
        # The store's small batch costs about one fsync, as the WAL's inline
        # persist: a write alone skips the apply thread's two hops.
        inline_apply_entries=16,
    )


async def _members_of(
    http: aiohttp.ClientSession, url: str, token: str | None
) -> list[dict[str, Any]]:
    """``GET url/v1/members``: a running member's list of members."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url.rstrip("/") + "/v1/members", headers=headers) as r:
        if r.status == 401:
            raise ServeError(f"--join {url}: unauthorized (check --token-file)")
        body = await r.json()
    return [dict(m) for m in body["members"]]


async def _adopt(o: ServeOptions) -> ServeOptions:
    """Before a joining node is built: if the cluster holds a member that
    etcd's MemberAdd recorded at this node's peer address, run under its id,
    keeping ``--id`` as the name (liferaft/kv/adopt.py).  A member that does
    not answer is skipped; :func:`_join` reports it if none does."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for url in o.join:
            try:
                members = await _members_of(http, url, o.token)
            except ServeError:
                raise
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError, TypeError):
                continue
            got = adopt.pick(members, o.peer_addr, lambda a, b: same_address(a, b)[0])
            if got is not None and got != o.id:
                log.warning(
                    "the cluster added a member at %s (etcd MemberAdd): running as its id %s, "
                    "named %s", o.peer_addr, got, o.id,
                )  # fmt: skip
                o = dataclasses.replace(o, id=got, name=o.id)
            refuse_lost_voter(members, o.id)
            return o
    return o


def refuse_lost_voter(members: list[dict[str, Any]], node_id: str) -> None:
    """A node on an empty data dir must not join as a voter the cluster
    already has: that voter's vote and log were on the data dir that is
    gone, and coming back without them under its id can elect two leaders
    in one term or lose an entry it acknowledged (the Raft thesis, 3.6;
    etcd refuses it too).  A learner's acks and votes never count: one may
    come back empty (a member MemberAdd recorded is adopted that way)."""
    if any(m.get("id") == node_id and m.get("voter") for m in members):
        raise ServeError(
            f"{node_id} is already a voter of this cluster, and {node_id}'s data dir is "
            f"empty: a voter that lost its data must not come back under its id. Remove it "
            f"first (liferaft members remove {node_id}, or etcdctl member remove), then "
            "join again, or join under a new --id"
        )


async def _join(node: Node, o: ServeOptions) -> None:
    """Find a member's peer address through its HTTP API, then ask the
    cluster (through that member) to add us; retried for a minute.  A
    member MemberAdd recorded (``o.name`` set) stays in the role it was
    given: its promotion is the etcd front's (liferaft/etcd/cluster.py)."""
    last = "no answer"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while loop.time() < deadline:
            for url in o.join:
                try:
                    members = await _members_of(http, url, o.token)
                    # Not our own entry (an adopted one is listed already).
                    peers = [
                        m["peer_addr"] for m in members
                        if m.get("peer_addr") and m.get("id") != o.id
                    ]  # fmt: skip
                except ServeError:
                    raise
                except (aiohttp.ClientError, TimeoutError, KeyError, ValueError, TypeError) as exc:
                    last = f"{url}: {exc}"
                    continue
                if not peers:
                    last = f"{url} lists no members"
                    continue
                # Every member, not only the first: a member whose committed
                # address is junk (it is listed all the same) must not block
                # every join.
                for peer in peers:
                    try:
                        await node.join(str(peer), o.peer_addr, voter=not o.name, timeout=10)
                        return
                    except (
                        aiohttp.ClientError, TimeoutError, ValueError, NodeError, CallError
                    ) as exc:  # fmt: skip
                        last = f"{url}: via {peer}: {exc}"
            await asyncio.sleep(1)
    raise ServeError(f"could not join the cluster: {last}")


FrontEndFactory = Callable[[KVService, "ServeOptions"], FrontEnd]


async def serve(
    o: ServeOptions,
    log_ctx: NodeContext | None = None,
    ready: asyncio.Event | None = None,
    front_ends: Sequence[FrontEndFactory] = (),
) -> None:
    """Run until SIGTERM or SIGINT; a clean shutdown either way.  ``ready`` is
    set once every listener is up (and a join, if any, is done);
    ``front_ends`` build the protocols served beside the native API."""
    fresh = not has_data(o.data_dir)
    if (rid := adopted_id(o.data_dir, o.id)) != o.id:
        o = dataclasses.replace(o, id=rid, name=o.id)
    check_force(o, fresh)
    if o.force_new_cluster:
        fresh = False  # its data is kept: never a new cluster, never a join
    if o.join and not fresh:
        raise ServeError(
            f"{o.data_dir} already holds this node's data; restart without --join "
            "(it rejoins on its own), or use an empty --data-dir"
        )
    if fresh and not o.join and not o.initial_cluster:
        raise ServeError("a new node needs --initial-cluster (a new cluster) or --join")
    if fresh and o.initial_cluster and o.id not in o.initial_cluster:
        raise ServeError(f"--initial-cluster does not name this node ({o.id})")
    if fresh and o.initial_cluster:
        check_own_entry(o)
    # Before any file or socket is opened: the client connection cap is what
    # the open-file limit leaves after the storage reserve, shared by the
    # client port and etcd's gRPC port (each front end reads o.client_limits).
    try:
        limits = o.client_limits
        ports = 2 if o.grpc_listen else 1
        cap = connection_cap(limits.max_connections, raise_nofile_limit(), ports=ports)
    except ValueError as exc:
        raise ServeError(str(exc)) from exc
    if cap < limits.max_connections:
        log.warning(
            "client connections capped at %d%s (not %d): the open-file limit keeps the rest "
            "for storage and peers",
            cap,
            " on each client port (HTTP, gRPC)" if ports > 1 else "",
            limits.max_connections,
        )
        limits = ClientLimits(limits.header_timeout, limits.body_timeout, cap)
        o = dataclasses.replace(o, client_limits=limits)
    if o.join and fresh:
        o = await _adopt(o)
    try:
        ours = check_identity(o.data_dir, o.id, o.cluster_id, fresh)
    except IdentityError as exc:
        raise ServeError(str(exc)) from exc
    machine = open_machine(o.data_dir, fresh, ours)
    if not ours:  # only once the dir is known to be usable: a refused one stays as it was
        record_identity(o.data_dir, o.id, o.cluster_id, o.name)
    if o.force_new_cluster:
        try:
            await force_new_cluster(node_config(o), machine, o.data_dir)
        except (RebuildError, NodeError, OSError, IdentityError) as exc:
            machine.close()
            raise ServeError(f"--force-new-cluster: {exc}") from exc
    # An empty node joining takes the epoch of the member it joins through.
    try:
        epochs = EpochKeeper(o.data_dir, joining=fresh and bool(o.join))
    except IdentityError as exc:
        machine.close()
        raise ServeError(str(exc)) from exc
    transport = TcpTransport(
        o.id,
        o.cluster_id,
        o.peer_listen,
        ssl_server=o.peer_ssl_server,
        ssl_client=o.peer_ssl_client,
        peer_secret=o.peer_secret,
        epoch=epochs.epoch,
        on_epoch=epochs.learned,
        on_stale=epochs.removed,
    )
    epochs.proven = transport.stats()["authentication"] != "none"
    node = Node(
        node_config(o),
        machine,
        transport,
        data_dir=o.data_dir,
        initial_members=o.initial_cluster if (fresh and not o.join) else None,
        registry=new_registry(),  # the runtime's metrics, served at /metrics
    )
    if log_ctx is not None:
        log_ctx.node = node
    try:
        await node.start()
    except NodeError as exc:
        machine.close()
        raise ServeError(str(exc)) from exc
    except OSError as exc:
        machine.close()
        why = exc.strerror or exc
        raise ServeError(
            f"cannot listen on peer address {o.peer_listen} (--peer-addr or "
            f"--listen-peer-addr): {why}"
        ) from exc
    listener: ClientListener | None = None
    # One service under every front end (today the HTTP API).
    service = KVService(
        node,
        machine,
        client_addr=o.client_addr,
        grpc_addr=o.grpc_addr,
        name=o.name,
        max_value=o.max_value,
        timeout=o.request_timeout,
        max_list_bytes=o.max_list_bytes,
        progress_interval=o.watch_progress_interval,
        compaction=o.compaction,
    )
    fronts = [make(service, o) for make in front_ends]
    started: list[FrontEnd] = []
    try:
        server = KVServer(
            service,
            token=o.token,
            body_timeout=limits.body_timeout,
            access_log=o.access_log,
            front_ends=fronts,
        )
        host, port = parse_address(o.client_listen)
        try:
            listener = await start_client_listener(
                server.app(),
                host,
                port,
                limits,
                ssl_context=o.client_ssl,
                registry=server.metrics.registry,
            )
        except OSError as exc:
            raise ServeError(
                f"cannot listen on client address {o.client_listen} (--client-addr or "
                f"--listen-client-addr): {exc.strerror or exc}"
            ) from exc
        for front in fronts:
            await front.start()  # ServeError (one line) if it cannot
            started.append(front)
        if o.join and fresh:
            await _join(node, o)
        # Once serving: keep our client address in the address book.
        await service.start()
        log.info(
            "serving: peers on %s advertised as %s (%s), clients on %s advertised as %s, "
            "data in %s",
            o.peer_listen,
            o.peer_addr,
            _peer_trust(transport),
            o.client_listen,
            o.client_addr,
            o.data_dir,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        crashed = asyncio.ensure_future(node.crashed.wait())
        stopped = asyncio.ensure_future(stop.wait())
        removed = asyncio.ensure_future(epochs.stale.wait())
        await asyncio.wait({crashed, stopped, removed}, return_when=asyncio.FIRST_COMPLETED)
        for f in (crashed, stopped, removed):
            f.cancel()
        if node.crashed.is_set():
            raise ServeError("the Raft node failed (see the log above); exiting")
        if epochs.stale.is_set():
            # No hand-over: this node's history is not the cluster's.
            raise ServeError(
                f"{o.id} was removed from cluster {o.cluster_id}: {transport.stats()['stale']}"
            )
        log.info("shutting down")
        # Before the client port closes: a write that arrives meanwhile gets
        # a 503 (no leader) and goes elsewhere, as in any leader change.
        await hand_over_leadership(node, o.election_timeout)
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        # Watchers first: their streams end with a "stopping" line (resume
        # elsewhere), so the listener does not wait out its grace for them.
        service.hub.close()
        for front in reversed(started):
            await front.stop()
        if listener is not None:
            await listener.close()
        await service.close()
        await node.stop()
        machine.close()


async def hand_over_leadership(node: Node, timeout: float) -> str | None:
    """On SIGTERM, a leader hands leadership to the most caught-up voter
    before it stops (etcd's ``Stop`` does the same): the new leader takes
    over on the transfer's TimeoutNow (thesis §3.10) instead of the others
    waiting out an election timeout.  Bounded: if the transfer has not
    finished within ``timeout`` (an election timeout), or cannot start, the
    node stops anyway.  Returns the new leader, or None if none was handed
    over (not the leader, no other voter, or the transfer failed)."""
    try:
        st = node.status()
    except NodeError:
        return None
    if st.role != "leader" or not any(v != st.id for v in st.voters):
        return None
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        new = await node.transfer_leadership(None, timeout=timeout)
    except NodeError as exc:
        log.warning("shutting down: leadership transfer failed (%s); stopping anyway", exc)
        return None
    log.info(
        "shutting down: leadership transferred to %s in %.0f ms",
        new,
        (loop.time() - started) * 1000,
    )
    return new


def check_force(o: ServeOptions, fresh: bool) -> None:
    """--force-new-cluster needs this node's data and nothing that starts
    or joins another cluster; without it, a data dir whose force was cut
    short must not start (kv/rebuild.py)."""
    try:
        rec = check_data_dir(o.data_dir)
    except RebuildError as exc:
        raise ServeError(str(exc)) from exc
    if not o.force_new_cluster:
        if rec is not None and rec.get("state") != "done":
            raise ServeError(
                f"a --force-new-cluster on {o.data_dir} was interrupted: start again with "
                "--force-new-cluster to finish it"
            )
        return
    if o.join:
        raise ServeError("--force-new-cluster and --join exclude each other")
    if fresh and rec is None:
        raise ServeError(f"--force-new-cluster keeps this node's data, and {o.data_dir} holds none")
    log.warning(
        "--force-new-cluster: %s becomes the only member of its cluster, with its own data",
        o.id,
    )


def check_own_entry(o: ServeOptions) -> None:
    """This node's ``--initial-cluster`` entry must be its advertised peer
    address: the others dial that entry.  Compared as addresses (host case,
    IP spelling, what names resolve to), not as text; the error says what
    was compared."""
    entry = o.initial_cluster[o.id]
    same, compared = same_address(entry, o.peer_addr)
    if not same:
        raise ServeError(
            f"--initial-cluster gives {o.id} the address {entry}, but its advertised peer "
            f"address (--advertise-peer-addr, else --peer-addr) is {o.peer_addr}: {compared}"
        )


def _peer_trust(transport: TcpTransport) -> str:
    """How the peer port tells members from strangers, for the startup log."""
    return {
        "secret": "members prove the cluster secret",
        "mtls": "members prove their id with a certificate",
        "secret+mtls": "members prove the cluster secret and their id with a certificate",
    }.get(transport.stats()["authentication"], "no peer authentication: anyone who reaches it")


def serve_argv(
    node_id: str, data_dir: Path, peer_addr: str, client_addr: str, *extra: str
) -> list[str]:
    """The command line that runs one node as a child process (used by
    ``cluster up`` and the fault harness)."""
    return [
        sys.executable, "-m", "liferaft.cli", "serve", "--id", node_id,
        "--data-dir", str(data_dir), "--peer-addr", peer_addr,
        "--client-addr", client_addr, *extra,
    ]  # fmt: skip


def parse_cluster(spec: str) -> dict[str, str]:
    """``n1=host:port,n2=host:port`` into a dict; ValueError with the reason."""
    out: dict[str, str] = {}
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        nid, sep, addr = part.partition("=")
        if not sep or not nid or not addr:
            raise ValueError(f"{part!r} is not ID=HOST:PORT")
        if "://" in addr:  # etcd's --initial-cluster takes URLs
            raise ValueError(f"{part!r}: give HOST:PORT, not a URL (e.g. {nid}=10.0.0.1:7000)")
        if is_wildcard(parse_address(addr)[0]):
            raise ValueError(
                f"{part!r}: a wildcard address is where a node listens; give the address "
                "the others dial (its advertised peer address)"
            )
        if nid in out:
            raise ValueError(f"{nid} appears twice")
        # Text only (no lookups): a copy-paste slip, not every alias.
        twin = next((m for m, a in out.items() if a.lower() == addr.lower()), None)
        if twin is not None:
            raise ValueError(f"{twin} and {nid} have the same address {addr}")
        out[nid] = addr
    if not out:
        raise ValueError("it names no node")
    return out


def load_token(path: Path) -> str:
    """The bearer token in ``path``; ServeError (one line) if the file is
    missing, empty, or readable by group or others (as ssh refuses such a
    private key: a token others can read protects nothing)."""
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise ServeError(f"cannot read --token-file {path}: {exc.strerror or exc}") from exc
    if mode & 0o077:
        raise ServeError(
            f"--token-file {path} is open to group or others (mode {mode & 0o777:03o}); "
            f"run: chmod 600 {path}"
        )
    if not token:
        raise ServeError(f"--token-file {path} is empty")
    return token


__all__: list[Any] = [
    "ServeOptions", "ServeError", "serve", "parse_cluster", "has_data", "setup_logging",
]  # fmt: skip
