#!/usr/bin/env bash
# Install Debian's headless-capable Chromium and its matching chromedriver for the
# browser tests (tests/test_browser.py). Idempotent: does nothing when both exist.
# Selenium is pointed at /usr/bin/chromedriver explicitly and never downloads a driver.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium and chromedriver already installed: $(/usr/bin/chromium --version 2>/dev/null || true)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --version || true
