#!/usr/bin/env bash
# Headless Chromium for the web console's browser tests (tests/browser).
#
#   scripts/chromium.sh install   install Debian's chromium and chromium-driver when missing (root + apt-get)
#   scripts/chromium.sh check     exit 0 when both binaries are present, else say what to run
#
# The tests drive /usr/bin/chromium through /usr/bin/chromedriver, never a driver selenium downloads,
# so both must come from the same Debian packages (their versions match).
set -euo pipefail

browser=/usr/bin/chromium
driver=/usr/bin/chromedriver
cmd="${1:-install}"

die() { echo "chromium.sh: $*" >&2; exit 1; }
present() { [[ -x "$browser" && -x "$driver" ]]; }

apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2
}

case "$cmd" in
    check)
        present || die "$browser or $driver is missing: run 'sudo scripts/chromium.sh install'"
        ;;
    install)
        if ! present; then
            [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 ||
                die "$browser or $driver is missing: run 'sudo scripts/chromium.sh install' \
(or apt-get install chromium chromium-driver)"
            echo "chromium.sh: installing chromium and chromium-driver with apt-get" >&2
            # The package lists are refreshed only when the first attempt fails: they are often fresh.
            if ! apt_install; then
                apt-get update -qq >&2
                apt_install
            fi
            present || die "apt-get finished but $browser or $driver is still missing"
        fi
        echo "chromium.sh: $("$browser" --version 2>/dev/null | head -n 1); $("$driver" --version | head -n 1)" >&2
        ;;
    *)
        die "usage: scripts/chromium.sh [install|check]"
        ;;
esac
