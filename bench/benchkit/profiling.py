"""Where the liferaft leader's time goes: summaries of a cProfile dump
(``--profile``) or of py-spy's raw samples (``--py-spy``), for a bench
node (bench/raft_bench.py) and for a liferaft-kv server (bench/kv_bench.py,
:func:`summarize_pyspy_http`).

cProfile instruments every call of the event-loop thread, so it counts
calls exactly but inflates small, frequent functions (asyncio's are), and it
sees nothing of other threads.  py-spy samples every thread from outside
(no instrumentation), so its shares are closer to the truth; it attributes
C calls (socket sends, msgspec) to the Python function that made them.
"""

from __future__ import annotations

import os
import pstats
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

AREAS = (
    ("liferaft/core/", "liferaft.core (Raft)"),
    ("liferaft/runtime/", "liferaft.runtime (Node)"),
    ("liferaft/transport/", "liferaft.transport (TCP)"),
    ("liferaft/codec/", "liferaft.codec"),
    ("liferaft/storage/", "liferaft.storage"),
    ("bench/", "load generator (bench/)"),
    ("asyncio/", "asyncio"),
    ("concurrent/futures/", "thread pool"),
    ("threading.py", "threading"),
)
IDLE = "idle (epoll wait)"


def area_of(file: str, func: str = "") -> str:
    if file == "~" and ("epoll" in func or "select" in func):
        return IDLE
    for frag, name in AREAS:
        if frag in file:
            return name
    if file == "~":
        return "builtins (socket, msgspec, struct, ...)"
    return "other Python"


NODE_FRAGS = ("liferaft/", "bench/", "asyncio/", "concurrent/")
HTTP_FRAGS = ("liferaft/", "aiohttp/", "asyncio/", "multidict/", "yarl/", "concurrent/")


def short(file: str, frags: tuple[str, ...] = NODE_FRAGS) -> str:
    """The path from the first known package folder on (else the file name)."""
    for frag in frags:
        i = file.find(frag)
        if i >= 0:
            return file[i:]
    return os.path.basename(file)


def summarize(path: str, label: str, top: int = 15) -> str:
    """A bench node's profile: py-spy raw samples (``.pyspy``) or cProfile."""
    if path.endswith(".pyspy"):
        return summarize_pyspy(path, label, top)
    return summarize_cprofile(path, label, top)


def read_pyspy(path: str) -> Iterator[tuple[str, list[str], int]]:
    """Raw py-spy output (``--threads --format raw``), one line per distinct
    stack, ``thread (tid): name;frame;frame... count``: (thread name,
    frames outermost first, count); a thread sampled between frames is
    left out."""
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            frames = stack.split(";")
            if len(frames) > 1:
                yield frames[0].split(": ", 1)[-1], frames[1:], int(n)


def pyspy_cmd(py_spy: str, pid: int, seconds: int, out: str) -> list[str]:
    """py-spy sampling ``pid`` for ``seconds`` at 1000 Hz, every thread, raw
    stacks to ``out`` (``--nonblocking``: the target is never paused)."""
    return [
        py_spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "1000", "--threads",
        "--full-filenames", "--nonblocking", "--format", "raw", "-o", out,
    ]  # fmt: skip


def find_py_spy(given: str | None) -> str | None:
    """``--py-spy`` with no path: the one next to python, else on PATH."""
    if given != "auto":
        return given
    cand = Path(sys.executable).parent / "py-spy"
    return str(cand) if cand.exists() else shutil.which("py-spy")


def summaries(profiles: Iterable[tuple[str, str]], fn: Callable[[str, str], str]) -> str:
    """The summary of each (path, label); a bad profile must not cost the
    report, so it is named instead."""
    out = ""
    for path, label in profiles:
        try:
            out += fn(path, label)
        except Exception as exc:  # noqa: BLE001 - reported in the text
            out += f"\n(profile {path} unreadable: {exc!r})\n"
    return out


