#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver (packages chromium, chromium-driver) for the
# browser tests of `sds ui` (tests/test_ui_browser.py), unless both are already there.
# Idempotent; needs root or password-less sudo; exits non-zero (with one line) otherwise.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "install_chromium: need root (or password-less sudo) to apt-get install chromium chromium-driver" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_chromium: no apt-get here; install Chromium and ChromeDriver by hand (SDS_CHROMIUM, SDS_CHROMEDRIVER name them)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
command -v chromium >/dev/null && command -v chromedriver >/dev/null
