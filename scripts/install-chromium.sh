#!/usr/bin/env bash
# Install Debian's Chromium for web egress (idempotent). Playwright drives it through
# executable_path; no browser is ever downloaded by a test tool.
set -euo pipefail
if [[ -x /usr/bin/chromium ]] && /usr/bin/chromium --version >/dev/null 2>&1; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null)"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
/usr/bin/chromium --version
