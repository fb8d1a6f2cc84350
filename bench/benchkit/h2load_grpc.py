"""A gRPC load step with h2load (Debian ``nghttp2-client``;
``scripts/install-h2load.sh``): prebuilt gRPC frames over HTTP/2, the same
bytes to liferaft-kv's ``--grpc-addr`` and to etcd's client port.

Why h2load and not a Python gRPC client: one grpc.aio process spends about
100 µs of CPU per unary call (measured against a one-node etcd: 7,200
calls/s at 76% of a CPU), so at etcd's rates the generator would take most
of one of this machine's two cores.  h2load is C: about 15 µs per call,
in one thread.

A step: one h2load process per target endpoint, each with its share of the
connections (``-c``, one stream each: ``-m 1``, closed-loop as the JSON
generator's connections), all started together for ``seconds`` (``-D``),
after a separate warm-up run that is not counted.  Every request of a step
is the same frame: a Put of ``bench/0`` (a 100-byte value) or a Range of
``bench/1`` (preloaded by the JSON steps).

What h2load cannot see, and how it is checked: a gRPC error is an HTTP 200
whose status is in the trailers, so h2load counts it as a success.  An
error answers no DATA frame, and a success answers one message of a size
known from a probe call made just before (this module's own gRPC call to
the same endpoint: 5 bytes of gRPC framing plus the message).  So

- reads: successes = DATA bytes received / the probed size (the answer's
  size does not change while nothing is written);
- writes: successes = the store revision after the step minus before
  (each successful Put adds one; a Put in flight when h2load stops may
  still land, so this can overcount by at most the connection count).

The rest of the requests are errors.  Latencies come from h2load's
``--log-file`` (one line per request: start µs, HTTP status, duration µs);
the generator's CPU is the ``RUSAGE_CHILDREN`` time of the h2load
processes, reaped inside the step.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import resource
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc

from liferaft.etcd.proto import rpc_pb2 as pb
from liferaft.harness.procs import Child, ProcessGroup, tail
from liferaft.kv.bench import bench_key, bench_value

PUT = "/etcdserverpb.KV/Put"
RANGE = "/etcdserverpb.KV/Range"
WRITE_KEY = bench_key(0).encode()
READ_KEY = bench_key(1).encode()


class Meter(Protocol):
    """Started and stopped around a step's measured run (the servers' CPU)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class H2loadError(Exception):
    """h2load failed or its output could not be read."""


