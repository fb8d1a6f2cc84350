"""Watch fan-out: many watchers on one prefix while writes land under it
(issue 15, "Performance"); liferaft-kv and etcd 3.4 side by side.

    .venv/bin/python bench/watch_fanout.py                 # 1,000 watchers, 500 w/s, 25 s
    .venv/bin/python bench/watch_fanout.py --quick         # 100 watchers, 100 w/s, 5 s
    .venv/bin/python bench/watch_fanout.py --no-etcd --watchers 300 --rate 200

Each round starts a fresh 3-node cluster of each system (liferaft-kv with
``--max-client-connections`` raised by ``--conn-cap``; etcd with its
defaults), one after the other.  ``--watchers`` streams are opened on the
prefix ``bench/``, spread round-robin over the three nodes (liferaft-kv:
``GET /v1/watch?prefix=`` NDJSON; etcd: its JSON gateway's ``POST
/v3/watch``), all from one revision, before the first write.  Then an
open-loop writer puts ``--rate`` new keys per second under the prefix to the
leader for ``--seconds``, then the watchers get ``--drain`` seconds to catch
up.

Each watcher checks its stream: every revision once, in order, from the
start revision to the last write (``lost`` counts revisions skipped inside
a stream, gone for good; ``behind`` the revisions a watcher had not reached
when the drain time ran out, i.e. lag; ``dups`` revisions it got twice or
out of order).  A stream the server
cuts off (liferaft-kv's ``{"error", "resume_revision"}`` line, or a dropped
connection) is reopened from the revision after the last one seen, as the
client does, and counted.  Delay is measured per event per watcher:

- ``from send``: from the moment the writer sent the put to the moment the
  event reached the watcher (includes the write's own commit latency);
- ``after ack``: from the writer's receipt of the put's acknowledgement to
  delivery; an event that arrived before its ack counts as 0.

The watchers' client is a bare asyncio protocol that only scans each chunk
for the event's key and revision (one regex over the chunk), so the load
generator's Python cost per event stays small; it still shares the machine's
cores with the three nodes, which the report gives as CPU seconds of each.

Every process is killed by PID on the way out; the temp dir is removed
unless ``--keep`` or a cluster failed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from benchkit import report as rep  # noqa: E402
from benchkit import runner  # noqa: E402
from kv_bench import (  # noqa: E402
    ETCD,
    LIFERAFT,
    Cluster,
    etcd_version,
    find_etcd,
    start_etcd,
    start_liferaft,
)

from liferaft.harness.procs import ProcessGroup, cpu_seconds  # noqa: E402
from liferaft.kv.bench import Adapter, EtcdAdapter, LiferaftAdapter  # noqa: E402

PREFIX = "bench/"
#: Histogram buckets of 0.1 ms, up to 60 s (anything later lands in the last).
BUCKET_S = 1e-4
BUCKETS = 600_000

# One event's key number and mod revision, as each system writes it.
LIFERAFT_EVENT = re.compile(rb'"kv":\{"key":"bench/(\d+)","value":"[^"]*","revision":(\d+)')
ETCD_EVENT = re.compile(rb'"kv":\{"key":"([^"]+)","create_revision":"\d+","mod_revision":"(\d+)"')
RESUME = re.compile(rb'"resume_revision":(\d+)')
WRITE_REVISION = re.compile(rb'"revision":"?(\d+)')


class Histogram:
    """Delays in 0.1 ms buckets: percentiles without keeping every sample."""

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.n = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        i = int(seconds / BUCKET_S) if seconds > 0 else 0
        self.counts[i if i < BUCKETS else BUCKETS - 1] += 1
        self.n += 1
        if seconds > self.max:
            self.max = seconds

    def pct(self, q: float) -> float | None:
        """The ``q`` quantile in ms (the bucket's upper edge), or None if empty."""
        if not self.n:
            return None
        want = q * self.n
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= want:
                return (i + 1) * BUCKET_S * 1000
        return self.max * 1000


@dataclass
class Shared:
    """What the writer knows (send and ack times by key number) and the
    delay histograms every watcher adds to."""

    sent: dict[int, float] = field(default_factory=dict)
    acked: dict[int, float] = field(default_factory=dict)
    from_send: Histogram = field(default_factory=Histogram)
    after_ack: Histogram = field(default_factory=Histogram)
    unmatched: int = 0  # events whose key the writer never sent (must stay 0)
    top_revision: int = 0  # the highest revision an acknowledged write got


class Watcher(asyncio.Protocol):
    """One watch stream over a raw socket: send the request, then scan every
    chunk for events.  Reopened by :meth:`open` after a cut."""

    def __init__(self, sys_name: str, endpoint: str, start: int, shared: Shared) -> None:
        self.system = sys_name
        u = urlsplit(endpoint)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.shared = shared
        self.last = start - 1  # the last revision seen
        self.lost = 0  # revisions skipped over in the stream
        self.dups = 0
        self.events = 0
        self.cuts = 0  # streams ended by the server or the network, then reopened
        self.created = asyncio.Event()
        self.closed = asyncio.Event()
        self.failed = ""
        self._buf = b""
        self._head = True
        self._transport: asyncio.Transport | None = None
        self._resume: int | None = None
        self._decode: Callable[[bytes], int] = int if sys_name == LIFERAFT else _etcd_key_number
        self._rx = LIFERAFT_EVENT if sys_name == LIFERAFT else ETCD_EVENT

    def request(self) -> bytes:
        start = self.last + 1
        host = f"{self.host}:{self.port}"
        if self.system == LIFERAFT:
            path = f"/v1/watch?prefix={PREFIX}&start_revision={start}"
            return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        body = json.dumps({"create_request": {
            "key": _b64(PREFIX), "range_end": _b64(PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)),
            "start_revision": str(start),
        }}).encode()  # fmt: skip
        return (
            f"POST /v3/watch HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def open(self) -> None:
        self._buf, self._head, self._resume = b"", True, None
        self.closed.clear()
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, self.host, self.port)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self.request())

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.closed.set()

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data
        if self._head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            status = buf[: buf.find(b"\r\n")]
            if b" 200 " not in status + b" ":
                self.failed = status.decode(errors="replace")
                self.close()
                return
            self._head = False
            buf = buf[end + 4 :]
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._buf = buf
            return
        block, self._buf = buf[:cut], buf[cut + 1 :]
        if not self.created.is_set() and b'"created":true' in block:
            self.created.set()
        now = time.monotonic()
        sh = self.shared
        sent, acked = sh.sent, sh.acked
        for key, rev_b in self._rx.findall(block):
            rev = int(rev_b)
            if rev <= self.last:
                self.dups += 1
                continue
            self.lost += rev - self.last - 1
            self.last = rev
            self.events += 1
            n = self._decode(key)
            t = sent.get(n)
            if t is None:
                sh.unmatched += 1
                continue
            sh.from_send.add(now - t)
            a = acked.get(n)
            sh.after_ack.add(0.0 if a is None else now - a)
        if b'"error"' in block:
            m = RESUME.search(block)
            self._resume = int(m.group(1)) if m else None
            self.close()


