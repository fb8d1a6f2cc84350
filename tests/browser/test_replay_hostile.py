"""The replay viewer given hostile traces (review of issue 17): numbers
too large to walk, an index that is no integer, thousands of nodes.  It
refuses with a clear message or shows what it can, and never spends long
with the tab frozen (each load runs under a script timeout of a few
seconds; before the review an index of 10^9 froze it for 11 s, 10^300 for
ever, and 3,000 nodes for over a minute).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Browser

STATIC = Path(__file__).resolve().parents[2] / "liferaft" / "console" / "static"


def _trace(events: list[dict[str, Any]], node_ids: list[Any] | None = None) -> str:
    base: list[dict[str, Any]] = [
        {"t": 0, "k": "role", "node": "n1", "role": "follower", "term": 1, "leader": None,
         "vote": None},
        {"t": 1, "k": "append", "node": "n1", "index": 1, "terms": [1, 1]},
    ]
    return json.dumps({
        "format": "liferaft-sim-trace", "version": 1, "seed": 1, "nodes": 3,
        "node_ids": node_ids if node_ids is not None else ["n1", "n2", "n3"],
        "events": base + events,
        "verdict": {"ok": True, "violation": None, "liveness_failure": None, "t": None,
                    "event": None},
    })


@pytest.fixture
def page(browser: Browser) -> Browser:
    browser.driver.get((STATIC / "replay.html").as_uri())
    browser.wait("the viewer script", lambda: browser.js("return !!window.liferaftReplay"))
    browser.driver.set_script_timeout(8)
    return browser


def _load(b: Browser, text: str) -> str:
    return str(b.js("""
      try { window.liferaftReplay.load(arguments[0]); return 'ok'; }
      catch (e) { return (e instanceof window.LiferaftReplay.TraceFormatError ? 'refused: '
                          : 'crashed: ') + e.message; }""", text))


def test_a_far_index_is_drawn_without_walking_to_it(page: Browser) -> None:
    far = 10**12
    got = _load(page, _trace([
        {"t": 2, "k": "append", "node": "n2", "index": far, "terms": [3, 3]},
        {"t": 3, "k": "snapshot", "node": "n3", "index": far, "term": 2},
    ]))
    assert got == "ok"
    last = page.js("const s = window.liferaftReplay.viewer.replay.stateAt(3),"
                   " n2 = s.nodes.get('n2'), f = arguments[0];"
                   "return [n2.last, s.nodes.get('n3').last,"
                   " window.LiferaftReplay.termsIn(n2, f - 2, f + 2)];", far)
    assert last == [far + 1, far, [-1, -1, 3, 3, None]]


@pytest.mark.parametrize("bad", [10**300, 1.5, "7", -3, None])
def test_an_index_that_is_no_small_integer_is_refused(page: Browser, bad: Any) -> None:
    got = _load(page, _trace([{"t": 2, "k": "append", "node": "n2", "index": bad, "terms": [1]}]))
    assert got.startswith("refused: ") and "event 2" in got and "index" in got, got


def test_wrong_field_types_are_refused_not_crashed(page: Browser) -> None:
    for ev in ({"t": 2, "k": "append", "node": "n2", "index": 1, "terms": "abc"},
               {"t": 2, "k": "net", "groups": [5]},
               {"t": 2, "k": "commit", "node": "n2", "index": 10**400}):
        got = _load(page, _trace([ev]))  # 10**400 parses as Infinity
        assert got.startswith("refused: ") and "event 2" in got, (ev, got)


def test_thousands_of_nodes_are_refused(page: Browser) -> None:
    got = _load(page, _trace([], node_ids=[f"m{i}" for i in range(3000)]))
    assert got.startswith("refused: ") and "3000 nodes" in got, got


def test_the_entry_a_violation_names_is_outlined_in_every_log(page: Browser) -> None:
    """Review: at a violation the eye must find the entry the checker
    means; the index in its message is outlined in each log holding it."""
    msg = "leader completeness: n1 leads term 3 without committed entry 2 (term 1) (t=5)"
    text = _trace([
        {"t": 2, "k": "append", "node": "n2", "index": 1, "terms": [1, 1, 2]},
        {"t": 5, "k": "violation", "message": msg, "rule": "leader completeness"},
    ])
    doc = json.loads(text)
    doc["verdict"] = {"ok": False, "violation": msg, "liveness_failure": None, "t": 5, "event": 3}
    assert _load(page, json.dumps(doc)) == "ok"
    named = page.js("return [...document.querySelectorAll('#logs .named')]"
                    ".map((c) => [c.closest('.log-row').dataset.id || 'head',"
                    " c.title || c.textContent])")
    assert sorted(named) == [["head", "2"], ["n1", "index 2, term 1"], ["n2", "index 2, term 1"]]
    page.shot("replay-named-entry")
