"""Where the liferaft leader's time goes: summaries of a cProfile dump
(``--profile``) or of py-spy's raw samples (``--py-spy``).

cProfile instruments every call of the event-loop thread, so it counts
calls exactly but inflates small, frequent functions (asyncio's are), and it
sees nothing of other threads.  py-spy samples every thread from outside
(no instrumentation), so its shares are closer to the truth; it attributes
C calls (socket sends, msgspec) to the Python function that made them.
"""

from __future__ import annotations

import os
import pstats
from collections import Counter
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


def short(file: str) -> str:
    for frag in ("liferaft/", "bench/", "asyncio/", "concurrent/"):
        i = file.find(frag)
        if i >= 0:
            return file[i:]
    return os.path.basename(file)


def summarize(path: str, label: str, top: int = 15) -> str:
    if path.endswith(".pyspy"):
        return summarize_pyspy(path, label, top)
    return summarize_cprofile(path, label, top)


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


def _frame(f: str) -> tuple[str, str]:
    """'func (path:line)' -> (func, path:line)."""
    i = f.rfind(" (")
    if i < 0 or not f.endswith(")"):
        return f, ""
    return f[:i], f[i + 2 : -1]


def _thread_kind(tname: str, frames: list[str]) -> str:
    names = [_frame(f)[0] for f in frames]
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
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not n.isdigit():
                continue
            count = int(n)
            frames = stack.split(";")
            tname = frames[0].split(": ", 1)[-1]
            frames = frames[1:]
            if not frames:  # a thread sampled between frames
                continue
            kind = _thread_kind(tname, frames)
            kinds[kind] += count
            if kind != "event loop: running":
                continue
            main_total += count
            func, where = _frame(frames[-1])
            file, _, line_no = where.rpartition(":")
            main_leaf[f"{func} ({short(file)}:{line_no})"] += count
            main_area[area_of(file, func)] += count
            seen = set()
            for fr in frames:
                func, where = _frame(fr)
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
