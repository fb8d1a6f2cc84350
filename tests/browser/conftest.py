"""A real browser for the web console and replay viewer tests: Debian's
headless Chromium driven by Selenium through Debian's
``/usr/bin/chromedriver`` (never a downloaded driver).

``scripts/install-chromium.sh`` installs both (``.ci/run`` calls it).  On a
machine without them these tests skip naming the package; with ``CI=true``
they fail (tests/conftest.py, :func:`require_tool`).

The fixture ``browser`` is one fresh Chromium per test, with an empty
profile, no network beyond what the page asks for, and a ``shot(name)``
helper that saves a PNG of the page under the test's tmp dir.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import require_tool, unusable_tool

T = TypeVar("T")

# As root (tests run as root here) Chromium needs --no-sandbox.  The
# background-networking flags stop it dialling Google at start, which this
# machine's closed network refuses (and which no test should depend on).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)


class Browser:
    """A Selenium WebDriver plus the helpers the tests share."""

    def __init__(self, driver: Any, shots: Path) -> None:
        self.driver = driver
        self.shots = shots

    def shot(self, name: str) -> Path:
        """Save a PNG of the page as ``<tmp>/screenshots/<name>.png``."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` in the page (``return ...`` gives a value back)."""
        return self.driver.execute_script(script, *args)

    def wait(
        self, what: str, check: Callable[[], T | None], timeout: float = 15.0, every: float = 0.2
    ) -> T:
        """Poll ``check`` until it returns something truthy (returned), for
        at most ``timeout`` seconds; fails naming ``what`` and the page's
        console log otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() >= deadline:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}\n{self.log_text()}")
            time.sleep(every)

    def log_text(self) -> str:
        """The page's console messages so far (for failure messages)."""
        try:
            entries = self.driver.get_log("browser")
        except Exception:  # noqa: BLE001 - a failure message must not fail
            return "(no browser log)"
        return "\n".join(str(e.get("message", e)) for e in entries[-40:])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """One headless Chromium for this test; quit afterwards, even on failure."""
    chromium = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unusable_tool("the Python package selenium is not installed (pip install -e '.[dev]')")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        driver.set_page_load_timeout(30)
        yield Browser(driver, tmp_path / "screenshots")
    finally:
        driver.quit()