def find_h2load(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("h2load") or (
        "/usr/bin/h2load" if os.access("/usr/bin/h2load", os.X_OK) else None
    )


def whole_seconds(secs: float) -> int:
    """h2load's ``-D`` takes whole seconds: ``secs`` rounded up, at least 1."""
    return max(1, math.ceil(secs))


def frame(msg: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian size."""
    return b"\x00" + struct.pack(">I", len(msg)) + msg


def request(op: str, value_size: int = 100) -> tuple[str, bytes]:
    """(method path, serialized request) of every call of an ``op`` step."""
    if op == "write":
        put = pb.PutRequest(key=WRITE_KEY, value=bench_value(value_size).encode())
        return PUT, put.SerializeToString()
    rng = pb.RangeRequest(key=READ_KEY, serializable=op == "stale")
    return RANGE, rng.SerializeToString()


def probe(target: str, timeout: float = 5.0) -> tuple[int, int]:
    """(store revision, size of a Range answer of the read key as framed on
    the wire) at ``target``, by one serializable Range: it is the same
    message as the step's linearizable reads, but for the flag, which is a
    request field: the answer has the same size."""
    with grpc.insecure_channel(target) as ch:
        raw = ch.unary_unary(RANGE)(
            pb.RangeRequest(key=READ_KEY, serializable=True).SerializeToString(),
            timeout=timeout,
        )
    resp = pb.RangeResponse.FromString(raw)
    if not resp.kvs:
        raise H2loadError(f"{target}: the read key {READ_KEY!r} is missing (preload failed?)")
    return resp.header.revision, len(raw) + 5


def write_revision(target: str, timeout: float = 5.0) -> tuple[int, int]:
    """(store revision, framed size of a Put answer) at ``target``: one Put
    of the write key (the same request as the step's)."""
    path, body = request("write")
    with grpc.insecure_channel(target) as ch:
        raw = ch.unary_unary(path)(body, timeout=timeout)
    return pb.PutResponse.FromString(raw).header.revision, len(raw) + 5


@dataclass
class Counts:
    """What one h2load process printed."""

    done: int = 0  # requests answered (or failed) while it ran
    succeeded: int = 0  # of those, the HTTP 2xx: gRPC errors included
    failed: int = 0  # h2load's failed: non-2xx or a stream/connection error
    data_bytes: int = 0

    @property
    def errors_seen(self) -> int:
        """The failures h2load itself saw (within ``done``, or beside it)."""
        return max(self.failed, self.done - self.succeeded)


_REQ = re.compile(
    r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_CODES = re.compile(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_TRAFFIC = re.compile(r"traffic: .*?, .*? headers .*?, \S+ \((\d+)\) data")


def parse_output(text: str) -> Counts:
    m, c, t = _REQ.search(text), _CODES.search(text), _TRAFFIC.search(text)
    if not (m and c and t):
        raise H2loadError(f"unreadable h2load output:\n{text[-800:]}")
    return Counts(
        done=int(m[1]),
        succeeded=int(m[2]),
        failed=max(int(m[3]), int(m[4]) + int(m[5]), int(c[1]) + int(c[2]) + int(c[3])),
        data_bytes=int(t[1]),
    )


def read_latencies(path: Path) -> list[float]:
    """Seconds per request from an h2load ``--log-file`` (2xx only)."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[1].startswith("2"):
            out.append(int(parts[2]) / 1e6)
    return out


@dataclass
class GrpcStep:
    op: str
    connections: int
    seconds: float
    ok: int
    rate: float
    lat: list[float] = field(repr=False, default_factory=list)
    errors: int = 0
    gen_cpu: float = 0.0  # h2load's CPU seconds over the step's wall seconds (1.0 = one core)
    per_target: dict[str, int] = field(default_factory=dict)


@dataclass
class H2load:
    """Runs gRPC steps with h2load; its children live in ``group``."""

    binary: str
    group: ProcessGroup
    workdir: Path
    value_size: int = 100
    _n: int = 0

    def _cmd(
        self, target: str, path: str, data: Path, conns: int, secs: float, log: Path | None
    ) -> list[str]:
        cmd = [
            self.binary,
            "-c",
            str(conns),
            "-m",
            "1",
            "-t",
            "1",
            "-D",
            str(whole_seconds(secs)),
            "-d",
            str(data),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
        ]
        if log is not None:
            cmd += ["--log-file", str(log)]
        return [*cmd, f"http://{target}{path}"]

    async def _run(self, cmds: list[tuple[str, list[str]]], secs: float) -> list[tuple[str, str]]:
        """Start every command at once; their (target, output) once all ended."""
        children: list[tuple[str, Child, Path]] = []
        try:
            for target, cmd in cmds:
                self._n += 1
                out = self.workdir / f"h2load-{self._n}.out"
                out.unlink(missing_ok=True)  # the log is appended to: start empty
                children.append((target, self.group.start("h2load", cmd, log=out), out))
            results = []
            for target, ch, out in children:
                if not await asyncio.to_thread(self.group.reap, ch, secs + 30):
                    raise H2loadError(f"h2load to {target} did not end; {tail(out)}")
                if ch.popen.returncode != 0:
                    raise H2loadError(
                        f"h2load to {target} exited {ch.popen.returncode}: {tail(out)}"
                    )
                results.append((target, out.read_text()))
            return results
        finally:
            self.group.terminate([c for _, c, _ in children], grace=1.0)

    async def step(
        self,
        op: str,
        targets: list[str],
        connections: int,
        seconds: float,
        warmup: float,
        on_measure: Meter | None = None,
    ) -> GrpcStep:
        """One step: writes to ``targets[0]`` only; reads spread, connection i
        to target i mod n (so the first target gets the extra ones).
        ``on_measure`` is started and stopped around the measured run."""
        path, body = request(op, self.value_size)
        data = self.workdir / f"{op}.grpc"
        data.write_bytes(frame(body))
        if op == "write":
            targets = targets[:1]
        share = {
            t: connections // len(targets) + (i < connections % len(targets))
            for i, t in enumerate(targets)
        }
        share = {t: c for t, c in share.items() if c > 0}
        if warmup > 0:  # (at least 1 s: h2load's -D is whole seconds)
            await self._run(
                [(t, self._cmd(t, path, data, c, warmup, None)) for t, c in share.items()], warmup
            )
        before: dict[str, tuple[int, int]] = {}
        for t in share:
            before[t] = await asyncio.to_thread(write_revision if op == "write" else probe, t)
        self._n += 1  # a fresh latency log per step (never a former step's lines)
        logs = {t: self.workdir / f"h2load-{self._n}-{op}-{i}.log" for i, t in enumerate(share)}
        for log in logs.values():
            log.unlink(missing_ok=True)
        cmds = [(t, self._cmd(t, path, data, c, seconds, logs[t])) for t, c in share.items()]
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        if on_measure is not None:
            on_measure.start()
        outputs = await self._run(cmds, seconds)
        if on_measure is not None:
            on_measure.stop()
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        ok = errors = 0
        per: dict[str, int] = {}
        lat: list[float] = []
        for t, text in outputs:
            n = parse_output(text)
            if op == "write":
                # The probe Put after the step is one more revision: not h2load's.
                rev_after = (await asyncio.to_thread(write_revision, t))[0] - 1
                good = min(n.succeeded, max(0, rev_after - before[t][0]))
            else:
                good = min(n.succeeded, round(n.data_bytes / before[t][1]))
            per[t] = good
            ok += good
            errors += n.succeeded - good + n.errors_seen
            lat += read_latencies(logs[t])
        lat.sort()
        return GrpcStep(
            op=op,
            connections=sum(share.values()),
            seconds=whole_seconds(seconds),
            ok=ok,
            rate=ok / whole_seconds(seconds),
            lat=lat,
            errors=errors,
            gen_cpu=cpu / wall if wall > 0 else 0.0,
            per_target=per,
        )
