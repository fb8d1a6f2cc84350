"""``liferaft bench trace``: where one write's time goes, stage by stage.

Starts three local ``liferaft serve`` nodes with the per-write trace on
(:mod:`liferaft.runtime.write_trace`, one file per process), sends N
writes one after another over one connection to the leader (optionally at
a fixed rate), stops the nodes, merges the three files by log index and
builds the stage table: for each stage, the median and p90 in µs over the
writes, the end-to-end time, the CPU each node spent per write (from
/proc), and the yardstick, fdatasync + loopback round trip measured on the
same machine just before.  docs/bench.md, "Tracing a write".

The stages that sum to the end-to-end time follow the critical path
through the follower whose ack arrived first (the one that made the
quorum); the leader's own write + fsync runs beside them and has its row
out of the sum.
"""

from __future__ import annotations

import dataclasses
import glob
import http.client
import json
import os
import signal
import socket
import statistics
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from liferaft.runtime.write_trace import ENV

from .procs import cpu_seconds
from .serve import ServeCluster

# (label, from stage, to stage, whose): the critical path, in order.
# whose: "L" leader, "F" the quorum follower.
PATH = (
    ("arrive -> propose", ("L", "arrive"), ("L", "propose")),
    ("propose -> send", ("L", "propose"), ("L", "send")),
    ("send -> follower recv", ("L", "send"), ("F", "recv")),
    ("follower recv -> wal start", ("F", "recv"), ("F", "wal_start")),
    ("follower wal write + fsync", ("F", "wal_start"), ("F", "wal_end")),
    ("follower wal end -> ack sent", ("F", "wal_end"), ("F", "ack_sent")),
    ("ack sent -> leader ack recv", ("F", "ack_sent"), ("L", "ack_recv")),
    ("leader ack recv -> commit", ("L", "ack_recv"), ("L", "commit")),
    ("commit -> apply", ("L", "commit"), ("L", "apply")),
    ("apply handed over -> respond", ("L", "apply"), ("L", "respond")),
)
BESIDE = (("leader wal write + fsync", ("L", "wal_start"), ("L", "wal_end")),)
END_TO_END = ("end to end (arrive -> respond)", ("L", "arrive"), ("L", "respond"))


@dataclasses.dataclass
class Row:
    stage: str
    p50_us: float
    p90_us: float
    in_sum: bool


@dataclasses.dataclass
class Report:
    writes: int
    rows: list[Row]
    end_to_end: Row
    cpu_us_per_write: dict[str, float]  # "leader", "follower 1", ...
    fsync_p50_us: float
    rtt_p50_us: float

    def table(self) -> str:
        out = [f"{'stage':<34} {'p50 µs':>9} {'p90 µs':>9}"]
        for r in [*self.rows, self.end_to_end]:
            mark = "" if r.in_sum else "  (beside the path)"
            out.append(f"{r.stage:<34} {r.p50_us:>9.0f} {r.p90_us:>9.0f}{mark}")
        total = sum(r.p50_us for r in self.rows if r.in_sum)
        out.append(f"{'sum of the path p50s':<34} {total:>9.0f}")
        out.append("")
        out.append(f"writes traced: {self.writes}")
        for who, us in self.cpu_us_per_write.items():
            out.append(f"CPU per write, {who}: {us:.0f} µs")
        yard = self.fsync_p50_us + self.rtt_p50_us
        out.append(
            f"yardstick fdatasync p50 {self.fsync_p50_us:.0f} µs + loopback RTT p50 "
            f"{self.rtt_p50_us:.0f} µs = {yard:.0f} µs; end-to-end p50 / yardstick = "
            f"{self.end_to_end.p50_us / yard:.2f}"
        )
        return "\n".join(out)


# -- merging ---------------------------------------------------------------------------


Events = dict[int, dict[str, int]]  # index -> stage -> first time (ns)


def read_trace(path: str) -> tuple[Events, dict[int, dict[str, int]]]:
    """One process's file: first time of each stage per index, and the
    first ack received per index and peer (``ack_recv`` by peer)."""
    ev: Events = {}
    acks: dict[int, dict[str, int]] = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue  # a line cut by a kill
            t, stage, index = int(parts[0]), parts[1], int(parts[2])
            ev.setdefault(index, {}).setdefault(stage, t)
            if stage == "ack_recv" and len(parts) > 3:
                acks.setdefault(index, {}).setdefault(parts[3], t)
    return ev, acks


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def stage_table(
    paths: Iterable[str], node_of: dict[str, str], skip: int = 0
) -> tuple[list[Row], Row, int]:
    """Merge per-process files (``node_of``: file -> node id) into rows,
    leaving out the first ``skip`` writes (a warm-up).  The leader is the
    process that answered writes; the quorum follower of each write is the
    one whose ack reached the leader first."""
    procs = {node_of[p]: read_trace(p) for p in paths}
    leaders = [n for n, (ev, _) in procs.items() if any("respond" in s for s in ev.values())]
    if len(leaders) != 1:
        raise RuntimeError(f"expected one leader in the trace, found {leaders}")
    lead_ev, lead_acks = procs[leaders[0]]
    spans: dict[str, list[float]] = {}
    writes = 0
    for index, stages in sorted(lead_ev.items()):
        if "respond" not in stages or "arrive" not in stages or index not in lead_acks:
            continue
        first_peer = min(lead_acks[index], key=lambda p: lead_acks[index][p])
        fol = procs.get(first_peer, ({}, {}))[0].get(index)
        if fol is None:
            continue
        whose = {"L": stages, "F": fol}
        if not all(s in whose[w] for _, a, b in (*PATH, *BESIDE) for w, s in (a, b)):
            continue
        if skip:
            skip -= 1
            continue
        writes += 1
        for label, (wa, sa), (wb, sb) in (*PATH, *BESIDE, END_TO_END):
            spans.setdefault(label, []).append((whose[wb][sb] - whose[wa][sa]) / 1000)
    if not writes:
        raise RuntimeError("no write was traced through every stage")
    in_sum = {label for label, _, _ in PATH}
    rows = [
        Row(label, statistics.median(spans[label]), _pct(spans[label], 0.9), label in in_sum)
        for label, _, _ in (*PATH, *BESIDE)
    ]
    e = spans[END_TO_END[0]]
    return rows, Row(END_TO_END[0], statistics.median(e), _pct(e, 0.9), False), writes


