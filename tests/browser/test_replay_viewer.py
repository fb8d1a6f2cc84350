"""The replay viewer in real Chromium (issue 17, "Proof"): a planted-bug
run's trace, written by ``python -m liferaft.sim --trace`` and shown by the
page ``liferaft sim view`` writes (opened from file://, nothing running) and
by the file picker of replay.html.  On load it is at the violation, and the
time shown is the time in the checker's message.

The seed is not trusted blindly: the one last seen caught is tried first,
and if it no longer fires, the first seed from 0 that the checker catches is
used (bounded, like tests/sim/test_planted_bugs.py), so a change to the
random streams moves the seed, not the test.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from selenium.webdriver.common.by import By

from liferaft.console.replay import write_viewer
from liferaft.console.static import StaticFiles
from liferaft.harness.ports import HOST
from liferaft.sim import run_seed
from liferaft.sim.__main__ import main as sim_main
from liferaft.sim.bugs import planted
from liferaft.sim.trace import message_time
from tests.browser.conftest import Browser

BUG, PROFILE, NODES, STEPS = "commit-prior-term", "figure8", 3, 6000
SEED_BUDGET = 300  # as tests/sim/test_planted_bugs.py: stops at the first catch
# The first seed the bug broke when this was written, tried first (a search
# from 0 costs a second a seed); if a change to the random streams moves the
# catch, the search from 0 finds the new first one.
LAST_CAUGHT = 58


@pytest.fixture(scope="module")
def bug_trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The trace of the first seed whose run with the bug planted the checker catches."""
    with planted(BUG) as configure:
        seed = next(
            (s for s in (LAST_CAUGHT, *range(SEED_BUDGET))
             if run_seed(s, nodes=NODES, steps=STEPS, profile=PROFILE, configure=configure)
             .violation),
            None,
        )
    assert seed is not None, f"{BUG} was not caught in {SEED_BUDGET} seeds"
    path = tmp_path_factory.mktemp("replay") / f"seed{seed}.json"
    sim_main(["--seed", str(seed), "--nodes", str(NODES), "--steps", str(STEPS), "--bug", BUG,
              "--profile", PROFILE, "--trace", str(path)])
    doc = json.loads(path.read_text())
    assert doc["verdict"]["violation"], "the traced run must be the caught one"
    return path, doc


def _text(browser: Browser, ident: str) -> str:
    return str(browser.driver.find_element(By.ID, ident).text)


def _at_violation(browser: Browser, doc: dict[str, Any]) -> None:
    """The page shows the checker's message and stands at its event and time."""
    message = doc["verdict"]["violation"]
    t = message_time(message)
    assert t is not None, f"no (t=...) in {message!r}"
    browser.wait("the violation", lambda: message in _text(browser, "violation"))
    assert _text(browser, "time") == f"t={t}"
    index = int(_text(browser, "event-index"))
    assert doc["events"][index]["k"] == "violation"
    assert index == doc["verdict"]["event"]


def test_the_written_page_jumps_to_the_violation_and_steps(
    browser: Browser, bug_trace: tuple[Path, dict[str, Any]]
) -> None:
    path, doc = bug_trace
    page = write_viewer(path)
    browser.driver.get(page.as_uri())
    _at_violation(browser, doc)
    nodes = browser.driver.find_elements(By.CSS_SELECTOR, "#stage g.node")
    assert sorted(n.get_attribute("data-id") for n in nodes) == sorted(doc["node_ids"])
    roles = {n.get_attribute("data-role") for n in nodes}
    assert roles <= {"follower", "precandidate", "candidate", "leader", "learner"}
    assert browser.driver.find_elements(By.CSS_SELECTOR, "#logs .cell.committed")
    browser.shot("replay-violation")

    # The scrubber and the step button move through the events.
    browser.js("const s = document.getElementById('scrubber');"
               "s.value = '0'; s.dispatchEvent(new Event('input'));")
    assert _text(browser, "event-index") == "0"
    assert _text(browser, "time") == f"t={doc['events'][0]['t']}"
    mid = len(doc["events"]) // 2
    browser.js("const s = document.getElementById('scrubber');"
               f"s.value = '{mid}'; s.dispatchEvent(new Event('input'));")
    for _ in range(3):
        browser.driver.find_element(By.ID, "step").click()
    assert _text(browser, "event-index") == str(mid + 3)
    assert _text(browser, "time") == f"t={doc['events'][mid + 3]['t']}"
    browser.shot("replay-loaded")

    # Play moves on by itself; pause stops it.
    browser.driver.find_element(By.ID, "play").click()
    browser.wait("playback", lambda: int(_text(browser, "event-index")) > mid + 3)
    browser.driver.find_element(By.ID, "pause").click()
    browser.driver.find_element(By.ID, "jump-violation").click()
    _at_violation(browser, doc)


