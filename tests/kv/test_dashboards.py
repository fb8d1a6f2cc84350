"""docs/grafana/liferaft.json and docs/prometheus/alerts.yml: well formed for
Grafana and Prometheus, and every metric they name is one a real node's
/metrics exports (a dashboard over a renamed metric shows "No data"; an
alert over one never fires).

Names are checked as series: a histogram is exported as ``X_bucket``,
``X_sum`` and ``X_count`` (never bare ``X``), a counter as ``X_total``, so
an expression that picks the wrong series of a family is reported too.
(docs/prometheus/alerts_test.yml, promtool's unit tests of the rules, is
run by hand: CI does not install Prometheus, and a tool test must not
skip under CI.)"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kv.procs import http, kv_path, proc_cluster

DOCS = Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = DOCS / "grafana" / "liferaft.json"
ALERTS = DOCS / "prometheus" / "alerts.yml"

# Series Prometheus makes itself (``up``: whether the scrape worked), not /metrics.
PROMETHEUS_OWN = {"up"}

# -- a small PromQL tokenizer ------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")  # label matchers (strings already blanked)
_RANGES = re.compile(r"\[[^\[\]]*\]")  # [5m], [$__rate_interval], [1h:1m]
# Label lists: `sum by (le, instance)`, `on (peer)`, `group_left (x)`.
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
# A number (with a duration's unit: `offset 5m`), or an identifier and
# whether a call follows it (a function or an aggregation, not a metric).
_TOKEN = re.compile(
    r"(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?[a-zA-Z]*)|(?P<id>[A-Za-z_:][\w:]*)(?P<call>\s*\()?"
)
_KEYWORDS = {
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
    "group_left", "group_right", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Every metric (series) name a PromQL expression selects."""
    s = _STRING.sub('""', expr)
    s = _MATCHERS.sub(" ", s)
    s = _RANGES.sub(" ", s)
    s = _LABEL_LISTS.sub(" ", s)
    return {
        m["id"]
        for m in _TOKEN.finditer(s)
        if m["id"] and not m["call"] and m["id"].lower() not in _KEYWORDS
    }


def exported_series(exposition: str) -> set[str]:
    """The series names a Prometheus text exposition offers, from its TYPE
    lines (so a family with no sample yet, say a labelled counter before
    its first failure, counts: its series appear once it moves)."""
    out: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        if kind == "histogram":
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            out |= {name, f"{name}_sum", f"{name}_count"}
        else:  # gauge, untyped; a counter's TYPE line already names X_total
            out.add(name)
    return out


def unknown_metrics(exprs: dict[str, str], exported: set[str]) -> dict[str, list[str]]:
    """Where (a label per expression) a name is not exported: those names."""
    bad: dict[str, list[str]] = {}
    for where, expr in exprs.items():
        names = metric_names(expr)
        missing = sorted(n for n in names if n not in exported and n not in PROMETHEUS_OWN)
        if missing or not names:
            bad[where] = missing or ["(no metric at all)"]
    return bad


# -- the two files' expressions ----------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _alerts() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    return data


def _rules() -> Iterator[dict[str, Any]]:
    for group in _alerts()["groups"]:
        yield from group["rules"]


def dashboard_exprs(dash: dict[str, Any]) -> dict[str, str]:
    """Every PromQL expression of the dashboard: its panels' targets, its
    annotations and its variables' label_values() queries."""
    out = {}
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out[f"panel {p['title']!r} {t['refId']}"] = t["expr"]
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            out[f"annotation {a['name']!r}"] = a["expr"]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", q)
            assert m, f"variable {v['name']}: {q!r} is not label_values(series, label)"
            out[f"variable {v['name']}"] = m[1]
    return out


def alert_exprs() -> dict[str, str]:
    return {f"alert {r['alert']}": r["expr"] for r in _rules()}


# -- the tokenizer, and that a wrong name is reported ------------------------------------