# -- yardsticks ------------------------------------------------------------------------


def fsync_p50_us(directory: Path, count: int = 200) -> float:
    """write(100 B) + fdatasync, ``count`` times, in ``directory``."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lat = []
    try:
        for _ in range(count):
            t0 = time.perf_counter_ns()
            os.write(fd, b"x" * 100)
            os.fdatasync(fd)
            lat.append((time.perf_counter_ns() - t0) / 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return statistics.median(lat)


def rtt_p50_us(count: int = 500) -> float:
    """A 100-byte TCP ping-pong over loopback with a forked echo process."""
    lsock = socket.create_server(("127.0.0.1", 0))
    pid = os.fork()
    if pid == 0:  # the echo: no Python state of the parent is touched
        try:
            conn, _ = lsock.accept()
            while data := conn.recv(4096):
                conn.sendall(data)
        finally:
            os._exit(0)
    addr = lsock.getsockname()
    lsock.close()
    lat = []
    try:
        with socket.create_connection(addr) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(count + 10):
                t0 = time.perf_counter_ns()
                s.sendall(b"y" * 100)
                got = 0
                while got < 100:
                    got += len(s.recv(100 - got))
                lat.append((time.perf_counter_ns() - t0) / 1000)
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # our own child, by its pid
        raise
    finally:
        os.waitpid(pid, 0)
    return statistics.median(lat[10:])


# -- the run ---------------------------------------------------------------------------


def _leader(c: ServeCluster) -> str:
    for n in c.nodes.values():
        conn = http.client.HTTPConnection(n.client, timeout=5)
        try:
            conn.request("GET", "/v1/status")
            st = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        if st.get("role") == "leader":
            return n.id
    raise RuntimeError("no leader among the nodes")


def _writes(addr: str, count: int, rate: float) -> None:
    """``count`` PUTs one after another on one keep-alive connection."""
    conn = http.client.HTTPConnection(addr, timeout=10)
    gap = 1 / rate if rate > 0 else 0.0
    next_at = time.monotonic()
    try:
        for i in range(count):
            if gap:
                next_at += gap
                time.sleep(max(0.0, next_at - time.monotonic()))
            body = json.dumps({"value": f"v{i}"})
            conn.request("PUT", f"/v1/kv/trace/{i % 100}", body,
                         {"Content-Type": "application/json"})  # fmt: skip
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"write {i} answered {resp.status}")
    finally:
        conn.close()


def run(writes: int, rate: float, warmup: int = 20, root: Path | None = None) -> Report:
    """The whole measurement (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="liferaft-trace-") as tmp:
        base = root or Path(tmp)
        fsync = fsync_p50_us(base)
        rtt = rtt_p50_us()
        trace = str(base / "trace")
        env = {**os.environ, ENV: trace}
        with ServeCluster(base, env=env, flags=["--election-timeout", "1000"]) as c:
            c.add_nodes(3)
            c.start_all()
            c.wait_ready(60)
            lead = _leader(c)
            addr = c.nodes[lead].client
            _writes(addr, warmup, 0)
            cpu0 = {n.id: cpu_seconds(n.pid) or 0.0 for n in c.nodes.values()}
            _writes(addr, writes, rate)
            cpu = {n.id: (cpu_seconds(n.pid) or 0.0) - cpu0[n.id] for n in c.nodes.values()}
            node_of = {f"{trace}.{n.pid}": n.id for n in c.nodes.values()}
            c.close()  # SIGTERM: each node flushes its trace at exit
        files = [p for p in glob.glob(f"{trace}.*") if p in node_of]
        rows, e2e, traced = stage_table(files, node_of, skip=warmup)
    per = {}
    followers = sorted(n for n in cpu if n != lead)
    per["leader"] = cpu[lead] / writes * 1e6
    for i, n in enumerate(followers, 1):
        per[f"follower {i}"] = cpu[n] / writes * 1e6
    return Report(traced, rows, e2e, per, fsync, rtt)
