#!/usr/bin/env bash
# Install Debian's redis-server (the Redis the worker tests start on a free loopback port; see
# src/pyegress/testing/redis_server.py). Idempotent. The system service is not used, and is not
# started by the package.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

if command -v redis-server >/dev/null 2>&1; then
  echo "redis-server is already installed: $(redis-server --version)"
  exit 0
fi
apt_install "redis-server (or set PYEGRESS_REDIS_SERVER)" redis-server
echo "installed: $(redis-server --version)"
