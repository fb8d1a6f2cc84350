"""A harness for system tests with real ``liferaft serve`` processes.

:class:`ProcCluster` is :class:`liferaft.harness.serve.ServeCluster` (the one
process harness: ``cluster up``, chaos and the benches use it too) with the
tests' HTTP helpers.  It starts nodes as subprocesses on 127.0.0.1 only, on
free ports, with their logs in the test's tmp_path, and can kill -9, SIGSTOP,
SIGCONT, restart and add nodes by id.  It is a context manager whose exit
always ends every process it started, by PID (SIGCONT, SIGTERM, then
SIGKILL after a grace period), even when the test failed; an ``atexit`` hook
is the last resort.  Every wait is bounded in time.

    with ProcCluster(tmp_path, extra=["--snapshot-entries", "20"]) as c:
        c.start_cluster(3)
        leader = c.wait_leader()
        status, body = c.put(leader, "k", "v")

Requests go through plain ``urllib`` (one answer per call, so a test sees
exactly which writes were acknowledged); :func:`http` never raises for an
HTTP error or a dead node, it returns the status (0: no answer).
"""

from __future__ import annotations

import contextlib
import http.client as _httpc
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from liferaft.harness import pidfile
from liferaft.harness.ports import HOST, free_base_port, free_port, port_is_free
from liferaft.harness.procs import pid_alive, rss_bytes, start_time
from liferaft.harness.serve import ServeCluster, ServeNode

T = TypeVar("T")

__all__ = [
    "CLI", "FAST_TIMING", "HOST", "NodeProc", "ProcCluster", "Writer", "free_base_port",
    "free_port", "http", "http_full", "kill_pids", "kv_path", "pid_alive", "pids_with_arg",
    "port_is_free", "proc_cluster", "run_cli", "wait_for",
]  # fmt: skip

# Fast but not twitchy on a loaded 2-core machine (xdist -n 2).
FAST_TIMING = ["--election-timeout", "300", "--heartbeat-interval", "50"]
CLI = [sys.executable, "-m", "liferaft.cli"]


# -- waiting and HTTP --------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """``pid``'s resident memory in MiB; fails if it is gone."""
    got = rss_bytes(pid)
    assert got is not None, f"process {pid} is gone"
    return got / 2**20


