"""What ``liferaft bench kv`` measured, and how it is printed: one
:class:`StepResult` per step, a :class:`Result` per run, the line printed
after each step and the table at the end (liferaft/kv/bench.py has the
theory of operation; bench/kv_bench.py prints the same lines).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Result", "StepResult", "format_step", "format_table", "reads_description"]


@dataclass
class StepResult:
    op: str
    connections: int
    seconds: float
    ok: int
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)
    client_cpu: float = 0.0  # the generator's process time / wall time, this step

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class Result:
    system: str
    endpoints: list[str]
    leader: str
    leader_name: str
    reads_at: str
    value_size: int
    keys: int
    steps: list[StepResult] = field(default_factory=list)

    def step(self, op: str, connections: int) -> StepResult | None:
        return next((s for s in self.steps if s.op == op and s.connections == connections), None)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for s, sd in zip(self.steps, d["steps"], strict=True):
            sd["error_count"] = s.error_count
        return d


def _f(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def format_step(s: StepResult) -> str:
    err = f"  errors {s.error_count} {dict(s.errors)}" if s.errors else ""
    return (
        f"{s.op:<12} {s.connections:>4} conns  {s.rate:>9,.0f}/s  p50 {_f(s.p50_ms, '.2f')}"
        f"  p99 {_f(s.p99_ms, '.2f')} ms  client cpu {s.client_cpu * 100:.0f}%{err}"
    )


def reads_description(res: Result) -> str:
    if res.reads_at == "leader":
        return f"reads at the leader only ({res.leader})"
    return (
        f"reads spread over all {len(res.endpoints)} endpoints "
        "(connection i -> endpoint i mod n, the leader first)"
    )


def format_table(res: Result) -> str:
    lines = [
        f"{res.system}: writes ({res.value_size}-byte values, {res.keys} keys) to the leader "
        f"{res.leader_name} at {res.leader}; {reads_description(res)}",
        "",
        "| op | conns | ops/s | p50 ms | p99 ms | errors | client CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in res.steps:
        lines.append(
            f"| {s.op} | {s.connections} | {s.rate:,.0f} | {_f(s.p50_ms, '.2f')} | "
            f"{_f(s.p99_ms, '.2f')} | {s.error_count} | {s.client_cpu * 100:.0f}% |"
        )
    return "\n".join(lines)
