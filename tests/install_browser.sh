#!/usr/bin/env bash
# Debian's Chromium for the browser tests; never a downloaded browser build.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "could not install chromium; browser tests will skip (or fail under CI=true)"
else
  echo "chromium is missing: install Debian's package 'chromium' to run the browser tests"
fi
exit 0