def wait_for(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``fn`` until it returns something truthy (returned); AssertionError
    naming ``what`` after ``timeout`` seconds.  Exceptions from ``fn`` count
    as "not yet" (the last one is reported)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            got = fn()
            if got:
                return got
            last = got
        except Exception as exc:  # noqa: BLE001 - reported below
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def http_full(
    addr: str,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any, dict[str, str]]:
    """One HTTP/JSON request to ``addr`` (HOST:PORT): (status, JSON body or raw
    text, response headers); status 0 when nothing answered (refused, reset,
    timed out).  Never raises for an HTTP error."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw, hdrs = r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        status, raw, hdrs = e.code, e.read(), dict(e.headers)
    except (OSError, TimeoutError, urllib.error.URLError, _httpc.HTTPException) as exc:
        return 0, f"{type(exc).__name__}: {exc}", {}
    try:
        return status, json.loads(raw), hdrs
    except ValueError:
        return status, raw.decode(errors="replace"), hdrs


def http(addr: str, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    """:func:`http_full` without the headers: (status, body)."""
    status, data, _ = http_full(addr, method, path, body, **kw)
    return status, data


def kv_path(key: str) -> str:
    return "/v1/kv/" + urllib.parse.quote(key, safe="/")


def run_cli(*args: str, timeout: float = 40.0) -> subprocess.CompletedProcess[str]:
    """``liferaft ARGS...`` as a subprocess (bounded); stdout/stderr captured."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def pids_with_arg(text: str) -> set[int]:
    """PIDs of this user's processes whose command line contains ``text``
    (read from /proc; used to find processes a test started indirectly,
    e.g. the nodes of ``cluster up`` under the test's own tmp_path)."""
    out = set()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if pid_alive(int(entry)) and text in cmd:
            out.add(int(entry))
    return out


def kill_pids(pids: Iterable[int], grace: float = 5.0) -> None:
    """SIGCONT + SIGTERM each PID, SIGKILL whatever is left after ``grace``
    (each named by its PID and start time now, so a PID recycled meanwhile
    is left alone)."""
    entries = []
    for pid in pids:
        st = start_time(pid)
        if st is not None:
            entries.append(pidfile.Entry(str(pid), pid, st))
    pidfile.stop(entries, grace)


# -- the cluster -------------------------------------------------------------------------


class NodeProc(ServeNode):
    """A :class:`~liferaft.harness.serve.ServeNode` under the names the
    system tests use."""

    @property
    def peer_addr(self) -> str:
        return self.peer

    @property
    def client_addr(self) -> str:
        return self.client

    @property
    def data_dir(self) -> Path:
        return self.data

    @property
    def log_path(self) -> Path:
        return self.log


class ProcCluster(ServeCluster):
    """Real ``liferaft serve`` processes, addressed by node id."""

    node_class = NodeProc
    nodes: dict[str, NodeProc]  # type: ignore[assignment]

    def __init__(
        self,
        root: Path,
        *,
        extra: list[str] | None = None,
        token: str | None = None,
        timing: list[str] | None = None,
        nofile: int | None = None,
        grpc: bool = False,
    ) -> None:
        self.token = token
        self.nofile = nofile  # the nodes' open-file limit (soft and hard), if set
        flags = [*(FAST_TIMING if timing is None else timing), *(extra or [])]
        if token is not None:
            tf = root / "token"
            tf.write_text(token + "\n")
            tf.chmod(0o600)  # serve refuses a token file others can read
            flags += ["--token-file", str(tf)]
        super().__init__(
            root,
            flags=flags,
            cwd=root,
            preexec_fn=self._limit_files if nofile is not None else None,
            grpc=grpc,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> ProcCluster:
        return self

    def define(
        self,
        node_id: str,
        mode: list[str],
        extra: list[str] | None = None,
        peer_addr: str | None = None,
    ) -> NodeProc:
        n = self.add(node_id, peer=peer_addr, mode=mode, flags=extra or [])
        assert isinstance(n, NodeProc)
        return n

    def start_cluster(self, n: int, wait: bool = True) -> str | None:
        """Define and start n1..n<n> as a new cluster; returns the leader's id
        once one is up (with ``wait``)."""
        self.add_nodes(n)
        self.start_all()
        return self.wait_leader() if wait else None

    def start(self, node_id: str, mode: Any = None) -> NodeProc:
        n = super().start(node_id, mode)
        assert isinstance(n, NodeProc)
        return n

    def _limit_files(self) -> None:
        """In the child, before exec: ``ulimit -n`` as an operator would."""
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def add_joining(self, node_id: str, via: str, extra: list[str] | None = None) -> NodeProc:
        """Define and start a new node that joins through ``via``'s client API."""
        contact = self.nodes[via].client
        self.define(node_id, ["--join", f"http://{contact}"], extra)
        return self.start(node_id)

    def pause(self, node_id: str) -> None:
        assert self.nodes[node_id].running()
        super().pause(node_id)

    def resume(self, node_id: str) -> None:
        assert self.nodes[node_id].running()
        super().resume(node_id)

    def restart(self, node_id: str) -> NodeProc:
        n = super().restart(node_id)
        assert isinstance(n, NodeProc)
        return n

    def stop(self, node_id: str, grace: float = 5.0) -> int:
        """SIGTERM (SIGKILL after ``grace``); returns the exit status."""
        rc = super().stop(node_id, grace)
        assert rc is not None, f"{node_id} did not exit"
        return rc

    def print_logs(self, lines: int = 15) -> None:
        for n in self.nodes.values():
            print(f"==== {n.id} ({n.log}) ====\n{n.log_tail(lines)}")

    # -- HTTP ----------------------------------------------------------------------------

    def addr(self, node_id: str) -> str:
        return self.nodes[node_id].client_addr

    def endpoints(self, ids: Iterable[str] | None = None) -> str:
        return ",".join(self.addr(i) for i in (ids if ids is not None else self.nodes))

    def request(
        self, node_id: str, method: str, path: str, body: Any = None, **kw: Any
    ) -> tuple[int, Any]:
        kw.setdefault("token", self.token)
        return http(self.addr(node_id), method, path, body, **kw)

    def status(self, node_id: str, timeout: float = 2.0) -> dict[str, Any] | None:
        n = self.nodes[node_id]
        if not n.running() or n.paused:
            return None
        code, body = self.request(node_id, "GET", "/v1/status", timeout=timeout)
        return body if code == 200 and isinstance(body, dict) else None

    def put(self, node_id: str, key: str, value: str, **fields: Any) -> tuple[int, Any]:
        timeout = fields.pop("timeout", 10.0)
        return self.request(
            node_id, "PUT", kv_path(key), {"value": value, **fields}, timeout=timeout
        )

    def open_session(self, ids: Iterable[str] | None = None, timeout: float = 20.0) -> int:
        """A new client session (``POST /v1/sessions`` on the given or live
        nodes in turn until one answers 200); its id.  A session opened by an
        attempt that timed out is merely unused."""
        cands = list(ids) if ids is not None else None
        tries = {"n": 0}

        def attempt() -> int | None:
            nodes = cands or self.live_ids()
            node = nodes[tries["n"] % len(nodes)]
            tries["n"] += 1
            code, body = self.request(node, "POST", "/v1/sessions", {}, timeout=5.0)
            return int(body["session"]) if code == 200 else None

        return wait_for(attempt, timeout, "a session opened", interval=0.1)

    def get(self, node_id: str, key: str, consistency: str | None = None) -> tuple[int, Any]:
        q = f"?consistency={consistency}" if consistency is not None else ""
        return self.request(node_id, "GET", kv_path(key) + q)

    def live_ids(self) -> list[str]:
        return [i for i, n in self.nodes.items() if n.running() and not n.paused]

    def leader_view(self, among: Iterable[str] | None = None) -> str | None:
        """The leader, if a node says it leads, has announced its client
        address, and a majority of the nodes asked agree (None otherwise)."""
        ids = list(among) if among is not None else self.live_ids()
        views = {i: self.status(i) for i in ids}
        for i, st in views.items():
            if st is None or st["role"] != "leader" or not st.get("leader_client_addr"):
                continue
            agree = sum(1 for s in views.values() if s is not None and s["leader"] == i)
            voters = [m["id"] for m in st["members"] if m["voter"]]
            if agree >= len(voters) // 2 + 1 or agree == len(ids):
                return i
        return None

    def wait_leader(
        self, timeout: float = 20.0, among: Iterable[str] | None = None, not_: str | None = None
    ) -> str:
        """Poll /v1/status until a leader (other than ``not_``) is agreed on."""
        ids = list(among) if among is not None else None

        def probe() -> str | None:
            ld = self.leader_view(ids)
            return ld if ld is not None and ld != not_ else None

        try:
            return wait_for(probe, timeout, "a leader", interval=0.1)
        except AssertionError:
            self.print_logs()
            raise

    def leader_pid(self, timeout: float = 20.0) -> tuple[str, int]:
        ld = self.wait_leader(timeout)
        return ld, self.nodes[ld].pid

    def cli(self, *args: str, timeout: float = 40.0) -> subprocess.CompletedProcess[str]:
        """``liferaft ARGS... --endpoints <every node>`` (plus the token file)."""
        extra = ["--endpoints", self.endpoints(self.live_ids())]
        if self.token is not None:
            extra += ["--token-file", str(self.root / "token")]
        return run_cli(*args, *extra, timeout=timeout)


@contextlib.contextmanager
def proc_cluster(root: Path, **kw: Any) -> Iterator[ProcCluster]:
    """A :class:`ProcCluster` that prints its nodes' log tails if the body
    raised, and always ends its processes."""
    c = ProcCluster(root, **kw)
    try:
        yield c
    except BaseException:
        c.print_logs()
        raise
    finally:
        c.close()


# -- a client that writes in the background ---------------------------------------------


class Writer(threading.Thread):
    """Sequential writes to ``keys`` keys (value ``i`` for write number i),
    in one client session, each retried with its same ``seq`` on any
    failure (another live node, the leader first) until it is acknowledged;
    only then comes the next write.  So every attempted write ends
    acknowledged (or the writer gives up and records ``failure``), and the
    last acknowledged value of each key is exactly what it must hold."""

    def __init__(
        self,
        cluster: ProcCluster,
        *,
        prefix: str = "w/",
        keys: int = 10,
        ids: Iterable[str] | None = None,
        per_write_timeout: float = 20.0,
    ) -> None:
        super().__init__(daemon=True)
        self.c = cluster
        self.prefix = prefix
        self.keys = keys
        self.ids = list(ids) if ids is not None else None
        self.per_write_timeout = per_write_timeout
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[str, tuple[str, int]] = {}  # key -> (value, revision)
        self.revisions: list[int] = []
        self.count = 0
        self.retries = 0
        self.failure: str | None = None
        self._target: str | None = None

    def key(self, i: int) -> str:
        return f"{self.prefix}{i % self.keys}"

    def _candidates(self) -> list[str]:
        ids = self.ids if self.ids is not None else list(self.c.nodes)
        live = [i for i in ids if self.c.nodes[i].running() and not self.c.nodes[i].paused]
        if self._target in live:
            live.remove(self._target)
            live.insert(0, self._target)
        return live

    def run(self) -> None:
        try:
            sid = self.c.open_session(self.ids, timeout=self.per_write_timeout)
        except AssertionError as exc:
            self.failure = str(exc)
            return
        i = 0
        while not self.stop_ev.is_set():
            key, value = self.key(i), str(i)
            # One write at a time: every earlier one is answered.
            req = {"session": sid, "seq": i + 1, "lowest_pending": i + 1}
            deadline = time.monotonic() + self.per_write_timeout
            rotate = 0
            while True:
                cands = self._candidates()
                if cands:
                    target = cands[rotate % len(cands)]
                    code, body = self.c.put(target, key, value, **req, timeout=3.0)
                    if code == 200:
                        self._target = target
                        break
                    self._target = None
                    rotate += 1
                    self.retries += 1
                if self.c.closed:
                    self.failure = "the cluster was closed"
                    return
                if time.monotonic() > deadline:
                    self.failure = f"write {i} ({key}={value}) never acknowledged: {code} {body}"
                    return
                time.sleep(0.05)
            with self.lock:
                self.acked[key] = (value, int(body["revision"]))
                self.revisions.append(int(body["revision"]))
                self.count += 1
            i += 1

    def wait_count(self, n: int, timeout: float = 20.0) -> None:
        wait_for(
            lambda: self.count >= n or self.failure is not None,
            timeout,
            f"{n} acknowledged writes (have {self.count})",
        )
        assert self.failure is None, self.failure

    def finish(self, timeout: float = 30.0) -> dict[str, tuple[str, int]]:
        """Stop after the write in flight is acknowledged; the acknowledged
        (value, revision) of every key."""
        self.stop_ev.set()
        self.join(timeout)
        assert not self.is_alive(), "the writer did not stop"
        assert self.failure is None, self.failure
        return dict(self.acked)
