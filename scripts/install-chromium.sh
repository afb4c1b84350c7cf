#!/usr/bin/env bash
# Install Debian's Chromium and Xvfb for web egress and templates (idempotent). Playwright drives
# Chromium through executable_path; no browser is ever downloaded (`playwright install` is not used).
set -euo pipefail
missing=()
{ [[ -x /usr/bin/chromium ]] && /usr/bin/chromium --version >/dev/null 2>&1; } || missing+=(chromium)
command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)  # builds the sample templates
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "chromium, Xvfb and npm already installed: $(/usr/bin/chromium --version 2>/dev/null)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
/usr/bin/chromium --version