def test_seeking_gives_the_state_that_replaying_from_the_start_gives(
    browser: Browser, bug_trace: tuple[Path, dict[str, Any]]
) -> None:
    """The checkpoints are a shortcut, not a different answer: at many event
    numbers, the state from a checkpoint equals the state from replaying
    every event, and the run-length log equals a plain list of terms."""
    browser.driver.get(write_viewer(bug_trace[0]).as_uri())
    browser.wait("the viewer", lambda: browser.js("return !!window.liferaftReplay.viewer"))
    bad = browser.js("""
      const M = window.LiferaftReplay, r = window.liferaftReplay.viewer.replay, ev = r.events;
      const seq = new M.State(r.nodeIds), plain = new Map(r.nodeIds.map((id) => [id, []]));
      const probes = new Set([0, ev.length - 1]);
      for (let k = 1; k < 60; k++) probes.add(Math.floor(k * ev.length / 60) + (k % 7));
      const view = (s) => JSON.stringify([...s.nodes].map(([id, n]) =>
        [id, n.role, n.term, n.crashed, n.commit, n.last, n.timerDeadline,
         M.termsIn(n, 1, n.last)]).concat([[...s.flight].sort(), s.drops]));
      const bad = [];
      for (let i = 0; i < ev.length; i++) {
        seq.apply(ev[i], i);
        const e = ev[i];
        if (e.k === 'append') {
          const log = plain.get(e.node); log.length = e.index - 1;
          for (const t of e.terms) log.push(t);
        } else if (e.k === 'truncate') {
          plain.get(e.node).length = e.index - 1;
        } else if (e.k === 'snapshot') {
          // An installed snapshot replaces the log up to its index.
          const log = plain.get(e.node);
          if (log.length < e.index || log[e.index - 1] !== e.term) {
            log.length = 0;
            for (let k = 1; k < e.index; k++) log.push(-1);
            log.push(e.term);
          }
        }
        if (!probes.has(i)) continue;
        if (view(r.stateAt(i)) !== view(seq)) bad.push('state differs at ' + i);
        for (const [id, log] of plain) {
          const n = seq.nodes.get(id), got = M.termsIn(n, 1, n.last);
          if (got.length !== log.length || got.some((t, k) => t !== log[k])) {
            bad.push(id + ' log differs at ' + i);
          }
        }
      }
      return bad.concat(probes.size > 50 ? [] : ['too few probes']);""")
    assert bad == []


@pytest.fixture
def static_url() -> Iterator[str]:
    """The console's own /ui/ routes (liferaft/console/static.py: the same
    files, the same Content-Security-Policy a node sends), served by aiohttp
    on a loop in a thread."""
    loop = asyncio.new_event_loop()
    app = web.Application()
    StaticFiles(lambda: set()).add_routes(app)
    runner = web.AppRunner(app)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield f"http://{HOST}:{port}/ui"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_the_file_picker_loads_a_trace(
    browser: Browser, bug_trace: tuple[Path, dict[str, Any]], tmp_path: Path, static_url: str
) -> None:
    """/ui/replay.html as the console serves it: choosing the trace in
    #trace-file shows it (FileReader, no upload); a file that is not a
    trace gets a clear message."""
    path, doc = bug_trace
    browser.driver.get(f"{static_url}/replay.html")
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": "world"}')
    browser.driver.find_element(By.ID, "trace-file").send_keys(str(bad))
    browser.wait(
        "the error", lambda: "not a liferaft simulator trace" in _text(browser, "load-error")
    )
    assert not browser.driver.find_element(By.ID, "viewer").is_displayed()
    browser.driver.find_element(By.ID, "trace-file").send_keys(str(path))
    _at_violation(browser, doc)
    assert not browser.driver.find_element(By.ID, "load-error").is_displayed()
    assert re.fullmatch(r"t=\d+", _text(browser, "time"))
    browser.shot("replay-picker")
    log = browser.log_text()
    assert "Content Security Policy" not in log, log
