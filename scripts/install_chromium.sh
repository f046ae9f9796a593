#!/usr/bin/env bash
# The browser tests (the serve page, report.html, the studio) drive Debian's Chromium through Playwright.
# Install it with apt-get when it is missing and we may (root, or sudo without a password); otherwise say what to do.
set -euo pipefail
command -v chromium >/dev/null && exit 0
if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
else
    echo "Chromium is needed for the browser tests: install it (Debian/Ubuntu: sudo apt-get install chromium) and run make test again." >&2
    exit 1
fi
if ! command -v apt-get >/dev/null; then
    echo "Chromium is needed for the browser tests and apt-get is not here: install chromium with this system's package manager." >&2
    exit 1
fi
echo "Installing Chromium for the browser tests (apt-get install chromium)..."
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q chromium >/dev/null 2>&1 || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium >/dev/null; }
command -v chromium >/dev/null
