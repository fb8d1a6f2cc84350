"""Failover to a member that joined after the page was loaded, in a real
Chromium against real ``liferaft serve`` processes.

A page keeps the Content-Security-Policy it was loaded with, and that
policy lets it connect only to the client addresses the address book held
then.  A member whose address came later (it joined since, or it is a node
that had just started: each announces its own address a moment after it
starts) is blocked, and a blocked call fails like a dead node: the page
could not fail over to it.  The page reloads from its own node for a
current policy as soon as a line names such a member; this test proves the
reload happens and that the failover then reaches the new member.
"""

from __future__ import annotations

from pathlib import Path

from tests.browser.conftest import Browser
from tests.browser.test_console import HEADER_JS, MEMBERS_JS
from tests.kv.procs import proc_cluster


def rows(browser: Browser) -> list[str]:
    got = browser.js(MEMBERS_JS)
    return [f"{r['id']}:{r['reachable']}:{r['addr'] not in ('', '–')}" for r in got]


def test_failover_reaches_a_member_that_joined_after_the_page_loaded(
    tmp_path: Path, browser: Browser
) -> None:
    with proc_cluster(tmp_path) as c:
        c.start_cluster(1)
        browser.driver.get(f"http://{c.addr('n1')}/ui/")
        browser.wait("n1 shown", lambda: rows(browser) == ["n1:true:True"], timeout=20)
        meta = "return document.querySelector('meta[name=\"liferaft-connect-src\"]').content"
        assert browser.js(meta).split() == [f"http://{c.addr('n1')}", f"https://{c.addr('n1')}"]
        browser.js("window.loadedBefore = true")  # gone once the page reloads
        c.add_joining("n2", via="n1")
        browser.wait(
            "n2 shown answering", lambda: rows(browser) == ["n1:true:True", "n2:true:True"], 30
        )
        browser.wait(
            "the page reloaded for a policy that allows n2",
            lambda: f"http://{c.addr('n2')}" in browser.js(meta),
            timeout=20,
        )
        assert browser.js("return window.loadedBefore === undefined")
        c.kill("n1")
        h = browser.wait(
            "the page via n2",
            lambda: (h := browser.js(HEADER_JS))["via"] == "n2" and "n1 down" in h["status"] and h,
            timeout=20,
        )
        browser.shot("via-the-new-member")
        assert h["via"] == "n2"