_ETCD_KEYS: dict[bytes, int] = {}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _etcd_key_number(key: bytes) -> int:
    n = _ETCD_KEYS.get(key)
    if n is None:
        n = int(base64.b64decode(key).decode().rsplit("/", 1)[1])
        _ETCD_KEYS[key] = n
    return n


# -- one run ------------------------------------------------------------------------------


@dataclass
class RunResult:
    system: str
    round: int
    watchers: int = 0
    writes_sent: int = 0
    writes_ok: int = 0
    write_errors: int = 0
    not_sent: int = 0  # writes the writer could not start on time (in-flight cap)
    offered_rate: float = 0.0
    achieved_rate: float = 0.0
    first_revision: int = 0
    last_revision: int = 0
    events: int = 0
    expected_events: int = 0
    lost: int = 0  # revisions skipped inside a stream: events lost for good
    behind: int = 0  # revisions not yet delivered when the drain time ran out
    dups: int = 0
    cuts: int = 0
    unmatched: int = 0
    caught_up_s: float | None = None
    from_send_ms: dict[str, float | None] = field(default_factory=dict)
    after_ack_ms: dict[str, float | None] = field(default_factory=dict)
    write_ms: dict[str, float | None] = field(default_factory=dict)
    node_cpu_s: dict[str, float] = field(default_factory=dict)
    gen_cpu_s: float = 0.0
    seconds: float = 0.0
    error: str | None = None


