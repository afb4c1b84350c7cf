#!/usr/bin/env bash
# Install nginx with its RTMP and stream modules (the RTMP(S) server the tests start). Idempotent.
#
# Debian/Ubuntu: apt-get install nginx libnginx-mod-rtmp libnginx-mod-stream (plus openssl for
# the test certificate). The tests run nginx themselves on free loopback ports with their own
# config in a temp folder (see src/pyegress/testing/rtmp_server.py); the system service is not
# used, and is stopped and disabled if the package started it.
set -euo pipefail

MODULES_DIR="${PYEGRESS_NGINX_MODULES:-/usr/lib/nginx/modules}"
have() {
  command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]]
}
if have && [[ -f "$MODULES_DIR/ngx_rtmp_module.so" && -f "$MODULES_DIR/ngx_stream_module.so" ]] \
   && command -v openssl >/dev/null 2>&1; then
  echo "nginx with the rtmp and stream modules is already installed"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no apt-get; install nginx with the RTMP module yourself and set PYEGRESS_NGINX /" \
       "PYEGRESS_NGINX_MODULES" >&2
  exit 1
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# don't let the package start a system nginx on port 80 (not needed, may not be allowed)
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends nginx libnginx-mod-rtmp libnginx-mod-stream openssl
echo "installed: $(/usr/sbin/nginx -v 2>&1)"
