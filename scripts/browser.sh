#!/usr/bin/env bash
# Installs what the KI-Hub's real-browser tests use, where it can: Chromium and its chromedriver
# (root + apt-get) and axe-core (npm, into ~/.cache/kifabrik/npm) for the accessibility checks.
# Where something is missing, those tests skip with the reason; this script never fails the build.
set -u
# 4.14.1: the axe-core the accessibility tests were written against (its rule set changes between minors).
AXE_VERSION=4.14.1
NPM_PREFIX="${HOME}/.cache/kifabrik/npm"
AXE="${NPM_PREFIX}/node_modules/axe-core/axe.min.js"
have_chromium() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

said=""
if ! have_chromium; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null; then
      said="installed chromium and chromium-driver (apt-get)"
    else
      said="could not install chromium/chromium-driver"
    fi
  else
    said="chromium or chromedriver missing and no root/apt-get: install chromium chromium-driver"
  fi
else
  said="chromium and chromedriver present"
fi

if [ -f "$AXE" ]; then
  said="$said; axe-core present"
elif command -v npm >/dev/null 2>&1; then
  if npm install --silent --no-audit --no-fund --prefix "$NPM_PREFIX" "axe-core@${AXE_VERSION}" >/dev/null 2>&1 && [ -f "$AXE" ]; then
    said="$said; installed axe-core ${AXE_VERSION} (npm)"
  else
    said="$said; could not install axe-core ${AXE_VERSION} with npm"
  fi
else
  said="$said; axe-core missing and no npm"
fi
echo "browser: $said; tests without them are skipped with the reason"
exit 0
