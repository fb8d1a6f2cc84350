"""The browser fixture itself: Chromium runs the page's JavaScript and
saves a screenshot (so a broken install fails here, with its reason, and
not in the middle of a console test)."""

from __future__ import annotations

from tests.browser.conftest import Browser


def test_chromium_runs_javascript_and_saves_a_screenshot(browser: Browser) -> None:
    browser.driver.get(
        "data:text/html,<p id=out>static</p>"
        "<script>document.getElementById('out').textContent = 'script ' + (6 * 7)</script>"
    )
    text = browser.wait("the script's text", lambda: browser.driver.find_element("id", "out").text)
    assert text == "script 42"
    png = browser.shot("smoke")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
