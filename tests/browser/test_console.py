"""The live console (/ui/) in a real Chromium against real ``liferaft
serve`` processes: members and the one leader, the key browser after a
CLI write, a leadership transfer from the page, failover when the node the
page was opened on is killed -9, and the token login.

The 3-node cluster is shared by the module (tests run in file order; the
kill -9 test comes last, since it leaves a node dead).  Each test saves
screenshots of the states it checks under its tmp dir.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Browser
from tests.conftest import require_tool
from tests.kv.procs import ProcCluster, proc_cluster

# The page's view of the members, read in one call (so the values belong
# to one rendering).
MEMBERS_JS = """
return [...document.querySelectorAll('#members tr.member')].map(r => ({
  id: r.dataset.id, role: r.dataset.role, reachable: r.dataset.reachable,
  term: r.dataset.term, addr: r.querySelector('td.addr').textContent}));
"""
HEADER_JS = """
const t = (id) => document.getElementById(id).textContent;
return {leader: t('leader'), term: t('term'), via: t('via'), status: t('status')};
"""
# Header, members and the page's own host in ONE call: two calls may read
# two documents when the page moves to another node's origin between them
# (the header of the page it left with the rows of the one it opened).
VIEW_JS = f"""
return {{header: (() => {{ {HEADER_JS} }})(), members: (() => {{ {MEMBERS_JS} }})(),
        host: location.host}};
"""

WRITES_PLOTTED_JS = """
const svg = document.querySelector('#rates svg.plot[data-rate=writes_per_s]');
return svg.querySelector('path.line') !== null && parseFloat(svg.dataset.max) > 0;
"""

TIMELINE_MERGE_JS = """
const done = arguments[arguments.length - 1];
import('./view-timeline.js').then(({ Timeline }) => {
  const t = new Timeline(document.createElement('ol'));
  const e = (at, term, seen) =>
    ({ at, kind: 'election', node: 'n2', term, text: 'x', seen_by: seen });
  t.merge([e(100, 4, 'n1')]);
  t.merge([e(101.5, 4, 'n2'), e(104, 4, 'n2'), e(104.5, 5, 'n2')]);
  t.merge([e(100, 4, 'n1')]);  // a node's whole buffer again, as on a reconnect
  done([...t.list.children].map(
    li => `${li.dataset.kind}:${li.dataset.term}:${li.textContent.slice(-2)}`));
});
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    require_tool("chromium")  # skip before starting processes no test would use
    with proc_cluster(tmp_path_factory.mktemp("console")) as c:
        c.start_cluster(3)
        yield c


def members(browser: Browser) -> list[dict[str, str]]:
    got: list[dict[str, str]] = browser.js(MEMBERS_JS)
    return got


def header(browser: Browser) -> dict[str, str]:
    got: dict[str, str] = browser.js(HEADER_JS)
    return got


def open_console(browser: Browser, addr: str) -> None:
    browser.driver.get(f"http://{addr}/ui/")


def settled(browser: Browser, n: int) -> list[dict[str, str]] | None:
    """The members once the page shows ``n`` of them, every client address
    known (the page needs them to fail over) and exactly one leader."""
    rows = members(browser)
    if len(rows) != n or any(r["addr"] in ("", "–") for r in rows):
        return None
    return rows if [r["role"] for r in rows].count("leader") == 1 else None


def follower_of(c: ProcCluster) -> tuple[str, str]:
    leader = c.wait_leader()
    return leader, next(i for i in c.nodes if i != leader)


def test_members_view_shows_three_members_and_one_leader(
    cluster: ProcCluster, browser: Browser
) -> None:
    leader, follower = follower_of(cluster)
    open_console(browser, cluster.addr(follower))
    rows = browser.wait("3 members, one leader", lambda: settled(browser, 3), timeout=20)
    assert sorted(r["id"] for r in rows) == sorted(cluster.nodes)
    (shown,) = [r["id"] for r in rows if r["role"] == "leader"]
    assert shown == leader == header(browser)["leader"]
    assert header(browser)["via"] == follower
    assert all(r["reachable"] == "true" for r in rows)
    # One plot per rate, and nothing of the login on the page.
    rates = browser.js(
        "return [...document.querySelectorAll('#rates svg.plot')].map(s => s.dataset.rate)"
    )
    assert sorted(rates) == sorted(
        ["writes_per_s", "reads_per_s", "commit_p50_ms", "commit_p99_ms", "apply_lag"]
    )
    assert browser.js("return document.getElementById('login').hidden") is True
    # Some writes: the writes/s plot draws them (a line, and a caption above 0).
    for i in range(30):
        assert cluster.put(leader, f"load/{i % 5}", str(i))[0] == 200
    browser.wait("the writes plotted", lambda: browser.js(WRITES_PLOTTED_JS), timeout=10)
    browser.shot("members")
    # The timeline's merge, on the page's own module: the same election seen
    # by two nodes 1.5 s apart is one entry; 3 s apart, or another term, two.
    kinds = browser.driver.execute_async_script(TIMELINE_MERGE_JS)
    assert kinds == ["election:5:n2", "election:4:n2", "election:4:n1"]


