#!/usr/bin/env bash
# Install what SRT stream outputs need: Debian's ffmpeg (built with libsrt; pyegress pipes MPEG-TS
# into it, PyAV's wheels have no SRT) and srt-tools (srt-live-transmit, the SRT listener the
# tests receive with). Idempotent.
set -euo pipefail

if command -v ffmpeg >/dev/null 2>&1 && ffmpeg -hide_banner -protocols 2>/dev/null | grep -qx ' *srt' \
   && command -v srt-live-transmit >/dev/null 2>&1; then
  echo "ffmpeg with SRT and srt-live-transmit are already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no apt-get; install ffmpeg (with libsrt) and srt-live-transmit yourself" >&2
  exit 1
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends ffmpeg srt-tools >/dev/null
if ! ffmpeg -hide_banner -protocols 2>/dev/null | grep -qx ' *srt'; then
  echo "error: this ffmpeg has no srt protocol" >&2
  exit 1
fi
echo "installed: $(ffmpeg -version | head -1); $(command -v srt-live-transmit)"
