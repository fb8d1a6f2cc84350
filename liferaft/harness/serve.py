"""N real ``liferaft serve`` processes, addressed by node id.

:class:`ServeCluster` is the one place that plans nodes (ids, addresses,
data dirs, logs), starts them with given flags, kills, pauses, restarts
and stops them by PID, and waits until they answer.  ``liferaft cluster
up``, the fault harness (:mod:`liferaft.chaos.cluster`), the system tests
(tests/kv/procs.py) and the benchmarks (bench/kv_bench.py) build on it and
add only their own concerns (a live table, fault bookkeeping, HTTP helpers).
It never touches a process it did not start (:mod:`.procs`).

    with ServeCluster(root, flags=["--election-timeout", "300"]) as c:
        c.add_nodes(3)
        c.start_all()
        c.wait_ready()
        c.kill("n2"); c.start("n2")
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from liferaft.kv.serve import serve_argv

from .ports import HOST, free_port
from .procs import Child, ProcessGroup, tail


@dataclass
class ServeNode:
    """One node: where it listens and lives, and its current process."""

    id: str
    peer: str  # HOST:PORT of the peer port
    client: str  # HOST:PORT of the client API
    data: Path
    log: Path
    mode: list[str] = field(default_factory=list)  # ["--initial-cluster", spec] or ["--join", url]
    flags: list[str] = field(default_factory=list)  # this node's own flags
    prefix: list[str] = field(default_factory=list)  # e.g. ["ip", "netns", "exec", NS]
    grpc: str = ""  # HOST:PORT of etcd's gRPC API ("": not served)
    child: Child | None = None
    paused: bool = False  # SIGSTOPped
    # The harness ended (or expects the end of) this process: not a crash.
    expected_exit: bool = False
    pids: list[int] = field(default_factory=list)  # every PID this node ever had

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The current process's Popen (None before the first start)."""
        return self.child.popen if self.child is not None else None

    @property
    def pid(self) -> int:
        assert self.child is not None, f"{self.id} was never started"
        return self.child.pid

    @property
    def started(self) -> float:
        """time.monotonic() of the last start (0 before the first)."""
        return self.child.started if self.child is not None else 0.0

    def running(self) -> bool:
        return self.child is not None and self.child.alive()

    @property
    def alive(self) -> bool:
        return self.running()

    def log_tail(self, lines: int = 15) -> str:
        return tail(self.log, lines)


