"""The live console as a careless operator uses it, in a real Chromium
against real ``liferaft serve`` processes: a page opened at an address no
member advertises (``localhost`` for ``127.0.0.1``) must still fail over,
an admin call to a member that never answers, or that dies mid-call, must
end with "outcome unknown", and a page whose node is removed from the
cluster (from the page itself) must carry on through a member rather than
show the rest as down.

One 3-node cluster for the module; the tests run in file order (the last
removes a member).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import Browser
from tests.browser.test_console import VIEW_JS
from tests.conftest import require_tool
from tests.kv.procs import ProcCluster, proc_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcCluster]:
    require_tool("chromium")
    with proc_cluster(tmp_path_factory.mktemp("console-ops")) as c:
        c.start_cluster(3)
        yield c


# What the page draws until it moves to another origin, logged (the log
# outlives the page; a poll could miss what shows between two polls):
# every admin result it shows, and any drawing where the node it names as
# `via` is not one of the rows (the view of a node that is no member,
# removed yet still streaming, shown as the cluster's).
WATCH_JS = """
let shown = '';
const check = () => {
  const via = document.getElementById('via').textContent;
  const ids = [...document.querySelectorAll('#members tr.member')].map((r) => r.dataset.id);
  if (ids.length && !ids.includes(via)) console.error(`VIA-NOT-A-ROW via=${via} rows=${ids}`);
  const result = document.getElementById('admin-result').textContent;
  if (result !== shown) console.info(`ADMIN-RESULT ${(shown = result)}`);
};
new MutationObserver(check)
  .observe(document.body, {subtree: true, childList: true, characterData: true});
"""


SLOW_DELETE_JS = """
const plain = window.fetch;
window.fetch = (url, init) => (init && init.method === 'DELETE'
  ? plain(url, init).then((r) => new Promise((ok) => setTimeout(() => ok(r), 2500)))
  : plain(url, init));
"""


def view(browser: Browser) -> dict[str, Any]:
    """The header, the member rows and the page's host, from one document."""
    got: dict[str, Any] = browser.js(VIEW_JS)
    return got


def all_up(browser: Browser, ids: set[str]) -> dict[str, Any] | None:
    """The view once the page shows exactly ``ids``, all reachable, with
    their client addresses and a leader among them."""
    v = view(browser)
    rows = v["members"]
    if {r["id"] for r in rows} != ids or len(rows) != len(ids):
        return None
    if any(r["reachable"] != "true" or r["addr"] in ("", "–") for r in rows):
        return None
    return v if v["header"]["leader"] in ids else None


def test_page_opened_as_localhost_fails_over(cluster: ProcCluster, browser: Browser) -> None:
    node = "n1"
    port = cluster.addr(node).rsplit(":", 1)[1]
    # Not the address the members advertise (127.0.0.1): no member's origin.
    browser.driver.get(f"http://localhost:{port}/ui/")
    browser.wait("the members", lambda: all_up(browser, set(cluster.nodes)), timeout=20)
    cluster.pause(node)
    try:

        def carried_on() -> dict[str, Any] | None:
            v = view(browser)
            h, rows = v["header"], v["members"]
            if h["via"] in ("–", node) or f"{node} down" not in h["status"]:
                return None
            return v if any(r["id"] != node and r["reachable"] == "true" for r in rows) else None

        got = browser.wait("the page carrying on through another member", carried_on, timeout=30)
        browser.shot("localhost-failover")
        assert got["header"]["via"] in cluster.nodes
    finally:
        cluster.resume(node)
    browser.wait("every member back", lambda: all_up(browser, set(cluster.nodes)), timeout=30)