def summarize_cprofile(path: str, label: str, top: int = 15) -> str:
    st = pstats.Stats(path)
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values()) or 1.0
    idle = sum(v[2] for k, v in raw.items() if area_of(k[0], k[2]) == IDLE)
    busy = total - idle or 1.0
    areas: Counter[str] = Counter()
    for k, v in raw.items():
        areas[area_of(k[0], k[2])] += v[2]
    out = [
        "",
        f"Profile of the {label} leader (cProfile, event-loop thread, one step at the max"
        f" rate): {total:.2f} s profiled, {idle / total * 100:.0f}% idle in epoll; shares are"
        " of the busy time.",
        "",
        "| area (self time) | % of busy |",
        "|---|---:|",
    ]
    for name, t in areas.most_common():
        if name != IDLE:
            out.append(f"| {name} | {t / busy * 100:.1f}% |")
    out += ["", "| function (self time) | calls | % of busy |", "|---|---:|---:|"]
    items = sorted(
        ((k, v) for k, v in raw.items() if area_of(k[0], k[2]) != IDLE), key=lambda kv: -kv[1][2]
    )
    for (file, line, func), v in items[:top]:
        where = func if file == "~" else f"{func} ({short(file)}:{line})"
        out.append(f"| {where} | {v[1]:,} | {v[2] / busy * 100:.1f}% |")
    return "\n".join(out) + "\n"


def split_frame(f: str) -> tuple[str, str]:
    """'func (path:line)' -> (func, path:line)."""
    i = f.rfind(" (")
    if i < 0 or not f.endswith(")"):
        return f, ""
    return f[:i], f[i + 2 : -1]


def _thread_kind(tname: str, frames: list[str]) -> str:
    names = [split_frame(f)[0] for f in frames]
    leaf = names[-1] if names else ""
    if tname == "MainThread":
        if leaf.endswith("EpollSelector.select"):
            return "event loop: waiting in epoll"
        return "event loop: running"
    if "HardStateStore.save" in names:
        return "storage thread: hard-state file (tmp, fsync, rename, dir fsync)"
    if "WAL.append" in names:
        return "storage thread: WAL append + fdatasync"
    if any(n.endswith(".save") for n in names):
        return "storage thread: other"
    if leaf == "_worker":
        return "worker threads: waiting for work"
    return "worker threads: other"


def summarize_pyspy(path: str, label: str, top: int = 15) -> str:
    """Raw py-spy output (``--threads --format raw``): one line per distinct
    stack, ``thread (tid): name;frame;frame... count``.  Samples of a thread
    blocked in epoll or waiting for work are counted apart, as waiting."""
    kinds: Counter[str] = Counter()
    main_leaf: Counter[str] = Counter()
    main_area: Counter[str] = Counter()
    main_incl: Counter[str] = Counter()
    main_total = 0
    for tname, frames, count in read_pyspy(path):
        kind = _thread_kind(tname, frames)
        kinds[kind] += count
        if kind != "event loop: running":
            continue
        main_total += count
        func, where = split_frame(frames[-1])
        file, _, line_no = where.rpartition(":")
        main_leaf[f"{func} ({short(file)}:{line_no})"] += count
        main_area[area_of(file, func)] += count
        seen = set()
        for fr in frames:
            func, where = split_frame(fr)
            if "liferaft/" in where:
                key = f"{func} ({short(where.rpartition(':')[0])})"
                if key not in seen:
                    seen.add(key)
                    main_incl[key] += count
    waiting = {k: c for k, c in kinds.items() if "waiting" in k}
    busy = {k: c for k, c in kinds.items() if "waiting" not in k}
    total = sum(busy.values()) or 1
    mt = main_total or 1
    out = [
        "",
        f"Profile of the {label} leader (py-spy, sampled at 1000 Hz, every thread, one step at"
        f" the max rate): {total:,} busy samples"
        + "".join(f"; {k}: {c:,}" for k, c in waiting.items())
        + (" (not counted)." if waiting else "."),
        "",
        "| where | % of busy samples |",
        "|---|---:|",
    ]
    for name, c in sorted(busy.items(), key=lambda kv: -kv[1]):
        out.append(f"| {name} | {c / total * 100:.1f}% |")
    out += ["", "Event-loop thread, running:", "", "| area (self) | % |", "|---|---:|"]
    for name, c in main_area.most_common():
        out.append(f"| {name} | {c / mt * 100:.1f}% |")
    out += ["", "| function (self) | % |", "|---|---:|"]
    for name, c in main_leaf.most_common(top):
        out.append(f"| {name} | {c / mt * 100:.1f}% |")
    out += ["", "| liferaft function (inclusive) | % |", "|---|---:|"]
    for name, c in main_incl.most_common(top):
        out.append(f"| {name} | {c / mt * 100:.1f}% |")
    return "\n".join(out) + "\n"