def test_the_tokenizer_finds_metric_names_and_nothing_else() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (instance, le) (rate("
        'liferaft_disk_wal_fsync_duration_seconds_bucket{job=~"$job", peer="liferaft_x"}'
        "[$__rate_interval]))) > 0.1 and on (instance) up offset 5m "
        "or vector(0) unless liferaft_term[1h:1m] * ignoring(peer) group_left liferaft_b:rule"
    )
    assert metric_names(expr) == {
        "liferaft_disk_wal_fsync_duration_seconds_bucket", "up", "liferaft_term",
        "liferaft_b:rule",
    }  # fmt: skip


def test_a_made_up_or_misused_name_is_reported() -> None:
    exposition = (
        "# TYPE liferaft_term gauge\n"
        "# TYPE liferaft_commit_latency_seconds histogram\n"
        "# TYPE liferaft_leader_changes_total counter\n"
    )
    exported = exported_series(exposition)
    exprs = {
        "fine": "rate(liferaft_commit_latency_seconds_count[5m]) + liferaft_term * up",
        "made up": "liferaft_made_up_seconds > 1",
        "bare histogram": "rate(liferaft_commit_latency_seconds[5m])",
        "counter without _total": "increase(liferaft_leader_changes[10m])",
        "gauge with _total": "rate(liferaft_term_total[5m])",
        "no metric": "vector(1)",
    }
    assert unknown_metrics(exprs, exported) == {
        "made up": ["liferaft_made_up_seconds"],
        "bare histogram": ["liferaft_commit_latency_seconds"],
        "counter without _total": ["liferaft_leader_changes"],
        "gauge with _total": ["liferaft_term_total"],
        "no metric": ["(no metric at all)"],
    }


# -- the files' structure ----------------------------------------------------------------


def test_the_dashboard_is_a_grafana_dashboard_with_a_query_per_panel() -> None:
    dash = _dashboard()
    assert dash["schemaVersion"] >= 36 and dash["title"] and dash["uid"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert variables["instance"]["type"] == "query"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids
    cells: dict[tuple[int, int], str] = {}
    for p in dash["panels"]:
        title = p["title"]
        assert p["type"] and title and p["datasource"]["uid"] == "${DS_PROMETHEUS}", title
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "hwxy") and g["x"] + g["w"] <= 24, title
        for x in range(g["x"], g["x"] + g["w"]):  # no two panels on one cell
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{title!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = title
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), title
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${DS_PROMETHEUS}", title
            # The instance picker filters every series the panel selects.
            for sel in re.findall(r"\b(?:liferaft_\w+|up)\b(\{[^}]*\})?", t["expr"]):
                assert 'instance=~"$instance"' in sel, (title, t["expr"])
            if "histogram_quantile" in t["expr"]:
                assert all(n.endswith("_bucket") for n in metric_names(t["expr"])), title


def test_the_dashboard_shows_what_issue_17_names() -> None:
    named: set[str] = set()
    for expr in dashboard_exprs(_dashboard()).values():
        named |= metric_names(expr)
    wanted = {
        "liferaft_is_leader", "liferaft_leader_changes_total",
        "liferaft_commit_latency_seconds_bucket", "liferaft_apply_lag", "liferaft_follower_lag",
        "liferaft_disk_wal_fsync_duration_seconds_bucket", "liferaft_snapshot_age_seconds",
        "liferaft_proposals_failed_total", "liferaft_storage_ok",
        "liferaft_commit_latency_seconds_count", "liferaft_reads_total",
    }  # fmt: skip
    assert wanted - named == set()


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(d: str) -> float:
    assert re.fullmatch(rf"(?:{_DURATION.pattern})+", d), d
    return sum(int(n) * _SECONDS[u] for n, u in _DURATION.findall(d))


def test_the_alert_rules_are_prometheus_rules_covering_issue_17() -> None:
    rules = list(_rules())
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), names
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert r["expr"].strip() and _seconds(r["for"]) > 0, r["alert"]
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
        assert r["annotations"]["summary"].strip(), r["alert"]
        assert r["annotations"]["description"].strip(), r["alert"]
    by_metric = {n: r for r in rules for n in metric_names(r["expr"])}
    for metric in (
        "up", "liferaft_server_has_leader", "liferaft_leader_changes_total",
        "liferaft_follower_lag", "liferaft_storage_ok",
        "liferaft_disk_wal_fsync_duration_seconds_bucket",
    ):  # fmt: skip
        assert metric in by_metric, f"no alert on {metric}"
    assert _seconds(by_metric["liferaft_server_has_leader"]["for"]) >= 30


# -- against a real node -----------------------------------------------------------------


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of one real `liferaft serve` that wrote, read and took a
    snapshot (snapshot age appears only once a snapshot exists)."""
    with proc_cluster(tmp_path_factory.mktemp("dash")) as c:
        ld = c.start_cluster(1)
        assert ld is not None
        addr = c.addr(ld)
        assert http(addr, "PUT", kv_path("dash/k"), {"value": "v"})[0] == 200
        assert http(addr, "GET", kv_path("dash/k"))[0] == 200
        assert http(addr, "POST", "/v1/snapshot")[0] == 200
        status, text = http(addr, "GET", "/metrics")
    assert status == 200 and isinstance(text, str), (status, text)
    return text


def test_every_metric_the_dashboard_and_alerts_name_is_exported(exposition: str) -> None:
    exported = exported_series(exposition)
    assert "liferaft_commit_latency_seconds_bucket" in exported  # the parse saw histograms
    exprs = {**dashboard_exprs(_dashboard()), **alert_exprs()}
    assert unknown_metrics(exprs, exported) == {}
