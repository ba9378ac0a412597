#!/usr/bin/env bash
# Installs what the dashboard's browser tests need on a Debian machine: headless Chromium and
# its WebDriver (Debian's chromium and chromium-driver; no browser download of its own).
# Run as root before `make test`. Idempotent: does nothing when both are installed.
set -euo pipefail

say() { printf 'browser-setup: %s\n' "$*"; }
die() { printf 'browser-setup: FAILED: %s\n' "$*" >&2; exit 1; }

missing=()
for pkg in chromium chromium-driver; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "chromium and chromium-driver are installed"
else
    [ "$(id -u)" -eq 0 ] || die "must run as root to install ${missing[*]}"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null ||
        die "apt-get update failed: the Debian package registry is unreachable"
    apt-get install -y -q "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi
for program in /usr/bin/chromium /usr/bin/chromedriver; do
    [ -x "$program" ] || die "$program is missing after the install"
done
say "$(/usr/bin/chromedriver --version | head -1)"