def _pcts(h: Histogram) -> dict[str, float | None]:
    return {
        "p50": h.pct(0.5),
        "p99": h.pct(0.99),
        "max": h.max * 1000 if h.n else None,
    }


async def first_put(http: aiohttp.ClientSession, adapter: Adapter) -> int:
    """One write outside the prefix; its revision (the watchers start after it)."""
    req = adapter.write(0)
    url = str(req.url).replace("bench/0", "bench-start")  # liferaft: the key is in the path
    body = req.body
    if isinstance(adapter, EtcdAdapter):
        body = json.dumps({"key": _b64("bench-start"), "value": _b64("x")}).encode()
    async with http.request(req.method, url, data=body, headers=req.headers) as r:
        raw = await r.read()
        if r.status != 200:
            raise RuntimeError(f"first put: HTTP {r.status} {raw[:200]!r}")
    m = WRITE_REVISION.search(raw)
    if not m:
        raise RuntimeError(f"first put: no revision in {raw[:200]!r}")
    return int(m.group(1))


async def write_load(
    http: aiohttp.ClientSession, adapter: Adapter, sh: Shared, rr: RunResult, a: Any
) -> None:
    """Open loop: put key i at t0 + i/rate; at most ``a.inflight`` at once."""
    total = int(a.rate * a.seconds)
    sem = asyncio.Semaphore(a.inflight)
    lat = Histogram()
    tasks: set[asyncio.Task[None]] = set()

    async def put(i: int) -> None:
        req = adapter.write(i)
        try:
            sh.sent[i] = t = time.monotonic()
            async with http.request(req.method, req.url, data=req.body, headers=req.headers) as r:
                raw = await r.read()
                m = WRITE_REVISION.search(raw) if r.status == 200 else None
            now = time.monotonic()
            if m is not None:
                sh.top_revision = max(sh.top_revision, int(m.group(1)))
                sh.acked[i] = now
                rr.writes_ok += 1
                lat.add(now - t)
            else:
                rr.write_errors += 1
        except (aiohttp.ClientError, TimeoutError):
            rr.write_errors += 1
        finally:
            sem.release()

    t0 = time.monotonic()
    for i in range(1, total + 1):
        delay = t0 + i / a.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if sem.locked():
            rr.not_sent += 1
            continue
        await sem.acquire()
        rr.writes_sent += 1
        task = asyncio.create_task(put(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    rr.offered_rate = a.rate
    rr.achieved_rate = rr.writes_ok / max(time.monotonic() - t0, 1e-9)
    rr.write_ms = _pcts(lat)


async def run_round(
    system: str, c: Cluster, adapter: Adapter, rr: RunResult, a: Any, say: Callable[[str], None]
) -> None:
    await c.wait_ready()
    sh = Shared()
    conn = aiohttp.TCPConnector(limit=a.inflight)
    async with aiohttp.ClientSession(connector=conn) as http:
        await adapter.discover(http)
        r0 = await first_put(http, adapter)
        rr.first_revision = r0 + 1
        eps = adapter.endpoints
        ws = [Watcher(system, eps[i % len(eps)], r0 + 1, sh) for i in range(a.watchers)]
        for i in range(0, len(ws), 50):  # 50 connects at a time: no SYN flood on one core
            await asyncio.gather(*(w.open() for w in ws[i : i + 50]))
        try:
            await asyncio.wait_for(asyncio.gather(*(w.created.wait() for w in ws)), 60)
        except TimeoutError:
            bad = [w.failed for w in ws if not w.created.is_set()]
            raise RuntimeError(f"{len(bad)} watchers not created: {bad[:3]}") from None
        rr.watchers = len(ws)
        say(f"{system} r{rr.round}: {len(ws)} watchers from revision {r0 + 1}, leader "
            f"{adapter.leader_name}; writing {a.rate}/s for {a.seconds:g} s")  # fmt: skip
        keeper = asyncio.create_task(_reopen(ws))
        cpu0 = {p.name: cpu_seconds(p.pid) or 0.0 for p in c.procs}
        g0 = self_cpu()
        t0 = time.monotonic()
        await write_load(http, adapter, sh, rr, a)
        wrote = time.monotonic()
        deadline = wrote + a.drain
        # Every watcher must reach the highest revision written: the highest
        # acknowledged one, or higher if an unacknowledged write committed.
        target = r0
        while time.monotonic() < deadline:
            target = max(target, sh.top_revision, *(w.last for w in ws))
            if all(w.last >= target for w in ws):
                rr.caught_up_s = time.monotonic() - wrote
                break
            await asyncio.sleep(0.05)
        rr.seconds = time.monotonic() - t0
        rr.node_cpu_s = {
            p.name: round((cpu_seconds(p.pid) or 0.0) - cpu0[p.name], 2) for p in c.procs
        }
        rr.gen_cpu_s = round(self_cpu() - g0, 2)
        keeper.cancel()
        for w in ws:
            w.close()
    rr.last_revision = target
    rr.expected_events = (target - r0) * len(ws)
    rr.events = sum(w.events for w in ws)
    rr.lost = sum(w.lost for w in ws)
    rr.behind = sum(target - w.last for w in ws)
    rr.dups = sum(w.dups for w in ws)
    rr.cuts = sum(w.cuts for w in ws)
    rr.unmatched = sh.unmatched
    rr.from_send_ms = _pcts(sh.from_send)
    rr.after_ack_ms = _pcts(sh.after_ack)


async def _reopen(ws: list[Watcher]) -> None:
    """Reopen any stream that ended (from the revision after its last), as a
    resuming client does."""
    while True:
        await asyncio.sleep(0.05)
        for w in ws:
            if w.closed.is_set() and w._transport is None:
                w.cuts += 1
                if w._resume is not None and w._resume != w.last + 1:
                    w.failed = f"resume_revision {w._resume} but last seen {w.last}"
                try:
                    await w.open()
                except OSError as exc:
                    w.failed = f"reopen: {exc}"


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# -- report -------------------------------------------------------------------------------


def fmt_ms(d: dict[str, float | None], k: str) -> str:
    v = d.get(k)
    return "n/a" if v is None else f"{v:.1f}"


def report(runs: list[RunResult], a: Any) -> str:
    head = (
        "| system | round | watchers | writes ok / sent (errors, not sent) | w/s | events "
        "(expected) | lost | behind at end | dups | cuts | from send p50 / p99 / max ms | "
        "after ack p50 / p99 ms | write p50 / p99 ms | catch-up s | node CPU s | gen CPU s |"
    )
    lines = [head, "|" + "---|" * 16]
    for r in runs:
        if r.error:
            lines.append(f"| {r.system} | {r.round} | FAILED: {r.error} |" + " |" * 13)
            continue
        fs, aa, wm = r.from_send_ms, r.after_ack_ms, r.write_ms
        cpu = " + ".join(f"{v:.1f}" for v in r.node_cpu_s.values())
        caught = "n/a" if r.caught_up_s is None else f"{r.caught_up_s:.2f}"
        lines.append(
            f"| {r.system} | {r.round} | {r.watchers} | {r.writes_ok:,} / {r.writes_sent:,} "
            f"({r.write_errors}, {r.not_sent}) | {r.achieved_rate:,.0f} | {r.events:,} "
            f"({r.expected_events:,}) | {r.lost:,} | {r.behind:,} | {r.dups:,} | {r.cuts} | "
            f"{fmt_ms(fs, 'p50')} / {fmt_ms(fs, 'p99')} / {fmt_ms(fs, 'max')} | "
            f"{fmt_ms(aa, 'p50')} / {fmt_ms(aa, 'p99')} | {fmt_ms(wm, 'p50')} / "
            f"{fmt_ms(wm, 'p99')} | {caught} | {cpu} | {r.gen_cpu_s:.1f} |"
        )
    ok = [r for r in runs if not r.error]
    verdict = "; ".join(
        f"{r.system} r{r.round}: lost={r.lost} behind={r.behind} dups={r.dups} cuts={r.cuts} "
        f"p99 from send {fmt_ms(r.from_send_ms, 'p99')} ms" for r in ok
    )  # fmt: skip
    return "\n".join(lines) + f"\n\nSUMMARY: {a.watchers} watchers, {a.rate} w/s: {verdict}"


# -- main ---------------------------------------------------------------------------------


async def main_async(
    a: Any, tmp: Path, etcd: str | None, runs: list[RunResult], group: ProcessGroup
) -> None:
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    systems = [LIFERAFT] + ([ETCD] if etcd else [])
    for rnd in range(1, a.rounds + 1):
        for system in systems:
            rr = RunResult(system, rnd)
            runs.append(rr)
            base = tmp / f"{system}-r{rnd}"
            base.mkdir(parents=True)
            c: Cluster | None = None
            try:
                if system == LIFERAFT:
                    flags = ("--max-client-connections", str(a.conn_cap))
                    c = start_liferaft(group, base, a.pin, flags)
                    adapter: Adapter = LiferaftAdapter(c.endpoints)
                else:
                    assert etcd is not None
                    c = start_etcd(group, etcd, base, a.pin)
                    adapter = EtcdAdapter(c.endpoints, prefix="/v3")
                await run_round(system, c, adapter, rr, a, say)
                say(f"  {report([rr], a).splitlines()[-1]}")
            except Exception as exc:  # one failed cluster must not cost the others
                rr.error = f"{type(exc).__name__}: {exc}"
                say(f"{system} r{rnd}: FAILED: {rr.error} (logs in {base})")
            finally:
                if c is not None:
                    c.stop()


def main(argv: list[str] | None = None) -> int:
    p = runner.parser(
        "python bench/watch_fanout.py",
        "Watch fan-out: N watchers on one prefix under a steady write rate, liferaft-kv "
        "and etcd 3.4.",
        quick_help="100 watchers, 100 w/s, 5 s (smoke run)",
        rounds_help="rounds of liferaft, etcd (default 1)",
    )
    p.add_argument("--watchers", type=int, default=1000)
    p.add_argument("--rate", type=float, default=500.0, help="writes per second (default 500)")
    p.add_argument("--seconds", type=float, default=25.0, help="write for this long (25)")
    p.add_argument("--drain", type=float, default=15.0, help="catch-up time after (15 s)")
    p.add_argument("--inflight", type=int, default=64, help="writes in flight at most (64)")
    p.add_argument("--conn-cap", type=int, default=4096, help="liferaft --max-client-connections")
    p.add_argument("--no-etcd", action="store_true")
    p.add_argument("--etcd", help="path to the etcd binary")
    runner.add_run_flags(p, keep_help="keep the temp dir (logs, data)")
    a = p.parse_args(argv)
    if a.quick:
        a.watchers, a.rate, a.seconds, a.drain = 100, 100.0, 5.0, 5.0
    a.rounds = a.rounds or 1
    if a.watchers < 1 or a.rate <= 0 or a.seconds <= 0:
        p.error("--watchers, --rate and --seconds must be positive")
    etcd = None if a.no_etcd else find_etcd(a.etcd)
    tmp = runner.temp_dir("liferaft-watch-fanout-")
    print(runner.header("watch_fanout", a.quick, tmp), flush=True)
    version = f"etcd {etcd_version(etcd)}" if etcd else "etcd not measured"
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {version}", flush=True)
    runs: list[RunResult] = []
    group = ProcessGroup(new_session=True)
    rc = runner.run(main_async(a, tmp, etcd, runs, group), group.kill_all_now)
    failed = any(r.error or r.lost or r.dups or r.behind for r in runs)
    if runs:
        print(report(runs, a))
        print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if a.json:
            rep.write_json(a.json, {"argv": sys.argv, "runs": [asdict(r) for r in runs]})
    runner.finish(tmp, bool(a.keep or failed or rc), " (logs and data)")
    return rc or (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