def test_key_browser_shows_a_key_put_with_the_cli(cluster: ProcCluster, browser: Browser) -> None:
    for value in ("first", "hello console"):
        done = cluster.cli("kv", "put", "console/greeting", value)
        assert done.returncode == 0, done.stderr
    _, follower = follower_of(cluster)
    open_console(browser, cluster.addr(follower))
    browser.wait("members", lambda: settled(browser, 3), timeout=20)
    d = browser.driver
    d.find_element("id", "kv-prefix").send_keys("console/")
    d.find_element("id", "kv-list").click()
    key = browser.wait(
        "the key listed",
        lambda: d.find_elements("css selector", 'li.key[data-key="console/greeting"]'),
    )[0]
    key.click()
    browser.wait("its value", lambda: d.find_element("id", "kv-value").text == "hello console")
    older = browser.wait(
        "its older value",
        lambda: browser.js(
            "return [...document.querySelectorAll('#kv-revisions li.older-value')]"
            ".map(li => li.textContent)"
        ),
    )
    assert len(older) == 1 and "first" in older[0]
    revs = d.find_element("id", "kv-revisions").text
    assert "version" in revs and "create revision" in revs
    # The live tail shows a change under the prefix, and stops when asked.
    d.find_element("id", "kv-tail").click()
    # The watch starts "from now": write once the node confirmed it.
    browser.wait(
        "the watch confirmed", lambda: d.find_elements("css selector", "#kv-tail-log li.watching")
    )
    assert cluster.put(follower, "console/tailed", "live")[0] == 200
    browser.wait(
        "the change tailed",
        lambda: any(
            "console/tailed = live" in li.text
            for li in d.find_elements("css selector", "#kv-tail-log li.change")
        ),
    )
    d.find_element("id", "kv-tail-stop").click()
    assert d.find_element("id", "kv-tail").is_enabled()
    browser.js("document.getElementById('kv-h').scrollIntoView()")
    browser.shot("key-browser")


def test_transfer_leadership_from_the_page(cluster: ProcCluster, browser: Browser) -> None:
    from selenium.webdriver.support.ui import Select

    leader, target = follower_of(cluster)
    open_console(browser, cluster.addr(leader))
    browser.wait("members", lambda: settled(browser, 3), timeout=20)
    browser.wait(
        "the target offered",
        lambda: (
            target
            in browser.js(
                "return [...document.querySelectorAll('#transfer-to option')].map(o => o.value)"
            )
        ),
    )
    Select(browser.driver.find_element("id", "transfer-to")).select_by_value(target)
    # Record every confirmation the page asks for, and say yes.
    browser.js("window.asked = []; window.confirm = (q) => { window.asked.push(q); return true; };")
    browser.driver.find_element("id", "transfer").click()
    browser.wait(
        "the outcome",
        lambda: "leader is now" in browser.driver.find_element("id", "admin-result").text,
        timeout=20,
    )
    browser.wait(
        "the page to show the new leader",
        lambda: (
            header(browser)["leader"] == target
            and [r["id"] for r in members(browser) if r["role"] == "leader"] == [target]
        ),
        timeout=20,
    )
    assert cluster.wait_leader() == target
    asked = browser.js("return window.asked")
    assert len(asked) == 1 and target in asked[0]
    browser.shot("after-transfer")


def test_failover_when_the_pages_node_is_killed(cluster: ProcCluster, browser: Browser) -> None:
    leader = cluster.wait_leader()
    open_console(browser, cluster.addr(leader))  # the page must leave this node
    browser.wait("members", lambda: settled(browser, 3), timeout=20)
    before = int(header(browser)["term"])
    assert header(browser)["via"] == leader
    browser.shot("before-failover")
    cluster.kill(leader)
    t0 = time.monotonic()

    def failed_over() -> dict[str, Any] | None:
        rows = {r["id"]: r for r in members(browser)}
        h = header(browser)
        new = h["leader"]
        if rows.get(leader, {}).get("reachable") != "false" or new in (leader, "none", "–"):
            return None
        if not h["term"].isdigit() or int(h["term"]) <= before:
            return None
        if rows.get(new, {}).get("role") != "leader" or int(rows[new]["term"]) <= before:
            return None
        events = browser.js(
            "return [...document.querySelectorAll('#timeline li.event')]"
            ".filter(li => ['leader', 'election'].includes(li.dataset.kind))"
            ".map(li => li.dataset.term)"
        )
        if h["term"] not in events:
            return None
        return {"leader": new, **h}

    got = browser.wait(
        "a new leader in a higher term, the old one down, the election on the timeline",
        failed_over,
        timeout=40,
    )
    print(
        f"console failover: {time.monotonic() - t0:.1f} s from kill -9 to the page showing "
        f"{got['leader']} leading term {got['term']} (was {leader}, term {before})"
    )
    assert got["via"] != leader
    assert f"{leader} down" in got["status"]
    assert got["leader"] == cluster.wait_leader(among=[i for i in cluster.nodes if i != leader])
    browser.shot("after-failover")


def test_token_login(tmp_path: Path, browser: Browser) -> None:
    token = "console-s3cret"
    with proc_cluster(tmp_path, token=token) as c:
        node = c.start_cluster(1)
        assert node is not None
        open_console(browser, c.addr(node))
        d = browser.driver
        browser.wait("the login", lambda: d.find_element("id", "login").is_displayed())
        assert members(browser) == [] and header(browser)["leader"] == "–"
        browser.shot("login")
        d.find_element("id", "token").send_keys("wrong-token")
        d.find_element("id", "login-submit").click()
        browser.wait("the refusal", lambda: "refused" in d.find_element("id", "login-error").text)
        assert d.find_element("id", "login").is_displayed()
        assert members(browser) == []
        d.find_element("id", "token").send_keys(token)
        d.find_element("id", "login-submit").click()
        rows = browser.wait("the members after login", lambda: members(browser), timeout=20)
        assert [r["id"] for r in rows] == [node]
        assert not d.find_element("id", "login").is_displayed()
        assert token not in d.current_url
        browser.shot("after-login")
