#!/usr/bin/env bash
# Makes sure Debian's Chromium and its driver are installed (/usr/bin/chromium): the admin UI is
# tested in a real headless browser, driven by Playwright pointed at the system browser, because
# Playwright's own browser download is not something every machine can reach.
# Quick and silent when both are already there.
set -euo pipefail

if [ -x /usr/bin/chromium ] && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    # Not Debian: say what is missing and let the suite run; the browser tests skip, saying why.
    echo "ensure-chromium: no apt-get on this machine, so Chromium was not installed;" \
        "install it at /usr/bin/chromium (or set INTERLOCK_CHROMIUM to its path)," \
        "or the browser tests in tests/web will be skipped" >&2
    exit 0
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
$sudo_cmd apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-dejavu-core >/dev/null
[ -x /usr/bin/chromium ] || { echo "ensure-chromium: apt-get ran but /usr/bin/chromium is missing" >&2; exit 1; }
