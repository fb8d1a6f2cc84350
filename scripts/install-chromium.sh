#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian (packages chromium
# and chromium-driver: /usr/bin/chromium, /usr/bin/chromedriver), the real
# browser of the web console and replay viewer tests (tests/browser/).
# Selenium is pointed at /usr/bin/chromedriver, never at a downloaded driver.
# Idempotent: does nothing but print the versions when both are there.
# Needs root (or sudo) and apt.
set -euo pipefail
. "$(dirname "$0")/lib/debian-tool.sh"

CHROMIUM="$(install_debian_tool chromium chromium)"
DRIVER="$(install_debian_tool chromedriver chromium-driver)"
echo "chromium: $CHROMIUM"
echo "chromedriver: $DRIVER"
# Debian's chromium wrapper script prints shell noise on some machines;
# the version line is what matters.
"$CHROMIUM" --version 2>/dev/null
"$DRIVER" --version