# -- a liferaft-kv server (HTTP) ---------------------------------------------------------

# (fragment of the file path, area), first match wins.  py-spy samples Python
# frames only: time in C (the aiohttp C parser, msgspec, socket calls) counts
# for the Python function that called it.
HTTP_AREAS = (
    ("liferaft/etcd/", "liferaft.etcd (etcd API handlers, gateway)"),
    ("grpc/", "grpcio (asyncio server, Python/Cython frames)"),
    ("google/protobuf/", "protobuf (messages, JSON mapping)"),
    ("liferaft/kv/", "liferaft.kv (HTTP handlers, JSON via msgspec, state machine)"),
    ("liferaft/runtime/", "liferaft.runtime (Node)"),
    ("liferaft/core/", "liferaft.core (Raft)"),
    ("liferaft/storage/", "liferaft.storage (WAL)"),
    ("liferaft/transport/", "liferaft.transport (peer TCP)"),
    ("liferaft/codec/", "liferaft.codec"),
    ("aiohttp/", "aiohttp (HTTP server: parsing, routing, responses)"),
    ("multidict/", "aiohttp (HTTP server: parsing, routing, responses)"),
    ("yarl/", "aiohttp (HTTP server: parsing, routing, responses)"),
    ("asyncio/", "asyncio (event loop, transports, futures)"),
    ("prometheus_client/", "prometheus-client (metrics)"),
    ("msgspec/", "msgspec"),
    ("concurrent/futures/", "thread pool"),
    ("threading.py", "threading"),
    ("logging/", "logging"),
)

# Leaf frames that are, in practice, one syscall: named apart from their
# library's area, since on loopback a send is the kernel delivering the bytes.
SYSCALL_LEAVES = (
    ("FileSystem.fdatasync", "liferaft/storage/", "fdatasync of the WAL, on the loop thread"),
    ("StreamWriter.writelines", "asyncio/streams.py", "socket sends: peer TCP (asyncio streams)"),
    ("StreamWriter.write", "asyncio/streams.py", "socket sends: peer TCP (asyncio streams)"),
    ("StreamWriter._writelines", "aiohttp/http_writer.py", "socket sends: HTTP responses"),
    ("StreamWriter._write", "aiohttp/http_writer.py", "socket sends: HTTP responses"),
)

# Inclusive stages: a sample counts for a stage when any frame of its stack
# matches (function name prefix, file fragment).
STAGES = (
    ("aiohttp: request parsing (RequestHandler.data_received)", "data_received", "aiohttp/"),
    ("aiohttp: handler dispatch + middlewares (_handle_request)", "_handle_request", "aiohttp/"),
    ("aiohttp: response writing (finish_response/prepare/write)", "finish_response", "aiohttp/"),
    ("liferaft.kv: PUT handler (KVServer.put)", "KVServer.put", "liferaft/kv/"),
    ("liferaft.kv: GET handler (KVServer.get)", "KVServer.get", "liferaft/kv/"),
    ("liferaft.kv: JSON decode of bodies (_decode)", "_decode", "liferaft/kv/"),
    ("liferaft.kv: JSON responses (_json)", "_json", "liferaft/kv/"),
    ("liferaft.kv: state machine apply", "KVMachine.", "liferaft/kv/"),
    ("liferaft.etcd: all (etcd handlers, gateway)", "", "liferaft/etcd/"),
    ("grpcio: all Python/Cython frames", "", "grpc/"),
    ("protobuf: all", "", "google/protobuf/"),
    ("liferaft.kv: metrics (prometheus observe)", "", "prometheus_client/"),
    ("liferaft.runtime: Node.propose", "Node.propose", "liferaft/runtime/"),
    ("liferaft.runtime: all", "", "liferaft/runtime/"),
    ("liferaft.core: all", "", "liferaft/core/"),
    ("liferaft.storage: all", "", "liferaft/storage/"),
    ("liferaft.transport: all", "", "liferaft/transport/"),
)


