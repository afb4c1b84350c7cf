#!/usr/bin/env bash
# Install what SRT stream outputs need: Debian's libsrt (pyegress loads it with ctypes and sends
# SRT from its own process; PyAV's wheels have no SRT) and srt-tools (srt-live-transmit, the SRT
# listener the tests receive with). Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

have_libsrt() { ldconfig -p 2>/dev/null | grep -Eq 'libsrt(-gnutls|-openssl)?\.so\.1\.5 '; }

if have_libsrt && command -v srt-live-transmit >/dev/null 2>&1; then
  echo "libsrt 1.5 and srt-live-transmit are already installed"
  exit 0
fi
apt_install "libsrt 1.5 and srt-live-transmit" libsrt1.5-gnutls srt-tools
if ! have_libsrt; then
  echo "error: libsrt 1.5 is still missing" >&2
  exit 1
fi
echo "installed: libsrt 1.5; $(command -v srt-live-transmit)"
