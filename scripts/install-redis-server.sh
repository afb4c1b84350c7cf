#!/usr/bin/env bash
# Install Debian's redis-server (the Redis the worker tests start on a free loopback port; see
# src/pyegress/testing/redis_server.py). Idempotent. The system service is not used, and is not
# started by the package.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is already installed: $(redis-server --version)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: no apt-get; install redis-server yourself (or set PYEGRESS_REDIS_SERVER)" >&2
  exit 1
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# don't let the package start a system Redis on port 6379 (not needed, may not be allowed)
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends redis-server
echo "installed: $(redis-server --version)"
