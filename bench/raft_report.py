"""The tables and ratios bench/raft_bench.py ends with (BENCHMARKS.md
quotes them; docs/bench.md, "The figures")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchkit import report as rep
from benchkit.profiling import summaries, summarize
from benchkit.stats import fmt, med

if TYPE_CHECKING:
    from raft_bench import Bench, ClusterResult

SYSTEMS: dict[str, str] = {
    "liferaft-sync": "liferaft sync on",
    "liferaft-mem": "liferaft sync off",
    "pysyncobj": "PySyncObj (memory)",
}


def report(b: Bench, elapsed: float, partial: bool = False) -> dict[str, Any]:
    plan = b.plan
    et = b.et()
    by: dict[str, list[ClusterResult]] = {s: [] for s in b.args.systems}
    for r in b.results:
        by[r.system].append(r)
    fs = med([e["fsync"]["p50"] for e in b.env])
    rtt = med([e["rtt"]["p50"] for e in b.env])
    hsw = med([e["hardstate"]["p50"] for e in b.env])
    # fdatasync + RTT, the floor of a durable write; with either missing
    # (no sample) there is no floor to compare with, rather than a lower one.
    yard = fs[0] + rtt[0] if fs and rtt and fs[0] + rtt[0] > 0 else None

    def metrics(rs: list[ClusterResult]) -> dict[str, Any]:
        ok = [r for r in rs if r.error is None]

        def lat(r: ClusterResult, which: str, q: str) -> float | None:
            d = getattr(r, which)
            return None if d is None else d[q]

        return {
            "n": len(ok),
            "max": med([r.max_rate for r in ok if r.max_rate]),
            "p50_100": med([lat(r, "lat100", "p50") for r in ok]),
            "p99_100": med([lat(r, "lat100", "p99") for r in ok]),
            "p50_half": med([lat(r, "lathalf", "p50") for r in ok]),
            "p99_half": med([lat(r, "lathalf", "p99") for r in ok]),
            "half_rate": med([r.lathalf["rate"] if r.lathalf else None for r in ok]),
            "failover": med([f.get("failover") for r in ok for f in r.failovers]),
            "failover_n": sum(1 for r in ok for f in r.failovers if f.get("failover") is not None),
            "leader_changes": sum(r.leader_changes for r in ok),
            "errors": [r.error for r in rs if r.error],
        }

    ms = {s: metrics(rs) for s, rs in by.items()}
    rate = lambda x: f"{x:,.0f}"  # noqa: E731
    ms_ = lambda x: f"{x:.2f}"  # noqa: E731
    sec = lambda x: f"{x:.2f}"  # noqa: E731
    lines = []
    lines.append(
        "| system | max sustained writes/s | p50 / p99 at 100/s (ms) | half of max: rate, "
        "p50 / p99 (ms) | failover (s) | in flight ≤ |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|")
    for s, m in ms.items():
        n = m["n"]
        lines.append(
            f"| {SYSTEMS[s]} | {fmt(m['max'], rate, n)} | {fmt(m['p50_100'], ms_, n)} / "
            f"{fmt(m['p99_100'], ms_, n)} | {fmt(m['half_rate'], rate, 1)}: "
            f"{fmt(m['p50_half'], ms_, n)} / {fmt(m['p99_half'], ms_, n)} | "
            f"{fmt(m['failover'], sec, m['failover_n'])} | {plan.inflight[s]:,} |"
        )
    nr = len(b.env)
    lines.append("")
    lines.append(
        f"Yardsticks (same run): raw write(100 B)+fdatasync p50 {fmt(fs, lambda x: f'{x:.3f}', nr)}"
        f" ms; loopback TCP RTT p50 {fmt(rtt, lambda x: f'{x * 1e3:.0f}', nr)} µs; "
        f"sum {'n/a' if yard is None else f'{yard:.3f}'} ms. (liferaft's hard-state file "
        "write, tmp+fsync+rename+dir fsync, p50 "
        f"{fmt(hsw, lambda x: f'{x:.3f}', nr)} ms.) Election timeout {et:.2f} s "
        f"(liferaft tick {plan.tick} s × {plan.election_ticks}; randomized in [ET, 2 ET); "
        f"PySyncObj raftMin/MaxTimeout {et:.1f}/{2 * et:.1f} s)."
    )
    table = "\n".join(lines)

    def ratio(a: str, b_: str, key: str) -> float | None:
        x, y = ms.get(a, {}).get(key), ms.get(b_, {}).get(key)
        if not x or not y or not y[0]:
            return None
        return float(x[0] / y[0])

    ratios: dict[str, Any] = {}
    verdicts = []
    thr = ratio("liferaft-sync", "pysyncobj", "max")
    if thr is not None:
        ratios["throughput sync on / PySyncObj"] = thr
        verdicts.append(("throughput", thr >= 1.0))
    thr2 = ratio("liferaft-mem", "pysyncobj", "max")
    if thr2 is not None:
        ratios["throughput sync off / PySyncObj"] = thr2
    m_sync = ms.get("liferaft-sync")
    if m_sync and m_sync["p50_100"] and yard:
        lr = m_sync["p50_100"][0] / yard
        ratios["p50 at 100/s sync on / (fdatasync + RTT)"] = lr
        verdicts.append(("latency", lr <= 1.5))
    m_mem = ms.get("liferaft-mem")
    if m_mem and m_mem["p50_100"] and rtt and rtt[0]:
        ratios["p50 at 100/s sync off / RTT"] = m_mem["p50_100"][0] / rtt[0]
    lat_pso = ratio("liferaft-sync", "pysyncobj", "p50_100")
    if lat_pso is not None:
        ratios["p50 at 100/s sync on / PySyncObj"] = lat_pso
    for s in ms:
        if ms[s]["failover"]:
            ratios[f"failover {SYSTEMS[s]} / election timeout"] = ms[s]["failover"][0] / et
    if m_sync and m_sync["failover"]:
        verdicts.append(("failover", m_sync["failover"][0] / et <= 1.5))
    targets = {
        "throughput sync on / PySyncObj": "≥ 1.0",
        "p50 at 100/s sync on / (fdatasync + RTT)": "≤ 1.5",
        f"failover {SYSTEMS['liferaft-sync']} / election timeout": "≤ 1.5",
    }
    parts = []
    if m_sync and m_sync["max"]:
        parts.append(f"liferaft sync on {m_sync['max'][0]:,.0f} w/s")
        if thr is not None:
            parts[-1] += f" = {thr:.2f}× PySyncObj"
    if m_sync and m_sync["p50_100"]:
        parts.append(f"p50@100/s {m_sync['p50_100'][0]:.2f} ms")
        if yard:
            parts[-1] += f" = {m_sync['p50_100'][0] / yard:.2f}× (fdatasync+RTT)"
    if m_sync and m_sync["failover"]:
        parts.append(
            f"failover {m_sync['failover'][0]:.2f} s = {m_sync['failover'][0] / et:.2f}× ET"
        )
    summary = "SUMMARY: " + "; ".join(parts) + f"; {rep.verdicts_text(verdicts)}"
    errs = [f"{SYSTEMS[s]}: {e}" for s, m in ms.items() for e in m["errors"]]
    lc = {SYSTEMS[s]: m["leader_changes"] for s, m in ms.items() if m["leader_changes"]}
    order = " ".join(SYSTEMS[s].split(" (")[0] for s in b.args.systems)
    title = f"{plan.rounds} round(s) × {len(ms)} systems, order {order} per round; median (min–max)"
    ratio_block = ["Ratios (of medians):", *rep.ratio_lines(ratios, targets)]
    if lc:
        ratio_block.append(f"Leader changes during load steps: {lc}")
    if errs:
        ratio_block.append("Errors: " + "; ".join(errs))
    profiles = [(path, SYSTEMS[r.system]) for r in b.results for path in r.profiles]
    prof_text = summaries(profiles, summarize)
    rep.emit([[rep.heading(title, elapsed, partial)], [table], ratio_block], prof_text, summary)
    return {
        "table": table,
        "ratios": ratios,
        "summary": summary,
        "profile": prof_text,
        "metrics": ms,
    }
