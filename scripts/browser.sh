#!/usr/bin/env bash
# The browser tests drive Debian's headless Chromium; install it where it is missing.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Chromium for the browser tests (Debian packages chromium, chromium-driver)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
else
  echo "Chromium is missing: install Debian's chromium and chromium-driver packages (as root)." >&2
  exit 1
fi