def test_big_values_stay_bounded_on_the_page(cluster: ProcCluster, browser: Browser) -> None:
    big = 200_000
    leader = cluster.wait_leader()
    for ch in "ab":
        assert cluster.put(leader, "big/one", ch * big)[0] == 200
    browser.driver.get(f"http://{cluster.addr(leader)}/ui/")
    browser.wait("the members", lambda: all_up(browser, set(cluster.nodes)), timeout=20)
    d = browser.driver
    d.find_element("id", "kv-prefix").send_keys("big/")
    d.find_element("id", "kv-list").click()
    browser.wait("the key", lambda: d.find_elements("css selector", 'li.key[data-key="big/one"]'))[
        0
    ].click()
    # The value asked for is shown whole; the older one is cut to a glance.
    older = browser.wait(
        "the older value",
        lambda: browser.js(
            "return [...document.querySelectorAll('#kv-revisions li.older-value')]"
            ".map(li => li.textContent.length)"
        ),
    )
    assert browser.js("return document.getElementById('kv-value').textContent.length") == big
    assert len(older) == 1 and older[0] < 2000
    d.find_element("id", "kv-tail").click()
    browser.wait("the watch", lambda: d.find_elements("css selector", "#kv-tail-log li.watching"))
    assert cluster.put(leader, "big/two", "c" * big)[0] == 200
    tailed = browser.wait(
        "the change tailed",
        lambda: browser.js(
            "return [...document.querySelectorAll('#kv-tail-log li.change')]"
            ".map(li => li.textContent)"
        ),
    )
    d.find_element("id", "kv-tail-stop").click()
    # 200 tail lines of a megabyte each would be 200 MB of page.
    assert len(tailed) == 1 and "big/two" in tailed[0] and len(tailed[0]) < 2000
    # Nothing long widens the page past the window.
    assert browser.js(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
    browser.shot("big-values")


# Every call's deadline (api.js CALL_TIMEOUT_MS, 30 s) cut to 1.5 s, so the
# test need not wait out the real one: the page reads the global at each call.
SHORT_CALLS_JS = """
const plain = AbortSignal.timeout.bind(AbortSignal);
AbortSignal.timeout = (ms) => plain(Math.min(ms, 1500));
"""


def open_for_admin(browser: Browser, cluster: ProcCluster, node: str, *scripts: str) -> None:
    """The page on ``node`` showing every member up, confirming every admin
    action, with ``scripts`` run in it."""
    browser.driver.get(f"http://{cluster.addr(node)}/ui/")
    browser.wait("the members", lambda: all_up(browser, set(cluster.nodes)), timeout=20)
    browser.js("window.confirm = () => true;")
    for script in scripts:
        browser.js(script)


def unknown_result(browser: Browser) -> str | None:
    """The admin result the page shows, once the call ended with no answer."""
    text = str(browser.js("return document.getElementById('admin-result').textContent"))
    return text if text.startswith(("unknown", "failed")) else None


def test_an_admin_call_to_a_member_that_never_answers_ends(
    cluster: ProcCluster, browser: Browser
) -> None:
    """The page's node is stopped (SIGSTOP: it accepts connections and never
    answers) while an admin call is on its way: the page must say the call
    got no answer and its outcome is unknown, not show "working…" forever."""
    node = "n2"
    open_for_admin(browser, cluster, node, SHORT_CALLS_JS)
    cluster.pause(node)
    try:
        browser.driver.find_element("css selector", "#snapshot").click()
        text = browser.wait("the call's end", lambda: unknown_result(browser), timeout=15)
        assert text.startswith("unknown: no answer within"), text
        assert "the outcome is unknown" in text, text
    finally:
        cluster.resume(node)
    browser.wait("every member back", lambda: all_up(browser, set(cluster.nodes)), timeout=30)


def test_an_admin_call_whose_node_dies_mid_call_is_unknown(
    cluster: ProcCluster, browser: Browser
) -> None:
    """The page's node takes an admin call and dies before it answers (kill
    -9 of a stopped node: the connection is reset).  The page cannot tell
    that from a call refused before it was sent, so it must say the outcome
    is unknown, not only that the node may be down."""
    node = "n1"
    open_for_admin(browser, cluster, node)
    cluster.pause(node)
    try:
        browser.driver.find_element("css selector", "#snapshot").click()
        browser.wait("the call under way", lambda: browser.js(
            "return document.getElementById('admin-result').textContent === 'working…'"
        ), timeout=5)
        time.sleep(0.5)  # the request is in n1's socket, unread
        cluster.kill(node)
        text = browser.wait("the call's end", lambda: unknown_result(browser), timeout=15)
        assert "no answer within" not in text, text  # it ended with the reset
        assert text.startswith("unknown: ") and "the outcome is unknown" in text, text
    finally:
        if cluster.nodes[node].running():
            cluster.resume(node)
        else:
            cluster.start(node)
    browser.wait("every member back", lambda: all_up(browser, set(cluster.nodes)), timeout=30)


def test_removing_the_pages_node_moves_the_page(cluster: ProcCluster, browser: Browser) -> None:
    node = "n3"
    # The removal's answer reaches the page 2.5 s late, after n3's first
    # line as no member (which comes within a round): the page must still
    # show the outcome before it leaves n3, not drop it unseen.
    open_for_admin(browser, cluster, node, WATCH_JS, SLOW_DELETE_JS)
    browser.driver.find_element("css selector", f'#members button.remove[data-id="{node}"]').click()
    # The removed node still runs and answers, but it is no member: the page
    # must show the cluster as it is (two members, both up) through one.
    v = browser.wait("the two members left, both up", lambda: all_up(browser, {"n1", "n2"}), 30)
    browser.shot("after-removing-own-node")
    log = [str(e.get("message")) for e in browser.driver.get_log("browser")]
    # The page showed the removal's outcome before it left n3 ...
    assert [m for m in log if f"ADMIN-RESULT removed {node}; members: n1, n2" in m], log
    # ... and never drew n3's own view once n3 was no member.
    assert not [m for m in log if "VIA-NOT-A-ROW" in m], log
    assert v["header"]["via"] in ("n1", "n2")
    # Opened from that member (the removed node's origin is no member's).
    assert v["host"] == cluster.addr(v["header"]["via"])