class ServeCluster:
    """``liferaft serve`` processes under ``root`` (data dirs and logs).

    ``flags`` go to every node on every start; ``env``, ``cwd`` and
    ``preexec_fn`` to every spawn; ``new_session`` as in
    :class:`~liferaft.harness.procs.ProcessGroup`; ``cpus`` pins node i to
    CPU i mod ncpu; ``group``: start the nodes in this group (one registry
    for every process of a bench run) instead of a new one; ``grpc``: every
    node serves etcd's gRPC API too (``ServeNode.grpc``)."""

    node_class: type[ServeNode] = ServeNode

    def __init__(
        self,
        root: Path,
        *,
        flags: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
        new_session: bool = False,
        cpus: bool = False,
        group: ProcessGroup | None = None,
        grpc: bool = False,
    ) -> None:
        self.root = root
        self.grpc = grpc  # serve etcd's gRPC API on every node (docs/etcd.md)
        self.flags = list(flags)
        self.env = env
        self.cwd = cwd
        self.preexec_fn = preexec_fn
        self.cpus = cpus  # pin node i to CPU i mod ncpu
        # A caller that runs other processes too may hand in its own group.
        self.group = group if group is not None else ProcessGroup(new_session=new_session)
        self.nodes: dict[str, ServeNode] = {}
        self.closed = False

    def __enter__(self) -> ServeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- planning ------------------------------------------------------------------------

    def add(
        self,
        node_id: str,
        *,
        peer: str | None = None,
        client: str | None = None,
        mode: Sequence[str] = (),
        flags: Sequence[str] = (),
        prefix: Sequence[str] = (),
        grpc: str | None = None,
    ) -> ServeNode:
        """Define a node (free ports on 127.0.0.1 unless given; a gRPC port
        only if given or the cluster serves gRPC)."""
        if grpc is None:
            grpc = f"{HOST}:{free_port()}" if self.grpc else ""
        n = self.node_class(
            node_id,
            peer or f"{HOST}:{free_port()}",
            client or f"{HOST}:{free_port()}",
            self.root / node_id,
            self.root / f"{node_id}.log",
            list(mode),
            list(flags),
            list(prefix),
            grpc,
        )
        self.nodes[node_id] = n
        return n

    def add_nodes(self, count: int, base_port: int | None = None) -> list[ServeNode]:
        """Define n1..n<count>; with ``base_port``, node i has its peer port
        on base+i, its client port on base+1000+i and its gRPC port (if
        the cluster serves gRPC) on base+2000+i (``cluster up``)."""
        out = []
        for i in range(1, count + 1):
            if base_port is None:
                out.append(self.add(f"n{i}"))
            else:
                peer, client = f"{HOST}:{base_port + i}", f"{HOST}:{base_port + 1000 + i}"
                grpc = f"{HOST}:{base_port + 2000 + i}" if self.grpc else ""
                out.append(self.add(f"n{i}", peer=peer, client=client, grpc=grpc))
        return out

    def spec(self, ids: Iterable[str] | None = None) -> str:
        """``n1=peer,n2=peer,...``: the --initial-cluster of these nodes."""
        ids = list(self.nodes) if ids is None else list(ids)
        return ",".join(f"{i}={self.nodes[i].peer}" for i in ids)

    def command(self, node_id: str) -> list[str]:
        n = self.nodes[node_id]
        flags = [*self.flags, *n.flags, *n.mode, *(["--grpc-addr", n.grpc] if n.grpc else [])]
        return [*n.prefix, *serve_argv(n.id, n.data, n.peer, n.client, *flags)]

    # -- processes -----------------------------------------------------------------------

    def start_all(self, ids: Iterable[str] | None = None) -> None:
        """Start these (default: all) nodes as one new cluster of them."""
        ids = list(self.nodes) if ids is None else list(ids)
        spec = self.spec(ids)
        for i in ids:
            self.nodes[i].mode = ["--initial-cluster", spec]
            self.start(i)

    def start(self, node_id: str, mode: Sequence[str] | None = None) -> ServeNode:
        """Start (or start again, on its data) a node that is not running;
        ``mode`` replaces its --initial-cluster/--join arguments."""
        n = self.nodes[node_id]
        assert not n.running(), f"{node_id} is already running"
        if mode is not None:
            n.mode = list(mode)
        n.data.mkdir(parents=True, exist_ok=True)
        cpu = None
        if self.cpus:
            cpu = list(self.nodes).index(node_id) % (os.cpu_count() or 1)
        n.child = self.group.start(
            n.id,
            self.command(node_id),
            log=n.log,
            header=True,
            cwd=self.cwd,
            env=self.env,
            cpu=cpu,
            preexec_fn=self.preexec_fn,
        )
        n.pids.append(n.child.pid)
        n.paused = False
        n.expected_exit = False
        return n

    def kill(self, node_id: str) -> None:
        """kill -9, and reap it."""
        n = self.nodes[node_id]
        n.expected_exit = True
        if n.child is not None:
            self.group.kill(n.child)
        n.paused = False

    def pause(self, node_id: str) -> None:
        """SIGSTOP."""
        n = self.nodes[node_id]
        if n.child is not None and self.group.signal(n.child, signal.SIGSTOP):
            n.paused = True

    def resume(self, node_id: str) -> None:
        """SIGCONT."""
        n = self.nodes[node_id]
        if n.child is not None and n.paused:
            self.group.signal(n.child, signal.SIGCONT)
        n.paused = False

    def restart(self, node_id: str) -> ServeNode:
        """kill -9 if running, then start again on the same data."""
        if self.nodes[node_id].running():
            self.kill(node_id)
        return self.start(node_id)

    def stop(self, node_id: str, grace: float = 5.0) -> int | None:
        """SIGTERM (SIGKILL after ``grace``); the exit status."""
        n = self.nodes[node_id]
        assert n.child is not None, f"{node_id} was never started"
        n.expected_exit = True
        self.group.terminate([n.child], grace)
        n.paused = False
        return n.child.returncode

    def close(self, grace: float = 5.0) -> None:
        """End every process this cluster started (idempotent)."""
        self.closed = True
        for n in self.nodes.values():
            n.expected_exit = True
        self.group.close(grace)

    # -- readiness -----------------------------------------------------------------------

    def wait_ready(
        self, timeout: float = 30.0, path: str = "/readyz", ids: Iterable[str] | None = None
    ) -> float:
        """Until every node answers ``GET path`` with 200 (``/readyz``: a
        leader known and everything applied); the seconds it took.
        RuntimeError naming the node if one exits or the time runs out."""
        nodes = [self.nodes[i] for i in (ids if ids is not None else self.nodes)]
        return wait_http_ok([(n.id, n.client, n.child) for n in nodes], path, timeout)


def wait_http_ok(
    targets: Sequence[tuple[str, str, Child | None]], path: str, timeout: float = 30.0
) -> float:
    """Poll ``http://ADDR{path}`` of every (name, HOST:PORT, process) until
    each answers 200; the seconds it took.  RuntimeError (with the end of
    its log) if a process exits first, or naming the laggards on timeout."""
    t0 = time.monotonic()
    pending = list(targets)
    while pending:
        for t in list(pending):
            name, addr, child = t
            if child is not None and not child.alive():
                raise RuntimeError(
                    f"{name} (pid {child.pid}) exited with {child.returncode}; its log "
                    f"{child.log}:\n{child.log_tail(30)}"
                )
            try:
                with urllib.request.urlopen(f"http://{addr}{path}", timeout=1.0) as r:
                    if r.status == 200:
                        pending.remove(t)
            except (OSError, urllib.error.URLError, http.client.HTTPException):
                pass
        if pending and time.monotonic() - t0 > timeout:
            names = ", ".join(t[0] for t in pending)
            raise RuntimeError(f"{names} not ready within {timeout:.0f} s")
        if pending:
            time.sleep(0.05)
    return time.monotonic() - t0