# Leaf frames that mean "in the event loop's C code" (uvloop.run, asyncio.run).
LOOP_ENTRY = ("Runner.run", "run", "run_until_complete", "run_forever")


def _http_area(path: str, func: str = "") -> str:
    for fn, frag, name in SYSCALL_LEAVES:
        if func == fn and frag in path:
            return name
    for frag, name in HTTP_AREAS:
        if frag in path:
            return name
    return "other Python"


def summarize_pyspy_http(path: str, label: str, top: int = 15) -> str:
    """Raw py-spy output (``--threads --format raw``): a line per distinct
    stack, ``thread (tid): name;frame;frame... count``.  The event-loop thread
    (MainThread) is split into waiting (in epoll) and running; other threads
    are counted by what they run."""
    threads: Counter[str] = Counter()
    area: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    stage: Counter[str] = Counter()
    running = 0
    for tname, frames, count in read_pyspy(path):
        parsed = [split_frame(fr) for fr in frames]
        func, where = parsed[-1]
        if tname != "MainThread":
            names = [fn for fn, _ in parsed]
            if func == "_worker" or "_WorkItem.run" not in names:
                kind = "waiting"
            elif any("liferaft/storage/" in w for _, w in parsed):
                kind = "liferaft.storage (WAL append + fdatasync)"
            elif any("liferaft/transport/" in w for _, w in parsed):
                kind = "liferaft.transport"
            else:
                kind = "other"
            threads[f"other threads: {kind}"] += count
            continue
        if func.endswith("select") and "selectors.py" in where:
            threads["event loop: waiting in epoll"] += count
            continue
        if func in LOOP_ENTRY and ("runners.py" in where or "uvloop" in where):
            # uvloop runs the loop in C: with no Python frame above the
            # loop's entry, the sample is uvloop itself (socket reads,
            # callbacks, task stepping), or a wait py-spy did not see as
            # idle.  Without --native it cannot be split further.
            threads["event loop: inside uvloop/C, no Python frame"] += count
            continue
        threads["event loop: running"] += count
        running += count
        file, _, line_no = where.rpartition(":")
        area[_http_area(file, func)] += count
        leaf[f"{func} ({short(file, HTTP_FRAGS)}:{line_no})"] += count
        for name, fn_prefix, frag in STAGES:
            if any(
                frag in w and (not fn_prefix or fn.startswith(fn_prefix) or f".{fn_prefix}" in fn)
                for fn, w in parsed
            ):
                stage[name] += count
    total = sum(threads.values()) or 1
    run = running or 1
    out = [
        "",
        f"Profile of the {label} leader (py-spy, 1000 Hz, every thread): {total:,} samples.",
        "",
        "| thread: state | % of samples |",
        "|---|---:|",
    ]
    for k, c in threads.most_common():
        out.append(f"| {k} | {c / total * 100:.1f}% |")
    out += ["", "Event-loop thread, running (self time by area):", ""]
    out += ["| area (self) | % of running |", "|---|---:|"]
    for k, c in area.most_common():
        out.append(f"| {k} | {c / run * 100:.1f}% |")
    out += ["", "| stage (inclusive) | % of running |", "|---|---:|"]
    for name, _, _ in STAGES:
        if stage[name]:
            out.append(f"| {name} | {stage[name] / run * 100:.1f}% |")
    out += ["", "| function (self) | % of running |", "|---|---:|"]
    for k, c in leaf.most_common(top):
        out.append(f"| {k} | {c / run * 100:.1f}% |")
    return "\n".join(out) + "\n"
